"""Options as a reader meets them: types, help in groups, values from the environment and
from a ``--config`` file, and where each value came from.

Every option of every command can also come from ``ORDERTIMEOUT_<OPTION>`` (``--type-field``
is ``ORDERTIMEOUT_TYPE_FIELD``) and from a TOML file given with ``--config`` (or
``ORDERTIMEOUT_CONFIG``) holding the same names (``type-field = "kind"``). The command line
beats the environment, which beats the file, which beats the default: click's own order
of parameter sources, with the file loaded as the context's ``default_map``.

The output options every command shares (``output_options``) are defined here too.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import click
from click.core import ParameterSource

from ..rules.durations import DurationError, parse_duration
from ..rules.matcher import Mode
from ..outputs.rows import HumanFormatter

__all__ = [
    "Duration", "WritableFile", "OrdertimeoutGroup", "OrdertimeoutCommand", "OPTION_GROUPS",
    "EXIT_STATUS_HELP", "ENV_PREFIX", "option_group",
]

#: Environment variables for options: ENV_PREFIX + the long name in capitals.
ENV_PREFIX = "ORDERTIMEOUT_"

#: Help shows options in these groups, in this order; every option is in one (a test
#: checks), so an option added anywhere must be listed here.
OPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "Input": (
        "--follow", "--rotate-wait", "--rejects", "--strict", "--max-line-bytes", "--config",
        # simulate's and generate's input
        "--interval", "--count", "--events", "--users", "--pay-ratio", "--rate", "--disorder", "--seed",
        # kafka's input
        "--bootstrap", "--topic", "--group", "--start", "--create-topics", "--replication-factor",
        "--connect-timeout", "--session-timeout", "--request-timeout", "--security-protocol", "--sasl-mechanism",
        "--sasl-username", "--sasl-password", "--ssl-cafile", "--ssl-certfile", "--ssl-keyfile",
    ),
    "Matching": (
        "--within", "--within-by", "--deadline-field", "--remind", "--remind-before", "--match", "--key",
        "--type-field", "--create-type", "--pay-type", "--cancel-type", "--paid-late",
    ),
    "Time": ("--time-field", "--time-unit", "--processing-time", "--lateness", "--idle", "--max-future"),
    "Output": (
        "--json", "--only", "--fields", "--local-time", "--color", "--progress", "--quiet", "--verbose",
        "--stats", "--show-events", "--output", "--results-topic", "--log-format", "--metrics-addr",
        "--unhealthy-after", "--due-within",
    ),
    "State and delivery": (
        "--state", "--checkpoint-every", "--final", "--webhook", "--webhook-secret", "--exec",
        "--deliver-concurrency", "--deliver-timeout", "--deliver-max-age", "--drain-timeout", "--probe-max",
        "--dead-on", "--outbox-limit", "--retry-dead", "--kafka",
    ),
}

_GROUP_OF = {name: group for group, names in OPTION_GROUPS.items() for name in names}

EXIT_STATUS_HELP = """\b
Exit status:
  0    done
  1    the input or a sink failed: a missing or unreadable file, no usable
       line at all, a --strict stop, a full disk, dead letters waiting at
       the end, or (without --state) results never delivered
  2    usage error (a bad option, an unwritable --stats or --rejects path)
  129  stopped by SIGHUP, 130 by SIGINT (Ctrl-C), 143 by SIGTERM
  141  stdout was closed by its reader (| head)"""


def long_name(param: click.Parameter) -> str:
    """An option's long name (``--type-field``), or its first name."""
    names = [name for name in param.opts if name.startswith("--")]
    return names[0] if names else param.opts[0]


def option_group(param: click.Parameter) -> str | None:
    """The help group an option belongs to, or None if it was never given one."""
    return _GROUP_OF.get(long_name(param))


class Duration(click.ParamType):
    """A click parameter for durations like ``1s``, ``250ms``, ``1h30m`` (milliseconds)."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param, ctx) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return parse_duration(str(value), allow_zero=self.allow_zero)
        except DurationError as error:
            self.fail(str(error), param, ctx)


class WritableFile(click.ParamType):
    """A file the run will write at its end (``--stats``) or as it goes (``--rejects``),
    checked when options are read: a path that cannot be written is a usage error before
    any input is read, not a failure after hours of work."""

    name = "file"

    def convert(self, value: Any, param, ctx) -> str:
        path = os.fspath(value)
        if path == "-":
            # Not stdout, which carries the results, and not a file named "-" either.
            self.fail("'-' is no file here: give a path (/dev/stderr for the terminal)", param, ctx)
        problem = _unwritable(path)
        if problem is not None:
            self.fail(f"cannot write {path}: {problem}", param, ctx)
        return path


def _unwritable(path: str) -> str | None:
    if os.path.isdir(path):
        return "it is a directory"
    if os.path.exists(path):
        return None if os.access(path, os.W_OK) else "permission denied"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return f"no directory {folder}"
    return None if os.access(folder, os.W_OK | os.X_OK) else f"the directory {folder} is not writable"


# -- --config --------------------------------------------------------------------------


def _load_config(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """Read the ``--config`` TOML file into the context's defaults (eager: before the
    other options, so they find the file's values where a default would be)."""
    if path is None:
        return None
    import tomllib

    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", ctx, param) from None
    except tomllib.TOMLDecodeError as error:
        raise click.BadParameter(f"{path} is not valid TOML: {error}", ctx, param) from None
    except UnicodeDecodeError as error:  # TOML is UTF-8; tomllib decodes the file whole
        raise click.BadParameter(f"{path} is not valid TOML: not UTF-8 (byte {error.start + 1})", ctx, param) from None
    options = {long_name(p)[2:]: p for p in ctx.command.params if isinstance(p, click.Option)}
    # One file may serve several commands (watch, kafka, simulate): a name another command
    # takes is left to it; a name no command takes is a typo.
    others = _other_commands_options(ctx)
    defaults = {}
    for name, value in table.items():
        option = options.get(name.replace("_", "-"))
        if option is param:
            raise click.BadParameter(f"{path}: {name} = ... cannot name a further file (give one --config)", ctx, param)
        if option is None and name.replace("_", "-") not in others:
            known = ", ".join(sorted(set(options) - {"config"}))
            raise click.BadParameter(f"{path}: no option {name!r} for this command (known: {known})", ctx, param)
        if option is None:
            continue
        defaults[option.name] = _config_value(value, option, path, name, ctx, param)
        if option.multiple and not isinstance(value, list):
            defaults[option.name] = [defaults[option.name]]  # one value of a repeatable option
        elif option.multiple:
            defaults[option.name] = [_config_value(item, option, path, name, ctx, param) for item in value]
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta["ordertimeout.config"] = path
    return path


def _other_commands_options(ctx: click.Context) -> set[str]:
    """Long option names (without ``--``) of every command beside this one."""
    group = ctx.parent.command if ctx.parent is not None else None
    names = set()
    for command in getattr(group, "commands", {}).values():
        names.update(long_name(p)[2:] for p in command.params if isinstance(p, click.Option))
    return names


def _config_value(value: Any, option: click.Option, path: str, name: str, ctx, param) -> Any:
    """A TOML value as the option takes it: numbers as their text (``within = 15`` is 15 s,
    as ``--within 15`` is), lists joined with commas (``fields = ["orderId", "amount"]``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, (str, int, float)) for item in value):
        return ",".join(str(item) for item in value)
    raise click.BadParameter(f"{path}: {name} = {value!r} is not a string, number, boolean or list", ctx, param)


def config_option() -> click.Option:
    """``--config FILE``: option values from a TOML file."""
    return click.Option(
        ["--config"], type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
        callback=_load_config, envvar=ENV_PREFIX + "CONFIG", show_envvar=True,
        help="Read option values from a TOML file of the same names (within = \"15m\", "
        "type-field = \"kind\"). The command line beats the environment beats the file.",
    )


# -- commands with grouped help ----------------------------------------------------------


class OrdertimeoutCommand(click.Command):
    """A command whose help lists options in :data:`OPTION_GROUPS`, each with its
    environment variable, and which takes ``--config``."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            # Arguments are in the usage line (click 8.5 would also list them here).
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is None:
                continue
            group = option_group(param)
            if long_name(param) == "--help":
                group = "Other"
            rows.setdefault(group or "Other", []).append(record)
        for group in [*OPTION_GROUPS, "Other"]:
            if rows.get(group):
                with formatter.section(f"{group} options" if group != "Other" else "Other options"):
                    formatter.write_dl(rows[group])


def prepare_command(command: click.Command) -> click.Command:
    """Give a command grouped help, ``--config`` and an ``ORDERTIMEOUT_<OPTION>`` variable
    for every option (a command built with plain ``click.command`` too)."""
    if type(command) is click.Command:
        command.__class__ = OrdertimeoutCommand  # same fields, only the help differs
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None:
            param.envvar = ENV_PREFIX + long_name(param)[2:].upper().replace("-", "_")
            param.show_envvar = True
        if type(param) is click.Option:
            param.__class__ = _SourcedOption  # same fields, only its error hint differs
    if not any(long_name(param) == "--config" for param in command.params if isinstance(param, click.Option)):
        command.params.append(config_option())
    return command


class _SourcedOption(click.Option):
    """An option whose bad value is reported with where it came from: click names the
    environment variable whatever the source, which sent people hunting for a variable
    they never set when the value was in the ``--config`` file."""

    def get_error_hint(self, ctx: click.Context | None) -> str:
        hint = click.Parameter.get_error_hint(self, ctx)
        source = ctx.get_parameter_source(self.name) if ctx is not None and self.name else None
        if source is ParameterSource.ENVIRONMENT:
            hint += f" (env var: '{_envvar_used(self)}')"
        elif source is ParameterSource.DEFAULT_MAP:
            hint += f" (config {ctx.meta.get('ordertimeout.config') or 'file'})"
        return hint


class OrdertimeoutGroup(click.Group):
    """The ``ordertimeout`` group: each command added is prepared by :func:`prepare_command`."""

    command_class = OrdertimeoutCommand

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        super().add_command(prepare_command(cmd), name)


def _envvar_used(param: click.Option) -> str:
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    return next((name for name in names if os.environ.get(name)), names[0] if names else "")


def apply(options: list[Callable]) -> Callable[[Callable], Callable]:
    """One decorator applying ``options`` in the order listed."""
    def decorate(function: Callable) -> Callable:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


# -- --max-future (watch, kafka) ---------------------------------------------------------


class FutureLimit(Duration):
    """``--max-future``: a duration (0 allowed), or ``off`` (None)."""

    name, none_text = "duration|off", "off"

    def convert(self, value: Any, param, ctx) -> int | None:
        if value is None or isinstance(value, int) or str(value).strip().lower() == "off":
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        try:
            return parse_duration(str(value), allow_zero=True)
        except DurationError as error:
            self.fail(f"{error}, or off", param, ctx)


max_future_option = click.option(
    "--max-future", type=FutureLimit(), default="5m", show_default=True,
    help="Event time: an event stamped more than this ahead of the wall clock is rejected (\"from the "
    "future\") and never moves the watermark; off for replaying streams stamped ahead of this clock.",
)


# -- the output options every command shares ------------------------------------------

def _fields(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple):
        return value
    return tuple(name.strip() for name in str(value).split(",") if name.strip())


output_options = apply(
    [
        click.option(
            "--match", "match_mode", type=click.Choice([mode.value for mode in Mode]),
            default=Mode.EACH.value, show_default=True,
            help="each: every create gets one result; next: Flink .next() (other events discard "
            "the open create); followed-by: Flink .followedBy() (a pay completes every open create).",
        ),
        click.option(
            "--paid-late", type=Duration(), default=None,
            help="Remember a timed-out order this long; a pay arriving after its deadline then gives a "
            "paid_late result (so a reminder already sent can be withdrawn).",
        ),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per result per line, for jq and programs."),
        click.option(
            "--only", type=click.Choice(["success", "timeout", "cancelled", "paid_late", "reminder"]),
            help="Print (and deliver, with --webhook/--exec) one kind of result only (statistics still count all).",
        ),
        click.option(
            "--fields", default=",".join(HumanFormatter.DEFAULT_FIELDS), show_default=True, metavar="NAMES",
            help="Fields of the order shown in each row when its events have them, comma-separated; "
            "dotted paths reach nested fields; empty for none.",
        ),
        click.option("--local-time", is_flag=True, help="Rows in this machine's time zone instead of UTC."),
        click.option(
            "--stats", "stats_path", type=WritableFile(),
            help="At exit, write the run's counters as a JSON object to FILE.",
        ),
        click.option(
            "--progress/--no-progress", default=None,
            help="The live status line on stderr. Default: on when stderr is a terminal, unless the command typed there reads events typed there or writes to a pipe.",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No status line and no summary on stderr."),
        click.option(
            "--verbose", "-v", is_flag=True,
            help="The summary also lists every option's value and where it came from "
            "(command line, environment, config file or default).",
        ),
        click.option(
            "--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
            help="Colour for people: auto colours a terminal only, and never with NO_COLOR set.",
        ),
    ]
)

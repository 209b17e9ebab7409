"""The command line: validate options, build the pipeline, run it, report. Nothing else.

One module per command; the shared option groups and the run/report machinery are in
:mod:`.common`.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from .options import EXIT_STATUS_HELP, OrdertimeoutGroup, prepare_command


class _Main(OrdertimeoutGroup):
    """The command group; with ``--log-format json`` its errors are JSON lines too."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            if ctx.meta.get("ordertimeout.log_format") != "json":
                raise
            from ..observe.logs import Log

            Log(sys.stderr, "json").error(error.format_message(), exit_status=error.exit_code)
            raise click.exceptions.Exit(error.exit_code) from None


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_STATUS_HELP)
@click.version_option(__version__, prog_name="ordertimeout")
def main() -> None:
    """Find orders that were created and not paid within a time limit.

    \b
    Examples:
      ordertimeout simulate
      cat events.jsonl | ordertimeout watch --within 1s
      ordertimeout watch events.jsonl --json | jq 'select(.result == "timeout")'

    Every option can also come from the environment (ORDERTIMEOUT_WITHIN=15m) or from a
    TOML file given with --config; the command line beats the environment beats the file.

    \b
    Shell completion (bash): eval "$(_ORDERTIMEOUT_COMPLETE=bash_source ordertimeout)"
    """


class _Commands(dict):
    """``main.commands``, each command's module imported when the command is first looked
    up: ``ordertimeout --version`` or ``watch`` then never pays for the others (kafka,
    generate, outbox...). Names are known without importing; iterating values or items
    imports them all, as ``--help`` of the group does to show each one's summary."""

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self._names = names

    def _load(self, name: str) -> None:
        if name in self._names and not dict.__contains__(self, name):
            # __import__, not importlib.import_module: `python -X importtime` sees only the former.
            command = getattr(__import__(f"{__name__}.{name}", fromlist=[name]), name)
            dict.__setitem__(self, name, prepare_command(command))

    def __getitem__(self, name: str) -> click.Command:
        self._load(name)
        return dict.__getitem__(self, name)

    def get(self, name: str, default=None):
        self._load(name)
        return dict.get(self, name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._names or dict.__contains__(self, name)

    def keys(self):
        return list(dict.fromkeys([*self._names, *dict.keys(self)]))

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def values(self):
        return [self[name] for name in self.keys()]

    def items(self):
        return [(name, self[name]) for name in self.keys()]


# Each command is defined apart, in the module of its name.
main.commands = _Commands(("simulate", "watch", "kafka", "generate", "outbox", "pending"))

__all__ = ["main", "entry"]


def entry() -> None:
    """The console script and ``python -m ordertimeout``: :func:`main`, after one precaution.

    A ``--webhook-secret`` typed on the command line would stay readable by every user of
    the machine in the process title (``/proc/PID/cmdline``, ``ps``). So the process first
    starts itself again with the secret moved into its environment, which only its owner
    can read; the command line still wins over an environment value, as it always does.
    """
    if not any(arg.startswith("--webhook-secret") for arg in sys.argv[1:]):
        main(prog_name="ordertimeout")  # (a cheap test first: most runs need no notify options)
        return
    from .notify_options import MOVED_MARKER, SECRET_ENVIRONMENT, secret_out_of_argv

    moved = secret_out_of_argv(sys.argv[1:])
    if moved is not None:
        rest, secret = moved
        os.environ[SECRET_ENVIRONMENT] = secret
        os.environ[MOVED_MARKER] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "ordertimeout", *rest])
    main(prog_name="ordertimeout")  # not "python -m ordertimeout", which the re-exec above runs

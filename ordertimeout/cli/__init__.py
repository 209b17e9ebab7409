"""The command line: validate options, build the pipeline, run it, report. Nothing else.

One module per command; the shared option groups and the run/report machinery are in
:mod:`.common`.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from ..observe.logs import Log
from .options import EXIT_STATUS_HELP, OrdertimeoutGroup


class _Main(OrdertimeoutGroup):
    """The command group; with ``--log-format json`` its errors are JSON lines too."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as error:
            if ctx.meta.get("ordertimeout.log_format") != "json":
                raise
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


from . import generate, kafka, outbox, pending, simulate, watch  # noqa: E402  (each command, defined apart)

for _command in (simulate.simulate, watch.watch, kafka.kafka, generate.generate, outbox.outbox, pending.pending):
    main.add_command(_command)

__all__ = ["main", "entry"]


def entry() -> None:
    """The console script and ``python -m ordertimeout``: :func:`main`, after one precaution.

    A ``--webhook-secret`` typed on the command line would stay readable by every user of
    the machine in the process title (``/proc/PID/cmdline``, ``ps``). So the process first
    starts itself again with the secret moved into its environment, which only its owner
    can read; the command line still wins over an environment value, as it always does.
    """
    from .notify_options import MOVED_MARKER, SECRET_ENVIRONMENT, secret_out_of_argv

    moved = secret_out_of_argv(sys.argv[1:])
    if moved is not None:
        rest, secret = moved
        os.environ[SECRET_ENVIRONMENT] = secret
        os.environ[MOVED_MARKER] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "ordertimeout", *rest])
    main()

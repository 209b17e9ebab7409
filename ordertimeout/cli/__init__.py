"""The command line: validate options, build the pipeline, run it, report. Nothing else.

One module per command; the shared option groups and the run/report machinery are in
:mod:`.common`.
"""

from __future__ import annotations

import click

from .. import __version__
from .options import EXIT_STATUS_HELP, OrdertimeoutGroup


@click.group(cls=OrdertimeoutGroup, context_settings={"help_option_names": ["-h", "--help"]},
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


from . import generate, simulate, watch  # noqa: E402,F401  (the commands register on main)

__all__ = ["main"]

"""`ordertimeout simulate`: the built-in demo."""

from __future__ import annotations

import sys

import click

from ..outputs import terminal
from ..rules.events import EventSchema
from ..rules.pipeline import TimeMode
from ..inputs.simulator import cycle_events
from ..outputs.rows import HumanFormatter
from .metrics_options import metrics_options
from .notify_options import notify_options
from .build import _build
from .common import Duration, _execute
from .options import output_options
from .deadline_options import deadline_options, deadlines_from, within_option
from .options import EXIT_STATUS_HELP

SIMULATE_EXAMPLES = """\b
Examples:
  ordertimeout simulate --show-events
  ordertimeout simulate --within 1s          # the original demo: every pay is too late
  ordertimeout simulate --count 30 --interval 20ms --within 30ms --json

"""


@click.command(epilog=SIMULATE_EXAMPLES + EXIT_STATUS_HELP)
@within_option("1.5s", "The time limit to pay; --within 1s reproduces the original demo.")
@deadline_options
@click.option("--interval", type=Duration(), default="1s", show_default=True, help="Time between simulated events.")
@click.option("--count", type=click.IntRange(min=0), default=None, help="Stop after N events (default: run forever).")
@click.option("--show-events", is_flag=True, help="Print the simulated input events, dimmed, between the results.")
@output_options
@metrics_options
@notify_options
def simulate(interval, count, show_events, **params) -> None:
    """Run the built-in demo: user 1 creates and never pays, user 2 creates and pays.

    One event every --interval, matched in event time as it happens.
    """
    deadlines = deadlines_from(params, False)
    run = _build(params, EventSchema(**deadlines.schema_fields()), TimeMode.EVENT, deadlines=deadlines)
    show_event = None
    if show_events:
        formatter = HumanFormatter(deadlines.plain_window, terminal.painter(sys.stdout, params["color"]),
                                   local_time=params["local_time"])
        show_event = lambda time, raw: run.out.write(  # noqa: E731
            b'{"event":%b}\n' % raw if params["as_json"] else formatter.format_event(time, raw)
        )

    async def simulation() -> None:
        start = run.runtime.clock.now_ms()
        await run.runtime.simulate(cycle_events(start, interval, count), show_event)

    _execute(run, simulation)


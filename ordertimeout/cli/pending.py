"""`ordertimeout pending STATE`: the open orders of a state file, soonest deadline first."""

from __future__ import annotations

import sys
import time

import click
import orjson

from ..errors import StateError
from ..outputs.rows import format_time
from ..rules.durations import format_duration
from .options import Duration

PENDING_EXAMPLES = """\b
Examples:
  ordertimeout pending orders.db
  ordertimeout pending orders.db --due-within 10m
  ordertimeout pending orders.db --key u42 --json | jq .
"""


@click.command(epilog=PENDING_EXAMPLES)
@click.argument("state_path", metavar="STATE", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per open order, then one with the counts by window.")
@click.option("--key", default=None, help="Only the open orders of this key.")
@click.option("--due-within", type=Duration(allow_zero=True), default=None, metavar="D",
              help="Only orders whose deadline or next reminder comes within D.")
def pending(state_path, as_json, key, due_within) -> None:
    """List the open orders of a --state file from its last checkpoint: deadline, time
    left, next reminder, soonest deadline first; a count by window on stderr.

    Read-only: the file is never written, and a watch may keep using it. Time left is
    counted from now in processing time, and from the time the run had reached (its last
    event) in event time.
    """
    # Here, not at the top: every command's start-up would pay for them.
    from ..rules.timeline import reminder_offsets
    from ..state.reading import read_open_orders

    try:
        saved = read_open_orders(state_path, key)
    except StateError as error:
        raise click.ClickException(str(error)) from None
    wall = time.time_ns() // 1_000_000
    now = wall if saved.time_mode != "event" or saved.now is None else saved.now
    out = sys.stdout.buffer
    by_window: dict[str, int] = {}
    shown = 0
    for order in saved.orders:
        deadline = order.deadline if order.deadline is not None else order.created + saved.within
        window = deadline - order.created
        dues = [order.created + offset for offset in reminder_offsets(window, saved.remind, saved.remind_before)]
        stage, due = next(((rank, due) for rank, due in enumerate(dues, 1) if due > now), (None, None))
        soonest = min(deadline, due) if due is not None else deadline
        if due_within is not None and soonest - now > due_within:
            continue
        shown += 1
        window_text = format_duration(window)
        by_window[window_text] = by_window.get(window_text, 0) + 1
        if as_json:
            record = {"key": order.key, "created": order.created, "deadline": deadline, "left_ms": deadline - now,
                      "window_ms": window, "next_reminder": due, "stage": stage, "create": orjson.Fragment(order.raw)}
            out.write(orjson.dumps(record) + b"\n")
            continue
        left = deadline - now
        left_text = f"{format_duration(left)} left" if left > 0 else "due now"
        reminder = f"reminder {stage} in {format_duration(due - now)}" if due is not None else "no reminder"
        shown_key = order.key if order.key.isprintable() else ascii(order.key)
        row = f"{format_time(deadline)}  {shown_key:<10}  {left_text:<14}  {reminder:<22}  window {window_text}"
        out.write(row.encode("utf-8", "backslashreplace") + b"\n")
    summary = {"count": shown, "by_window": by_window, "as_of": now}
    if as_json:
        out.write(orjson.dumps(summary) + b"\n")
    out.flush()
    if not as_json:
        windows = ", ".join(f"{window}: {count:,}" for window, count in sorted(by_window.items(), key=lambda item: -item[1]))
        click.echo(f"ordertimeout: {shown:,} open as of {format_time(now)}" + (f" ({windows})" if windows else ""), err=True)

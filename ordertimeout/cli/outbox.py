"""`ordertimeout outbox STATE`: what waits for delivery in a state file, and dead letters back."""

from __future__ import annotations

import sys
import time

import click
import orjson

from ..notify.outbox import OutboxError
from ..notify.outbox_file import read_rows, retry_dead
from ..outputs.rows import format_time


OUTBOX_EXAMPLES = """\b
Examples:
  ordertimeout outbox orders.db
  ordertimeout outbox orders.db --json | jq -c 'select(.state == "dead")'
  ordertimeout outbox orders.db --retry-dead     # after the endpoint is fixed
"""


@click.command(epilog=OUTBOX_EXAMPLES)
@click.argument("state_path", metavar="STATE", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row, for jq and programs.")
@click.option("--retry-dead", is_flag=True,
              help="Move every dead letter back to pending, to be delivered by the next run (after the "
              "endpoint is fixed).")
def outbox(state_path, as_json, **options) -> None:
    """List the results waiting for delivery (pending) and given up (dead) in a --state file.

    Stop the watch using the file first: a running ordertimeout holds it locked.
    """
    try:
        if options["retry_dead"]:
            moved = retry_dead(state_path, time.time_ns() // 1_000_000)
            click.echo(f"ordertimeout: {moved:,} dead letters moved back to pending", err=True)
            return
        rows = read_rows(state_path)
    except OutboxError as error:
        raise click.ClickException(str(error)) from None
    out = sys.stdout.buffer
    for entry in rows:
        if as_json:
            record = {"state": "dead" if entry.dead else "pending", "sink": entry.sink, "id": entry.id,
                      "key": entry.key, "decided": entry.enqueued, "attempts": entry.attempts,
                      "next_attempt": None if entry.dead else entry.next_attempt, "last_error": entry.last_error,
                      "result": orjson.loads(entry.body)}
            out.write(orjson.dumps(record) + b"\n")
        else:
            state = "dead   " if entry.dead else "pending"
            when = "" if entry.dead else f"next {format_time(entry.next_attempt)}"
            row = "  ".join((state, f"{entry.sink:<7}", entry.id, f"attempts {entry.attempts}", when, entry.last_error))
            out.write(row.rstrip().encode("utf-8", "backslashreplace") + b"\n")
    out.flush()
    pending = sum(not entry.dead for entry in rows)
    click.echo(f"ordertimeout: {pending:,} pending, {len(rows) - pending:,} dead", err=True)

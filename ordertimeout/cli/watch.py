"""`ordertimeout watch`: order events from files or stdin."""

from __future__ import annotations

import errno
import gc
import math
import os
import stat
import sys
import time

import click

from ..rules.clocks import LoopClock
from ..rules.events import TIME_UNITS, EventSchema
from ..rules.pipeline import TimeMode
from ..hosts.runtime import MAX_LINE_BYTES
from ..inputs.hints import late_hint, processing_time_hint, time_unit_hint
from ..inputs.sources import ChunkReader, Input, is_gzip, resume_inputs
from ..state.store import StateError, StateStore
from .build import _build, check_event_options, stdin_hint
from .common import Duration, WritableFile, _execute, _Run
from .options import max_future_option, output_options
from .deadline_options import deadline_options, deadlines_from, within_option
from .metrics_options import context_log, metrics_options
from .options import EXIT_STATUS_HELP
from .notify_options import notify_options

WATCH_EXAMPLES = """\b
Examples:
  # the walk-through: a finished file, rows for people
  ordertimeout watch sample_data/orders.jsonl --within 15m
  # timeouts only, as JSON for jq
  ordertimeout watch events.jsonl.gz --within 15m --json --only timeout | jq -c .
  # other field names, found in the events themselves
  ordertimeout watch events.jsonl --key user_id --type-field kind --time-field at
  # a service: follow a log, keep state across restarts, settings from a file
  ordertimeout watch --follow /var/log/shop/events.jsonl --config /etc/ordertimeout.toml \\
      --state /var/lib/ordertimeout/orders.db --idle 30s
  # live input without event times: each timeout printed when its deadline comes
  producer | ordertimeout watch --processing-time --within 30s

"""


@click.command(epilog=WATCH_EXAMPLES + EXIT_STATUS_HELP)
# readable=False: _inputs reports an unreadable file as it reports a missing one (exit 1).
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True, readable=False))
@within_option("1s", "The time limit to pay: 250ms, 1.5s, 15m, 1h30m, 2d.")
@deadline_options
@output_options
@metrics_options
@notify_options
@click.option("--key", "key_field", default="userId", show_default=True, help="Field that groups events (the customer); dotted paths reach nested fields.")
@click.option("--type-field", default="type", show_default=True, help="Field holding the event type.")
@click.option("--create-type", default="create", show_default=True, help="Type value of an order creation.")
@click.option("--pay-type", default="pay", show_default=True, help="Type value of a payment.")
@click.option("--cancel-type", default=None, help="Type value of a cancellation (with --match each): it closes the oldest open order as cancelled.")
@click.option("--time-field", default="ts", show_default=True, help="Field holding the event time; dotted paths allowed.")
@click.option("--time-unit", type=click.Choice(list(TIME_UNITS)), default="ms", show_default=True, help="Unit of numeric times (ISO-8601 strings are read too).")
@click.option("--processing-time", is_flag=True, help="Use the arrival time even when events carry a time field.")
@click.option("--lateness", type=Duration(allow_zero=True), default="0", show_default=True, help="Bounded out-of-orderness in event time.")
@click.option("--idle", type=Duration(), default=None, help="Event time: once the input is read to its end, the watermark also follows the wall clock, this far behind it, so open orders time out on a quiet stream (this long after their deadline) and a live event less than this old is never late.")
@max_future_option
@click.option("--follow", "-f", is_flag=True, help="Keep reading lines appended to FILE, like tail -F (survives rotation and truncation; not for .gz).")
@click.option("--rotate-wait", type=Duration(allow_zero=True), default="5s", show_default=True, help="With --follow: after a rotation, read on the renamed file (its writer may not have reopened yet) until it has been quiet this long; also after a restart.")
@click.option("--rejects", "rejects_path", type=WritableFile(), help="Append every unused line (malformed, late) to FILE as JSON.")
@click.option("--strict", is_flag=True, help="Stop at the first rejected line with exit status 1.")
@click.option("--max-line-bytes", type=click.IntRange(min=1), default=MAX_LINE_BYTES, show_default=True, help="Longer lines are rejected without being loaded.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), help="SQLite file keeping open orders, watermark, counters and file offsets across restarts.")
@click.option("--checkpoint-every", type=Duration(), default="1s", show_default=True, help="Longest time between two checkpoints of --state.")
@click.option("--final", is_flag=True, help="With --state: this run ends the input, so time out every order still open at its end (without it, they stay pending for the next run).")
def watch(files, key_field, type_field, create_type, pay_type, cancel_type, time_field, time_unit,
          processing_time, lateness, idle, follow, rotate_wait, rejects_path, strict, max_line_bytes, state_path,
          checkpoint_every, final, **params) -> None:
    """Match order events read as JSON lines from FILES (or stdin) and print results.

    FILES may be gzip-compressed (.gz). Each result is one row (or one JSON line with
    --json) on stdout; warnings, the live status line and the summary go to stderr.
    """
    check_event_options(match_mode=params["match_mode"], create_type=create_type, pay_type=pay_type,
                        cancel_type=cancel_type, processing_time=processing_time, idle=idle, lateness=lateness)
    if follow and (len(files) != 1 or files[0] == "-"):
        raise click.UsageError("--follow needs exactly one FILE (not stdin)")
    if final and state_path is None:
        raise click.UsageError("--final is for runs with --state (without it every run is final)")
    if follow and is_gzip(files[0]):
        raise click.UsageError(f"--follow cannot follow {files[0]}: a compressed file does not grow line by line")
    deadlines = deadlines_from(params, processing_time)
    inputs = _inputs(files, follow)
    stdin_hint(inputs)
    schema = EventSchema(
        key_field=key_field, type_field=type_field, time_field=time_field, create_type=create_type,
        pay_type=pay_type, cancel_type=cancel_type, time_unit=time_unit, **deadlines.schema_fields(),
    )
    # A deadline field is an event time: a stream without times is not guessed to be live.
    time_mode = TimeMode.PROCESSING if processing_time else TimeMode.EVENT if deadlines.deadline_field else None
    run = _build(
        params, schema, time_mode, deadlines=deadlines, rejects_path=rejects_path,
        # Following, a rotation brings a second file (its rest is read under its own name).
        strict=strict, show_source=len(inputs) > 1 or follow, lateness=lateness, idle=idle,
        max_line_bytes=max_line_bytes, stdin=sys.stdin, reads_stdin=any(source.path is None for source in inputs),
    )
    if state_path is not None:
        inputs = _restore(run, state_path, schema, params, lateness, inputs, checkpoint_every, rotate_wait,
                          deadlines.config())
        run.runtime.final = final
    run.reader = ChunkReader(inputs, rotate_wait_ms=rotate_wait)
    # This run's own counts (a --state run starts from the earlier runs' counters).
    before = (run.pipeline.events, run.pipeline.late)
    run.runtime.on_input_end = lambda: _hint_at_end(run, schema, processing_time, before)
    _execute(run, lambda: run.runtime.watch(run.reader))


def _restore(run: _Run, path: str, schema: EventSchema, params: dict, lateness: int,
             inputs: list[Input], checkpoint_every: int, rotate_wait: int, windows: dict) -> list[Input]:
    """Open ``--state``, continue from its checkpoint, and checkpoint this run into it.
    ``windows``: the per-order window settings that give the state its meaning too."""
    config = {
        "key": schema.key_field, "type_field": schema.type_field, "create_type": schema.create_type,
        "pay_type": schema.pay_type, "cancel_type": schema.cancel_type, "within_ms": run.within,
        "match": params["match_mode"], "lateness_ms": lateness, "paid_late_ms": params["paid_late"], **windows,
    }
    store = StateStore(path, config)
    try:
        checkpoint = store.open()
    except StateError as error:
        raise click.ClickException(str(error)) from None
    run.state = store
    runtime = run.runtime
    runtime.checkpointer, runtime.checkpoint_every = store.save, checkpoint_every
    if checkpoint is None:
        return inputs
    # A restore makes an object per open order, all living on: collections meanwhile would
    # walk them again and again for nothing (half a restore's time at a million orders).
    # Start-up freezes them once it is over.
    gc.disable()
    try:
        run.pipeline.restore(checkpoint["pipeline"])
    finally:
        gc.enable()
    # Time never runs backwards across a restart, even if the system clock was stepped back.
    restored_now = run.pipeline.matcher.now
    if run.pipeline.time_mode is TimeMode.PROCESSING and math.isfinite(restored_now):
        runtime.clock = LoopClock(max(time.time_ns() // 1_000_000, int(restored_now)))
    resumed, positions, notices = resume_inputs(checkpoint["offsets"], inputs, rotate_wait)
    for notice in notices:
        _notice(notice)
    runtime.positions.update(positions)
    return resumed


def _hint_at_end(run: _Run, schema: EventSchema, asked_for_processing_time: bool, before: tuple[int, int]) -> None:
    """The input has ended: warn about what looks like a mistake (see inputs.hints), once.
    ``before``: the events and late events counted before this run."""
    pipeline = run.pipeline
    events, late = pipeline.events - before[0], pipeline.late - before[1]
    hints = [time_unit_hint(pipeline.first_event, schema.time_field, schema.time_unit)
             if pipeline.time_mode is TimeMode.EVENT else None,
             late_hint(events, late, pipeline.late_by, pipeline.lateness, pipeline.idle)]
    if pipeline.time_mode is TimeMode.PROCESSING and not asked_for_processing_time:
        hints.insert(0, processing_time_hint(pipeline.first_event, schema.time_field))
    for hint in hints:
        if hint is not None:
            run.monitor.log.warning(hint)


def _notice(text: str) -> None:
    context_log().info(text)


def _inputs(files: tuple[str, ...], follow: bool) -> list[Input]:
    """The inputs to read, checked up front so a typo fails before any output."""
    inputs = []
    for path in files or ("-",):
        if path == "-":
            inputs.append(Input("<stdin>", stream=sys.stdin.buffer))
            continue
        try:
            _check_readable(path)
        except FileNotFoundError as error:
            if not follow:
                raise click.ClickException(f"cannot open {path}: {error.strerror}") from None
            _notice(f"waiting for {path} to appear")  # as tail -F does
        except OSError as error:
            raise click.ClickException(f"cannot open {path}: {error.strerror}") from None
        if os.path.isdir(path):
            raise click.ClickException(f"cannot read {path}: it is a directory")
        inputs.append(Input(path, path=path, follow=follow))
    return inputs


def _check_readable(path: str) -> None:
    """Raise the ``OSError`` that reading ``path`` would meet. A named pipe is not opened
    to check it: that would wait for a writer, and closing it again would throw away
    what a waiting writer had already written."""
    if stat.S_ISFIFO(os.stat(path).st_mode):
        if not os.access(path, os.R_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return
    os.close(os.open(path, os.O_RDONLY))

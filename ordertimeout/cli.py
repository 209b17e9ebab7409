"""The command line: validate options, build the pipeline, run it, report. Nothing else.

Library errors become ``click`` errors here: usage mistakes exit 2, run failures print
``Error: ...`` and exit 1, a reader that leaves (``| head``) ends the run quietly, and a
signal ends it in order with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import click
import orjson

from . import __version__
from .clocks import LoopClock
from .durations import DurationError, parse_duration
from .events import TIME_UNITS, EventParser, EventSchema
from .matcher import Matcher, Mode
from .pipeline import Pipeline, TimeMode
from .runtime import MAX_LINE_BYTES, Runtime, StrictStop
from .simulator import cycle_events, generate_traffic
from .sinks import HumanFormatter, JsonFormatter, OutputBuffer, RejectReporter, ResultWriter, SinkError
from .sources import ChunkReader, Input, SourceError
from .state import StateError, StateStore
from . import terminal

#: How often the live status line is redrawn, in seconds.
STATUS_REFRESH_SECONDS = 0.25


class Duration(click.ParamType):
    """A click parameter for durations like ``1s``, ``250ms``, ``1h30m`` (milliseconds)."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param, ctx) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value), allow_zero=self.allow_zero)
        except DurationError as error:
            self.fail(str(error), param, ctx)


def _apply(options: list[Callable]) -> Callable[[Callable], Callable]:
    def decorate(function: Callable) -> Callable:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


_output_options = _apply(
    [
        click.option(
            "--match", "match_mode", type=click.Choice([mode.value for mode in Mode]),
            default=Mode.EACH.value, show_default=True,
            help="each: every create gets one result; next: Flink .next() (other events discard "
            "the open create); followed-by: Flink .followedBy() (a pay completes every open create). "
            "Example: --match next",
        ),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per result per line. Example: --json | jq -c 'select(.result==\"timeout\")'"),
        click.option(
            "--only", type=click.Choice(["success", "timeout", "cancelled"]),
            help="Print one kind of result only (statistics still count all). Example: --only timeout",
        ),
        click.option(
            "--stats", "stats_path", type=click.Path(dir_okay=False),
            help="At exit, write the run's counters as a JSON object to FILE. Example: --stats stats.json",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No status line and no summary on stderr. Example: -q"),
        click.option(
            "--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
            help="Colour for people: auto colours a terminal only, and never with NO_COLOR set. Example: --color never",
        ),
    ]
)


@dataclass
class _Run:
    """One command run: what it drives and what it reports at its end."""

    pipeline: Pipeline
    runtime: Runtime
    out: OutputBuffer
    writer: ResultWriter
    within: int
    stats_path: str | None
    quiet: bool
    color: str
    extra_stats: dict = field(default_factory=dict)
    stop_signal: int | None = None
    reader: ChunkReader | None = None
    state: StateStore | None = None


def _build(params: dict, schema: EventSchema, time_mode: TimeMode | None, *, rejects_path=None,
           strict=False, show_source=False, lateness=0, idle=None, max_line_bytes=MAX_LINE_BYTES) -> _Run:
    """The pipeline, runtime and sinks for one run, from the command's options."""
    within, color = params["within"], params["color"]
    out = OutputBuffer(sys.stdout.buffer)
    formatter = JsonFormatter() if params["as_json"] else HumanFormatter(within, terminal.painter(sys.stdout, color))
    rejects = None
    if rejects_path is not None:
        try:
            rejects = open(rejects_path, "ab")
        except OSError as error:
            raise click.ClickException(f"cannot open {rejects_path}: {error.strerror}") from None
    reporter = RejectReporter(sys.stderr, rejects, show_source=show_source, rejects_name=rejects_path or "")
    pipeline = Pipeline(
        EventParser(schema), Matcher(within, params["match_mode"]), time_mode=time_mode, lateness=lateness, idle=idle
    )
    writer = ResultWriter(out, formatter, params["only"])
    runtime = Runtime(pipeline, LoopClock(), writer, reporter, strict=strict, max_line_bytes=max_line_bytes)
    return _Run(
        pipeline, runtime, out, writer, within, params["stats_path"], params["quiet"], color,
        {"within_ms": within, "match": params["match_mode"]},
    )


async def _supervise(run: _Run, main: Callable[[], Any]) -> None:
    """Run ``main`` with the status line beside it; a signal stops both in order.

    The first SIGINT or SIGTERM cancels the run, which then writes what it decided and
    reports; a second one exits at once.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    # A plain signal handler rather than loop.add_signal_handler: it also runs while the
    # loop is stuck in a blocking write to a stalled stdout, so a second Ctrl-C always works.
    def on_signal(signum: int, frame) -> None:
        if run.stop_signal is not None:
            os._exit(128 + signum)  # the second Ctrl-C: the user wants out now
        run.stop_signal = signum
        loop.call_soon_threadsafe(task.cancel)

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    status = None
    if not run.quiet and terminal.wants_status(sys.stderr):
        status = terminal.StatusLine(terminal.stderr_console(sys.stderr, run.color), _status_renderer(run))
        if sys.stdout.isatty():
            run.out.before_write, run.out.after_write = status.clear, status.draw
    # The refresher is owned here rather than by a TaskGroup so the run's own errors
    # (a closed stdout, --strict) reach the caller as themselves, not as a group.
    refresher = asyncio.create_task(_refresh(status)) if status is not None else None
    try:
        await main()
    except asyncio.CancelledError:
        if run.stop_signal is None:
            raise
        task.uncancel()
    finally:
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            status.clear()
        run.out.before_write = run.out.after_write = None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


async def _refresh(status: terminal.StatusLine) -> None:
    while True:
        status.draw()
        await asyncio.sleep(STATUS_REFRESH_SECONDS)


def _status_renderer(run: _Run) -> Callable[[], object]:
    clock = run.runtime.clock
    history: list[tuple[int, int]] = []

    def render() -> object:
        stats = run.pipeline.stats()
        now = clock.now_ms()
        history.append((now, stats["events"]))
        while len(history) > 2 and now - history[0][0] > 2000:
            history.pop(0)
        (then, before), rate = history[0], 0.0
        if now > then:
            rate = (stats["events"] - before) * 1000 / (now - then)
        watermark = None
        if run.pipeline.time_mode is TimeMode.EVENT and math.isfinite(run.pipeline.frontier):
            watermark = int(run.pipeline.frontier) - 1
        progress = run.reader.progress() if run.reader is not None else None
        return terminal.status_text(stats, rate, now, watermark, progress)

    return render


def _execute(run: _Run, main: Callable[[], Any]) -> None:
    """Run ``main`` (a coroutine function) and report, turning failures into clean exits."""
    exit_code = 0
    broken_pipe = False
    try:
        asyncio.run(_supervise(run, main))
        if run.stop_signal is not None:
            exit_code = 128 + run.stop_signal
        run.out.flush()
    except BrokenPipeError:
        broken_pipe = True
        _silence_stdout()
    except StrictStop:
        exit_code = 1
        _flush_quietly(run.out)
    except (SourceError, SinkError, StateError) as error:
        _flush_quietly(run.out)
        _finish(run, quiet=run.quiet)
        raise click.ClickException(str(error)) from None
    finally:
        if run.state is not None:
            run.state.close()
    _finish(run, quiet=run.quiet or broken_pipe)
    if exit_code:
        sys.exit(exit_code)


def _flush_quietly(out: OutputBuffer) -> None:
    try:
        out.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """After the reader of stdout left, point fd 1 at /dev/null so exit flushes stay quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (e.g. under a test runner): nothing to silence


def _finish(run: _Run, quiet: bool) -> None:
    stats = run.pipeline.stats()
    stats["elapsed_s"] = round(run.runtime.elapsed_ms / 1000, 3)
    stats.update(run.extra_stats)
    latency = terminal.latency_figures(run.writer.latencies)
    if latency:
        stats["pay_latency"] = latency
    try:
        run.runtime.reporter.close()
    except SinkError as error:
        raise click.ClickException(str(error)) from None
    if run.stats_path is not None:
        try:
            with open(run.stats_path, "wb") as handle:
                handle.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as error:
            raise click.ClickException(f"cannot write {run.stats_path}: {error.strerror}") from None
    if quiet:
        return
    if terminal.wants_status(sys.stderr):
        console = terminal.stderr_console(sys.stderr, run.color)
        console.print(terminal.summary_table(stats, run.writer.latencies, run.within))
    else:
        click.echo(terminal.summary_text(stats, run.writer.latencies), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ordertimeout")
def main() -> None:
    """Find orders that were created and not paid within a time limit.

    \b
    Examples:
      ordertimeout simulate
      cat events.jsonl | ordertimeout watch --within 1s
      ordertimeout watch events.jsonl --json | jq 'select(.result == "timeout")'

    Shell completion (bash): eval "$(_ORDERTIMEOUT_COMPLETE=bash_source ordertimeout)"
    """


@main.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--within", type=Duration(), default="1s", show_default=True, help="The time limit to pay. Example: --within 15m (also 250ms, 1.5s, 1h30m, 2d).")
@_output_options
@click.option("--key", "key_field", default="userId", show_default=True, help="Field that groups events; dotted paths reach nested fields. Example: --key order.user.id")
@click.option("--type-field", default="type", show_default=True, help="Field holding the event type. Example: --type-field event")
@click.option("--create-type", default="create", show_default=True, help="Type value of an order creation. Example: --create-type order_created")
@click.option("--pay-type", default="pay", show_default=True, help="Type value of a payment. Example: --pay-type order_paid")
@click.option("--cancel-type", default=None, help="Type value of a cancellation (with --match each): it closes the oldest open order as cancelled. Example: --cancel-type cancel")
@click.option("--time-field", default="ts", show_default=True, help="Field holding the event time; dotted paths allowed. Example: --time-field meta.ts")
@click.option("--time-unit", type=click.Choice(list(TIME_UNITS)), default="ms", show_default=True, help="Unit of numeric times (ISO-8601 strings are read too). Example: --time-unit s")
@click.option("--processing-time", is_flag=True, help="Use the arrival time even when events carry a time field. Example: --processing-time --within 30s")
@click.option("--lateness", type=Duration(allow_zero=True), default="0", show_default=True, help="Bounded out-of-orderness in event time. Example: --lateness 500ms")
@click.option("--idle", type=Duration(), default=None, help="Event time: after this much quiet wall time the watermark follows the wall clock, so open orders still time out. Example: --idle 5s")
@click.option("--follow", "-f", is_flag=True, help="Keep reading lines appended to FILE, like tail -F (survives rotation and truncation). Example: -f shop.log")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), help="Append every unused line (malformed, late) to FILE as JSON. Example: --rejects rejects.jsonl")
@click.option("--strict", is_flag=True, help="Stop at the first rejected line with exit status 1. Example: --strict")
@click.option("--max-line-bytes", type=click.IntRange(min=1), default=MAX_LINE_BYTES, show_default=True, help="Longer lines are rejected without being loaded. Example: --max-line-bytes 65536")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), help="SQLite file keeping open orders, watermark, counters and file offsets across restarts. Example: --state orders.db")
@click.option("--checkpoint-every", type=Duration(), default="1s", show_default=True, help="Longest time between two checkpoints of --state. Example: --checkpoint-every 200ms")
def watch(files, key_field, type_field, create_type, pay_type, cancel_type, time_field, time_unit,
          processing_time, lateness, idle, follow, rejects_path, strict, max_line_bytes, state_path,
          checkpoint_every, **params) -> None:
    """Match order events read as JSON lines from FILES (or stdin) and print results.

    \b
    Examples:
      cat events.jsonl | ordertimeout watch --within 1s
      ordertimeout watch sample_data/orders.jsonl --within 15m --json | jq -c 'select(.result=="timeout")'
      ordertimeout watch --follow /var/log/shop/events.jsonl --within 15m --idle 30s
    """
    if cancel_type is not None and params["match_mode"] != Mode.EACH.value:
        raise click.UsageError("--cancel-type works with --match each only (Flink's modes have no cancel)")
    if processing_time and (idle is not None or lateness):
        raise click.UsageError("--idle and --lateness are for event time; processing time has no disorder to wait for")
    if follow and (len(files) != 1 or files[0] == "-"):
        raise click.UsageError("--follow needs exactly one FILE (not stdin)")
    inputs = _inputs(files, follow)
    schema = EventSchema(
        key_field=key_field, type_field=type_field, time_field=time_field, create_type=create_type,
        pay_type=pay_type, cancel_type=cancel_type, time_unit=time_unit,
    )
    run = _build(
        params, schema, TimeMode.PROCESSING if processing_time else None, rejects_path=rejects_path,
        strict=strict, show_source=len(inputs) > 1, lateness=lateness, idle=idle, max_line_bytes=max_line_bytes,
    )
    if state_path is not None:
        inputs = _restore(run, state_path, schema, params, lateness, inputs, checkpoint_every)
    run.reader = ChunkReader(inputs)
    _execute(run, lambda: run.runtime.watch(run.reader))


def _restore(run: _Run, path: str, schema: EventSchema, params: dict, lateness: int,
             inputs: list[Input], checkpoint_every: int) -> list[Input]:
    """Open ``--state``, continue from its checkpoint, and checkpoint this run into it."""
    config = {
        "key": schema.key_field, "type_field": schema.type_field, "create_type": schema.create_type,
        "pay_type": schema.pay_type, "cancel_type": schema.cancel_type, "within_ms": params["within"],
        "match": params["match_mode"], "lateness_ms": lateness,
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
    run.pipeline.restore(checkpoint["pipeline"])
    runtime.positions.update(checkpoint["offsets"])
    # Time never runs backwards across a restart, even if the system clock was stepped back.
    restored_now = run.pipeline.matcher.now
    if run.pipeline.time_mode is TimeMode.PROCESSING and math.isfinite(restored_now):
        runtime.clock = LoopClock(max(time.time_ns() // 1_000_000, int(restored_now)))
    return [
        dataclasses.replace(source, start_offset=runtime.positions[source.name][0])
        if source.path is not None and source.name in runtime.positions else source
        for source in inputs
    ]


def _inputs(files: tuple[str, ...], follow: bool) -> list[Input]:
    """The inputs to read, checked up front so a typo fails before any output."""
    inputs = []
    for path in files or ("-",):
        if path == "-":
            inputs.append(Input("<stdin>", stream=sys.stdin.buffer))
            continue
        try:
            os.close(os.open(path, os.O_RDONLY))
        except OSError as error:
            raise click.ClickException(f"cannot open {path}: {error.strerror}") from None
        if os.path.isdir(path):
            raise click.ClickException(f"cannot read {path}: it is a directory")
        inputs.append(Input(path, path=path, follow=follow))
    return inputs


@main.command()
@click.option("--within", type=Duration(), default="1.5s", show_default=True, help="The time limit to pay; --within 1s reproduces the original demo. Example: --within 1s")
@click.option("--interval", type=Duration(), default="1s", show_default=True, help="Time between simulated events. Example: --interval 20ms")
@click.option("--count", type=click.IntRange(min=0), default=None, help="Stop after N events (default: run forever). Example: --count 30")
@click.option("--show-events", is_flag=True, help="Print the simulated input events, dimmed, between the results. Example: --show-events")
@_output_options
def simulate(interval, count, show_events, **params) -> None:
    """Run the built-in demo: user 1 creates and never pays, user 2 creates and pays.

    One event every --interval, matched in event time as it happens.

    \b
    Examples:
      ordertimeout simulate --show-events
      ordertimeout simulate --within 1s          # the original demo: every pay is too late
      ordertimeout simulate --count 30 --interval 20ms --within 30ms --json
    """
    run = _build(params, EventSchema(), TimeMode.EVENT)
    show_event = None
    if show_events:
        formatter = HumanFormatter(params["within"], terminal.painter(sys.stdout, params["color"]))
        show_event = lambda time, raw: run.out.write(  # noqa: E731
            b'{"event":%b}\n' % raw if params["as_json"] else formatter.format_event(time, raw)
        )

    async def simulation() -> None:
        start = run.runtime.clock.now_ms()
        await run.runtime.simulate(cycle_events(start, interval, count), show_event)

    _execute(run, simulation)


@main.command()
@click.option("--events", "event_count", type=click.IntRange(min=0), default=1000, show_default=True, help="Number of events to write. Example: --events 1000000")
@click.option("--users", type=click.IntRange(min=1), default=100, show_default=True, help="Number of distinct users (keys). Example: --users 100000")
@click.option("--pay-ratio", type=click.FloatRange(0, 1), default=0.7, show_default=True, help="Share of orders that get a pay (some pay too late). Example: --pay-ratio 0.5")
@click.option("--within", type=Duration(), default="1s", show_default=True, help="The window the pay delays are spread around. Example: --within 15m")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=10_000.0, show_default=True, help="Events per second of event time. Example: --rate 100")
@click.option("--disorder", type=Duration(allow_zero=True), default="0", show_default=True, help="Shuffle events within this bound (watch them with --lateness of at least as much). Example: --disorder 500ms")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: the same seed gives the same bytes. Example: --seed 42")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-", help="Write to FILE instead of stdout. Example: -o events.jsonl")
def generate(event_count, users, pay_ratio, within, rate, disorder, seed, output) -> None:
    """Write synthetic shop traffic as JSON lines, deterministic by --seed.

    Events carry userId, type, orderId, amount and ts (epoch ms), in time order
    unless --disorder is given.

    \b
    Examples:
      ordertimeout generate --events 20 --users 3 | ordertimeout watch
      ordertimeout generate --events 1000000 --users 100000 -o big.jsonl
    """
    lines = generate_traffic(
        random.Random(seed), events=event_count, users=users, pay_ratio=pay_ratio,
        within_ms=within, rate_per_s=rate, disorder_ms=disorder,
    )
    try:
        target = sys.stdout.buffer if output == "-" else open(output, "wb")
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
    out = OutputBuffer(target)
    try:
        for line in lines:
            out.write(line + b"\n")
        out.flush()
    except BrokenPipeError:
        _silence_stdout()
    finally:
        if target is not sys.stdout.buffer:
            target.close()

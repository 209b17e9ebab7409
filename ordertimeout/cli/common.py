"""Shared parts of the commands: option types and groups, building a run, running it, reporting.

Library errors become ``click`` errors here: usage mistakes exit 2, run failures print
``Error: ...`` and exit 1, a reader that leaves (``| head``) ends the run quietly, and a
signal ends it in order with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import click
import orjson

from ..clocks import LoopClock
from ..durations import DurationError, parse_duration
from ..events import EventParser, EventSchema
from ..matcher import Matcher, Mode
from ..pipeline import Pipeline, TimeMode
from ..runtime import MAX_LINE_BYTES, Runtime, StrictStop
from ..sinks import HumanFormatter, JsonFormatter, OutputBuffer, RejectReporter, ResultWriter, SinkError
from ..sources import ChunkReader, SourceError
from ..state import StateError, StateStore
from .. import terminal


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


output_options = _apply(
    [
        click.option(
            "--match", "match_mode", type=click.Choice([mode.value for mode in Mode]),
            default=Mode.EACH.value, show_default=True,
            help="each: every create gets one result; next: Flink .next() (other events discard "
            "the open create); followed-by: Flink .followedBy() (a pay completes every open create). "
            "Example: --match next",
        ),
        click.option(
            "--paid-late", type=Duration(), default=None,
            help="Remember a timed-out order this long; a pay arriving after its deadline then gives a "
            "paid_late result (so a reminder already sent can be withdrawn). Example: --paid-late 1h",
        ),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per result per line. Example: --json | jq -c 'select(.result==\"timeout\")'"),
        click.option(
            "--only", type=click.Choice(["success", "timeout", "cancelled", "paid_late"]),
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
        EventParser(schema), Matcher(within, params["match_mode"], params["paid_late"]), time_mode=time_mode, lateness=lateness, idle=idle
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
    # Start-up is over: what was imported and built so far lives as long as the process.
    # Frozen, the garbage collector's full collections stop walking it (they had stalled
    # processing-time timers for 10+ ms once the run was busy).
    gc.freeze()
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

"""Shared parts of the commands: the options every command shares, building a run, running
it, reporting.

Library errors become ``click`` errors here, with one table of exit statuses
(:data:`.options.EXIT_STATUS_HELP`, also in ``--help`` and docs/options.md): usage mistakes exit
2, run failures print one ``Error: ...`` line and exit 1, a reader that leaves
(``| head``) ends the run with 141, and a signal ends it in order with 129 (SIGHUP), 130
(SIGINT) or 143 (SIGTERM).
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

from ..rules.clocks import LoopClock
from ..rules.events import EventParser, EventSchema
from ..inputs.unusable import describe_no_orders, describe_unusable
from ..observe.health import Health, MonitorError
from ..observe.logs import Log
from ..rules.matcher import Matcher, Mode
from ..observe.monitor import Monitor, run_counters
from ..rules.pipeline import Pipeline, TimeMode
from ..hosts.runtime import MAX_LINE_BYTES, Runtime, StrictStop
from ..outputs.rows import HumanFormatter
from ..outputs.sinks import JsonFormatter, OutputBuffer, ResultWriter, SinkError
from ..inputs.sources import ChunkReader, SourceError
from ..notify.outbox import OutboxError
from ..state.store import StateError, StateStore
from ..outputs import terminal
from .metrics_options import monitor_from
from .options import Duration, WritableFile, _fields, settings_of  # noqa: F401 (Duration, WritableFile re-exported)
from .streams import StdoutError, _DiagnosingReporter, _flush_quietly, _silence_stdout, _Stdout

__all__ = ["Duration", "WritableFile", "_build", "_execute", "_Run"]

#: Signals that stop a run in order (results written, checkpoint saved, summary).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Exit status when the reader of stdout left: 128 + SIGPIPE, as the shell reports it.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE

#: How often the live status line is redrawn, in seconds.
STATUS_REFRESH_SECONDS = 0.25


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
    #: Returns a text the status line shows instead of the figures (e.g. while connecting).
    notice: Callable[[], str | None] | None = None
    #: Draw the live status line (``--progress``, or its auto rule).
    progress: bool = False
    #: stderr for warnings: lifts the status line off while it writes.
    err: Any = None
    #: ``--verbose``: (option, value, source) of every option, for the summary.
    settings: list | None = None
    #: Health, log and --metrics-addr (see metrics_options); plain text logs by default.
    monitor: Monitor = field(default_factory=lambda: Monitor(Log(sys.stderr), Health()))
    #: Delivery to --webhook / --exec (a :class:`~ordertimeout.notify.Notifier`), if asked for.
    notifier: Any = None
    #: The stop signals' handlers before the run's own (put back once stdout is done with).
    previous_handlers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.err is None:
            self.err = terminal.AboveStatus(sys.stderr)


def check_event_options(*, match_mode: str, create_type: str, pay_type: str, cancel_type: str | None,
                        processing_time: bool, idle: int | None, lateness: int) -> None:
    """Refuse the event options that contradict each other (``watch`` and ``kafka`` alike)."""
    if cancel_type is not None and match_mode != Mode.EACH.value:
        raise click.UsageError("--cancel-type works with --match each only (Flink's modes have no cancel)")
    if processing_time and (idle is not None or lateness):
        raise click.UsageError("--idle and --lateness are for event time; processing time has no disorder to wait for")
    # One value for two kinds: the parser would take every such event as the first of
    # them (a pay as a create), so the run would quietly report nothing or the wrong kind.
    named = [("--create-type", create_type), ("--pay-type", pay_type), ("--cancel-type", cancel_type)]
    for index, (option, value) in enumerate(named):
        for other, other_value in named[index + 1 :]:
            if value is not None and value == other_value:
                raise click.UsageError(f"{option} and {other} are both {value!r}: each type needs its own value")


def _build(params: dict, schema: EventSchema, time_mode: TimeMode | None, *, rejects_path=None,
           strict=False, show_source=False, lateness=0, idle=None, max_line_bytes=MAX_LINE_BYTES,
           stdin=None) -> _Run:
    """The pipeline, runtime and sinks for one run, from the command's options.

    ``stdin``: the stream the run reads, if it reads one (it decides ``--progress`` auto).
    """
    from .notify_options import build_notifier  # (that module builds on this one)

    notifier = build_notifier(params)
    within, color = params["within"], params["color"]
    if sys.stdout is None or sys.stderr is None:  # started with `>&-` or `2>&-`
        raise click.ClickException("cannot write: stdout or stderr is closed")
    out = OutputBuffer(_Stdout(sys.stdout.buffer))
    if params["as_json"]:
        formatter = JsonFormatter()
    else:
        formatter = HumanFormatter(within, terminal.painter(sys.stdout, color), _fields(params["fields"]),
                                   params["local_time"])
    rejects = None
    if rejects_path is not None:
        try:
            rejects = open(rejects_path, "ab")
        except OSError as error:
            raise click.BadParameter(f"cannot write {rejects_path}: {error.strerror}",
                                     param_hint="'--rejects'") from None
    err = terminal.AboveStatus(sys.stderr)
    monitor = monitor_from(params, err)
    if notifier is not None:
        notifier.report_to(monitor.log.write)
    reporter = _DiagnosingReporter(err, rejects, show_source=show_source, rejects_name=rejects_path or "",
                                   log=monitor.log)
    pipeline = Pipeline(
        EventParser(schema), Matcher(within, params["match_mode"], params["paid_late"]), time_mode=time_mode, lateness=lateness, idle=idle
    )
    writer = ResultWriter(out, formatter, params["only"])
    runtime_writer = writer if notifier is None else notifier.writer(writer)
    runtime = Runtime(pipeline, LoopClock(), runtime_writer, reporter, strict=strict, max_line_bytes=max_line_bytes)
    ctx = click.get_current_context(silent=True)
    return _Run(
        pipeline, runtime, out, writer, within, params["stats_path"], params["quiet"], color,
        {"within_ms": within, "match": params["match_mode"]},
        # JSON logs are for collectors: no status line drawn between their lines.
        progress=not params["quiet"] and not monitor.log.is_json
        and terminal.wants_progress(params["progress"], sys.stderr, stdin),
        err=err, notifier=notifier,
        settings=settings_of(ctx) if params["verbose"] and ctx is not None else None,
        monitor=monitor,
    )


def stdin_hint(inputs) -> None:
    """``watch`` with nothing to read but a terminal: say how to feed it, then read it."""
    if any(source.path is None and _is_terminal(source.stream) for source in inputs):
        click.echo(
            "ordertimeout: no FILE given, so reading order events typed here:\n"
            "  one JSON object per line, Ctrl-D to end.\n"
            "  Or give a FILE (ordertimeout watch events.jsonl),\n"
            "  or pipe events in (cat events.jsonl | ordertimeout watch).",
            err=True,
        )


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


async def _supervise(run: _Run, main: Callable[[], Any]) -> None:
    """Run ``main`` with the status line beside it; a signal stops both in order.

    The first SIGINT, SIGTERM or SIGHUP cancels the run, which then writes what it decided
    and reports; a second one exits at once.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    status = None

    # A plain signal handler rather than loop.add_signal_handler: it also runs while the
    # loop is stuck in a blocking write to a stalled stdout, so a second Ctrl-C always works.
    def on_signal(signum: int, frame) -> None:
        if run.stop_signal is not None:
            if status is not None:
                os.write(sys.stderr.fileno(), b"\r\x1b[2K")  # leave no stale status behind
            os._exit(128 + signum)  # the second Ctrl-C: the user wants out now
        run.stop_signal = signum
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:
            pass  # the loop has ended: the run's last flush is under way and stops by itself

    # Listening before any input is read: a taken address fails the run at once.
    await run.monitor.start(run, run.runtime.clock.now_ms)
    # A signal the command was started with ignored stays ignored (nohup ignores SIGHUP,
    # so closing the terminal must not stop the run).
    # They stay installed after this returns, until _execute has made its last write to
    # stdout: a first signal never interrupts a write, whenever it comes.
    run.previous_handlers = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS
                             if signal.getsignal(signum) is not signal.SIG_IGN}
    if run.progress:
        status = terminal.StatusLine(terminal.stderr_console(sys.stderr, run.color), _status_renderer(run))
        run.err.status = status
        if sys.stdout.isatty():
            run.out.before_write, run.out.after_write = status.clear, status.draw
    # The refresher is owned here rather than by a TaskGroup so the run's own errors
    # (a closed stdout, --strict) reach the caller as themselves, not as a group.
    refresher = asyncio.create_task(_refresh(status)) if status is not None else None
    notifier = run.notifier
    drain_timeout = 0.0
    try:
        if notifier is not None:
            await notifier.start(on_error=task.cancel)
        try:
            await main()
        except asyncio.CancelledError:
            if run.stop_signal is None and (notifier is None or notifier.error is None):
                raise
            task.uncancel()
        if notifier is not None and notifier.error is None:
            drain_timeout = notifier.drain_timeout  # the end, or a signal: deliver what is pending
    finally:
        if notifier is not None:
            try:
                await notifier.finish(drain_timeout)
            except asyncio.CancelledError:  # a signal during the drain ends it
                if run.stop_signal is None:
                    raise
                task.uncancel()
                await notifier.finish(0)
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            status.clear()
        run.err.status = None
        run.err.flush()
        run.out.before_write = run.out.after_write = None
        await run.monitor.stop()
    if notifier is not None and notifier.error is not None:
        raise notifier.error


async def _refresh(status: terminal.StatusLine) -> None:
    while True:
        status.draw()
        await asyncio.sleep(STATUS_REFRESH_SECONDS)


def _status_renderer(run: _Run) -> Callable[[], object]:
    clock = run.runtime.clock
    history: list[tuple[int, int]] = []

    def render() -> object:
        notice = run.notice() if run.notice is not None else None
        if notice:
            from rich.text import Text  # the status line is drawn with rich anyway

            return Text(notice, style="yellow")
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
        deliveries = run.notifier.stats() if run.notifier is not None else None
        return terminal.status_text(stats, rate, now, watermark, progress, deliveries)

    return render


def _execute(run: _Run, main: Callable[[], Any]) -> None:
    """Run ``main`` (a coroutine function) and report, turning failures into clean exits
    (see the exit statuses in :data:`.options.EXIT_STATUS_HELP`)."""
    exit_code = 0
    broken_pipe = False
    if run.notifier is not None:
        if run.state is not None:
            run.notifier.use_state(run.state, run.runtime)
        if run.reader is not None:
            run.reader = run.notifier.paced(run.reader)  # read at call time by the command's main
        run.monitor.health.deliveries = run.notifier.stats
    if getattr(run.runtime, "checkpointer", None) is not None:  # (a kafka worker keeps state its own way)
        run.runtime.checkpointer = run.monitor.guard_checkpoints(run.runtime.checkpointer)
    if run.reader is not None:
        run.reader = run.monitor.watch_input(run.reader)
    # Start-up is over: what was imported and built so far lives as long as the process.
    # Frozen, the garbage collector's full collections stop walking it (they had stalled
    # processing-time timers for 10+ ms once the run was busy).
    gc.freeze()
    try:
        asyncio.run(_supervise(run, main))
        run.out.flush()  # still under the run's signal handlers: a stop does not cut it
        if run.stop_signal is not None:
            exit_code = 128 + run.stop_signal
        if run.monitor.state_failure() is not None:  # the last checkpoint was not written
            _finish(run, quiet=run.quiet)
            raise click.ClickException(run.monitor.state_failure())
    except BrokenPipeError:
        broken_pipe = True
        exit_code = EXIT_BROKEN_PIPE
        _silence_stdout()
    except StrictStop:
        exit_code = 1
        _flush_quietly(run.out)
    except MonitorError as error:  # before any input was read: nothing to report
        raise click.ClickException(str(error)) from None
    except StdoutError as error:  # a full disk (> /dev/full): one line, the summary would only repeat it
        _silence_stdout()
        raise click.ClickException(str(error)) from None
    except (SourceError, SinkError, StateError, OutboxError) as error:
        _flush_quietly(run.out)
        _finish(run, quiet=run.quiet)
        raise click.ClickException(str(error)) from None
    finally:
        _restore_handlers(run)
        if run.state is not None:
            run.state.close()
    # The reader of stdout left (| head): exit 141 says so, as it does for `yes | head`;
    # a summary nobody asked for would only be noise under the output head showed.
    _finish(run, quiet=run.quiet or broken_pipe)
    problem = run.notifier.problem() if run.notifier is not None else None
    if problem is not None:
        run.monitor.log.error(problem)
        exit_code = exit_code or 1
    if exit_code:
        sys.exit(exit_code)
    _fail_if_nothing_usable(run)


def _restore_handlers(run: _Run) -> None:
    """Put back the stop signals' handlers the run replaced (its writes to stdout are over)."""
    handlers, run.previous_handlers = run.previous_handlers, {}
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _fail_if_nothing_usable(run: _Run) -> None:
    """A run that read lines and could use none of them failed (exit 1), and says why. A
    run whose events opened no order at all is warned about (a type value mistyped
    looks like a quiet shop: no result, exit 0)."""
    reporter = run.runtime.reporter
    stats = run.pipeline.stats()
    no_orders = describe_no_orders(stats, run.pipeline.parser.schema)
    if no_orders is not None:
        run.monitor.log.warning(no_orders)
    if stats["events"] or not isinstance(reporter, _DiagnosingReporter) or not reporter.count:
        return
    reason = reporter.reasons.most_common(1)[0][0]
    raise click.ClickException(
        describe_unusable(reporter.count, reason, reporter.samples, run.pipeline.parser.schema)
    )


def _finish(run: _Run, quiet: bool) -> None:
    stats = run_counters(run)  # the figures /metrics reads, so the two always agree
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
    try:
        if run.monitor.log.is_json:
            run.monitor.log.info("summary", **stats)
        elif terminal.wants_status(sys.stderr):
            console = terminal.stderr_console(sys.stderr, run.color)
            console.print(terminal.summary_table(stats, run.writer.latencies, run.within, run.settings))
        else:
            click.echo(terminal.summary_text(stats, run.writer.latencies, run.settings), err=True)
    except OSError:
        pass  # stderr cannot be written (2>/dev/full): the results and the exit status still are

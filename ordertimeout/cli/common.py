"""Shared parts of the commands: running a run (signals, the status line, the drain) and
reporting it (:mod:`.build` builds it).

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

from ..inputs.unusable import describe_no_orders, describe_unusable
from ..observe.health import Health, MonitorError
from ..observe.logs import Log
from ..observe.monitor import Monitor, run_counters
from ..rules.pipeline import Pipeline, TimeMode
from ..hosts.runtime import Runtime, StrictStop
from ..outputs.sinks import OutputBuffer, ResultWriter, SinkError
from ..inputs.sources import ChunkReader, SourceError
from ..notify.outbox import OutboxError
from ..state.store import StateError, StateStore
from ..outputs import terminal
from .options import Duration, WritableFile  # noqa: F401 (re-exported)
from .streams import StdoutError, _DiagnosingReporter, _flush_quietly, _silence_stdout

__all__ = ["Duration", "WritableFile", "_execute", "_Run"]

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
            announcer = asyncio.create_task(_announce_drain(run, drain_timeout))
            try:
                await notifier.finish(drain_timeout)
            except asyncio.CancelledError:  # a signal during the drain ends it
                if run.stop_signal is None:
                    raise
                task.uncancel()
                await notifier.finish(0)
            finally:
                announcer.cancel()
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


DRAIN_NOTICE_SECONDS = 1.0  #: at the end of input, a drain that takes longer is announced


async def _announce_drain(run: _Run, drain_timeout: float) -> None:
    """Say that the run waits for pending deliveries (at once after a signal, after a
    second at the end of input), and how to stop waiting, rather than go quiet."""
    if run.stop_signal is None:
        await asyncio.sleep(DRAIN_NOTICE_SECONDS)
    notice = run.notifier.draining_notice(drain_timeout, signalled=run.stop_signal is not None)
    if notice is not None:
        run.monitor.log.warning(notice)


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
    (source, *others) = reporter.sources
    file = source if not others and source != "<stdin>" else None
    raise click.ClickException(
        describe_unusable(reporter.count, reason, reporter.samples, run.pipeline.parser.schema, file)
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

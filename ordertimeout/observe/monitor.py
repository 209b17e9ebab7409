"""What a run tells about itself: its counters, its health, its diagnostics, and (with an
address) the ``/metrics`` and ``/healthz`` endpoint.

:func:`run_counters` is the one place the run's figures are gathered: ``--stats`` writes
them at exit and the metrics collector reads them at every scrape. :class:`Monitor` ties
the run to its :class:`~.health.Health` and :class:`~.logs.Log`, keeps a failed
checkpoint from ending a run that can go on, and starts the HTTP server, whose modules
(and aiohttp and prometheus-client) are imported only then.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any, Callable

from .health import Health
from .logs import Log
from ..errors import SourceError, StateWriteError
from ..rules.pipeline import TimeMode

__all__ = ["Monitor", "WatchedReader", "run_counters"]

#: How often a failed checkpoint is tried again while no input comes, in seconds.
STATE_RETRY_SECONDS = 1.0


def run_counters(run: Any) -> dict:
    """The run's counters as plain data, cheap enough to read on every scrape.

    ``run`` has ``pipeline`` (``stats()``, ``time_mode``, ``frontier``), ``runtime``
    (``elapsed_ms``, ``reporter``, and ``lines_read`` and ``timer_lateness`` when it is the
    local runtime), ``reader`` (or None), ``extra_stats`` and ``notifier`` (the delivery
    sinks, or None: their ``stats()`` become ``deliveries``). Pay latency percentiles,
    which sort, are added by ``--stats`` only.
    """
    pipeline, runtime = run.pipeline, run.runtime
    stats = pipeline.stats()
    stats["elapsed_s"] = round(runtime.elapsed_ms / 1000, 3)
    stats.update(run.extra_stats)
    if pipeline.time_mode is TimeMode.EVENT and math.isfinite(pipeline.frontier):
        stats["watermark"] = int(pipeline.frontier) - 1
    if run.reader is not None:
        stats["input"] = {"bytes": run.reader.bytes_read, "lines": runtime.lines_read}
    if getattr(runtime.reporter, "by_reason", None):
        stats["rejected_by_reason"] = dict(runtime.reporter.by_reason)
    notifier = getattr(run, "notifier", None)
    if notifier is not None:
        stats["deliveries"] = notifier.stats()
    if hasattr(pipeline, "partition_figures"):  # the kafka worker stands in for the pipeline
        stats["kafka"] = {"partitions": pipeline.partition_figures()}
    lateness = runtime.timer_lateness.figures() if hasattr(runtime, "timer_lateness") else None
    if lateness:
        stats["timer_lateness"] = lateness
    return stats


#: The ``le`` bounds (ms) of open orders' time left on /metrics.
TIME_LEFT_BOUNDS = (1_000, 10_000, 60_000, 300_000, 900_000, 3_600_000, 21_600_000, 86_400_000, 259_200_000, 604_800_000)


def _open_by_window(run: Any) -> Callable[[int], dict] | None:
    """Open orders by window and time left, for /metrics: ``{window text: [(bound ms or
    None for +Inf, count), ...]}``; None for a host without one matcher (kafka)."""
    pipeline = run.pipeline
    if not hasattr(pipeline, "matcher"):
        return None
    from ..rules.durations import format_duration

    def read(_now: int) -> dict:
        counts = pipeline.matcher.open_by_window(TIME_LEFT_BOUNDS)
        return {
            ("own" if window is None else format_duration(window)): [*zip(TIME_LEFT_BOUNDS, row), (None, row[-1])]
            for window, row in counts.items()
        }

    return read


class Monitor:
    """A run's health, log and optional metrics endpoint at ``address`` (host, port)."""

    def __init__(self, log: Log, health: Health, address: tuple[str, int] | None = None) -> None:
        self.log = log
        self.health = health
        self.address = address
        self._server = None
        self._retrier: asyncio.Task | None = None

    def guard_checkpoints(self, save: Callable[..., None]) -> Callable[..., None]:
        """``save`` that does not end the run when a checkpoint cannot be written.

        A write failure (:class:`~ordertimeout.errors.StateWriteError`, e.g. a full disk) makes the run
        unhealthy and is warned about once; the run goes on and the next checkpoint tries
        again (writing everything, so nothing decided meanwhile is lost from state). Other
        state errors (the file was removed: no retry can help) end the run as before. The host checks :meth:`state_failure` at the end: a run whose last
        checkpoint failed must not exit as if its state were saved.
        """

        def guarded(*args, **kwargs) -> None:
            try:
                save(*args, **kwargs)
            except StateWriteError as error:
                if self.health.failure("state") is None:
                    self.log.warning(f"{error}; matching goes on, the next checkpoint tries again",
                                     component="state", error=str(error))
                self.health.fail("state", str(error))
                return
            if self.health.failure("state") is not None:
                self.log.info("state file written again", component="state")
            self.health.recover("state")

        return guarded

    def state_failure(self) -> str | None:
        """Why the last checkpoint failed, or None if it was written."""
        return self.health.failure("state")

    def watch_input(self, reader: Any) -> "WatchedReader":
        """``reader`` reporting to health: failing when a read fails, well when one works."""
        return WatchedReader(reader, self.health)

    async def start(self, run: Any, now_ms: Callable[[], int]) -> None:
        """Serve ``/metrics`` and ``/healthz`` for ``run`` (if an address was given), and
        retry failed checkpoints even while the input is quiet."""
        if self.address is not None:
            await self._serve(run, now_ms)
        if getattr(run.runtime, "checkpointer", None) is not None:
            self._retrier = asyncio.create_task(self._retry_checkpoints(run.runtime))

    async def _serve(self, run: Any, now_ms: Callable[[], int]) -> None:
        from . import metrics
        from .metrics_server import MetricsServer

        collector = metrics.RunCollector(
            lambda: run_counters(run), run.writer.latencies, run.within, getattr(run.runtime, "timer_lateness", None),
            self.health, now_ms, open_by_window=_open_by_window(run),
        )
        server = MetricsServer(*self.address, metrics.registry(collector), self.health, now_ms)
        await server.start()
        self._server = server

    async def _retry_checkpoints(self, runtime: Any) -> None:
        # Checkpoints follow input; without input a failed one would wait for the next
        # line, and the run would stay unhealthy after the disk got space again.
        while True:
            await asyncio.sleep(STATE_RETRY_SECONDS)
            if self.health.failure("state") is not None:
                runtime.checkpoint()

    async def stop(self) -> None:
        """Stop serving (after the run's last figures could still be scraped)."""
        if self._retrier is not None:
            self._retrier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrier
            self._retrier = None
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop()


class WatchedReader:
    """A reader (see :class:`~.runtime.Reader`) whose failures make the run unhealthy.

    Everything else (``bytes_read``, ``progress``...) is the wrapped reader's own.
    """

    def __init__(self, reader: Any, health: Health) -> None:
        self._reader = reader
        self._health = health

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    async def get(self, timeout: float | None = None):
        """The wrapped reader's next item; a :class:`SourceError` is recorded, then raised."""
        try:
            item = await self._reader.get(timeout)
        except SourceError as error:
            self._health.fail("input", str(error))
            raise
        self._health.recover("input")
        return item

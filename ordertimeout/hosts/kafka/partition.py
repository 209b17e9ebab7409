"""One assigned input partition: its own pipeline, watermark, timers and changelog.

The Kafka Streams ``StreamTask`` in miniature. The worker hands it batches of records;
it restores its state first (the partition stays paused meanwhile), then feeds each
record's value to its :class:`~ordertimeout.pipeline.Pipeline`, fires processing-time and
``--idle`` timers as the local runtime does, and checkpoints: results delivered first
(to the results topic, and out of the notify outbox: delivered or dead), then the
changelog batch that covers them, then the group offset (Kafka Streams' rule: commit only
after the side effects the offsets cover are done). A checkpoint waits for its results
in the background, so matching goes on while an endpoint is down; one at a time, so the
next one covers whatever came meanwhile. Every rule stays in the pipeline and the
matcher; this module owns ordering, waiting and writing.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Protocol

from ...rules.clocks import Clock
from ...rules.events import RejectedLine
from ...rules.matcher import Result, Timeout
from ...rules.pipeline import Pipeline, TimeMode
from .changelog import ChangelogWriter, Record, Restored
from .connect import KafkaRunError

__all__ = ["PartitionTask", "Host", "CheckpointError"]

#: Timeouts emitted per call when many are due at once (as the local runtime does).
EMIT_SLICE = 128
#: --idle, until the partition is caught up: how often it looks at the high watermark.
CATCH_UP_POLL_MS = 100

_STOP = object()


class CheckpointError(KafkaRunError):
    """A checkpoint's state write or commit did not complete (the message says which and
    why); the partition goes on and its next checkpoint tries again."""


class Host(Protocol):
    """What a partition task needs from its worker (the Kafka clients and the sinks)."""

    clock: Clock
    #: Seconds a revoked partition waits for its deliveries before giving up its commit
    #: (None: no sinks; it waits for the results topic).
    drain_timeout: float | None

    async def restore(self, partition: int) -> Restored: ...

    async def start_position(self, partition: int, restored_offset: int | None) -> int: ...

    def resume(self, partition: int) -> None: ...

    def highwater(self, partition: int) -> int | None:
        """The partition's high watermark at the last fetch (None: not fetched yet)."""

    def restore_ended(self, partition: int, orders: int | None) -> None: ...

    async def send_results(self, results: list[Result]) -> Awaitable: ...

    async def send_state(self, partition: int, records: list[Record]) -> None: ...

    async def commit(self, partition: int, offset: int) -> None: ...

    def checkpoint_failed(self, partition: int, reason: str | None) -> None: ...

    def show(self, results: list[Result]) -> None: ...

    def deliver(self, results: list[Result]) -> Awaitable | None: ...

    def reject(self, partition: int, offset: int, reason: str, raw: bytes) -> None: ...


class PartitionTask:
    """The pipeline of one input partition and the asyncio task that drives it."""

    def __init__(self, partition: int, pipeline: Pipeline, host: Host, config: dict,
                 checkpoint_every: int, queue_size: int = 16) -> None:
        self.partition = partition
        self.pipeline = pipeline
        self.host = host
        self.checkpoint_every = checkpoint_every
        self.changelog = ChangelogWriter(partition, config)
        self.queue: asyncio.Queue = asyncio.Queue(queue_size)
        #: The next input offset to process; records before it were already applied.
        self.offset: int | None = None
        self.ready = False
        self.baseline: dict | None = None  # the restored counters, to tell this run's share
        self._in_flight: list[Awaitable] = []
        self._saved: tuple | None = None
        self._saving: asyncio.Task | None = None  # the checkpoint waiting for its results
        #: What the checkpoint under way waits for and since when (loop time), for health.
        self._phase: tuple[str, float] | None = None
        self._unsent: list[Record] = []  # records of a state write that did not complete
        self._commit_owed: int | None = None  # an offset whose commit did not complete
        self._last_checkpoint = 0
        self._floor = float("-inf")  # processing time never runs backwards across workers
        self._restored = False  # state came from the changelog (a takeover or a restart)
        self._task: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> asyncio.Task:
        """Restore and run in a new asyncio task."""
        self._task = asyncio.create_task(self._run(), name=f"partition-{self.partition}")
        return self._task

    async def stop(self) -> None:
        """Revocation or shutdown: finish the batch at hand, checkpoint, commit, end.

        Batches still queued are dropped: their offsets were not processed, so the next
        owner reads them again from the offset saved here.
        """
        task = self._task
        if task is None or task.done():
            if task is not None and not task.cancelled():
                task.result()  # an error of the task surfaces here
            return
        if not self.ready:  # still restoring: nothing decided yet, nothing to save
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(_STOP)
        await task

    async def abandon(self) -> None:
        """The cluster is lost: end without saving (nothing can be written). The results
        decided here are already shown; the next owner reads this input again from the
        last saved state and decides them again, with the same ids."""
        tasks = [task for task in (self._saving, self._task) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def task(self) -> asyncio.Task | None:
        """The asyncio task (None before ``start``)."""
        return self._task

    async def _run(self) -> None:
        await self._restore()
        clock = self.host.clock
        while True:
            timer = self.pipeline.next_timer()
            due = self._last_checkpoint + self.checkpoint_every
            wake = due if timer is None else min(timer, due)
            if self._waits_to_catch_up():
                wake = min(wake, clock.now_ms() + CATCH_UP_POLL_MS)
            try:
                async with asyncio.timeout(clock.seconds_until(wake)):
                    item = await self.queue.get()
            except TimeoutError:
                await self._catch_up()
                await self._emit_due(self._now())
                await self._maybe_checkpoint()
                continue
            if item is _STOP:
                await self._last_checkpoint_before_leaving()
                return
            await self._feed(item)
            await self._catch_up()
            await self._maybe_checkpoint()

    async def _restore(self) -> None:
        """Restore-then-run: state from the changelog, then the offset after it."""
        host = self.host
        done = False
        try:
            restored = await host.restore(self.partition)
            state = restored.pipeline_state()
            # Rebuilding a million orders takes seconds of CPU: in a thread, so the loop
            # goes on meanwhile (heartbeats keep the group membership, other partitions
            # work). Nothing else touches this pipeline before it is ready.
            if state is not None:
                await asyncio.to_thread(self.pipeline.restore, state)
                self._restored = True
                now = self.pipeline.matcher.now
                if self.pipeline.time_mode is TimeMode.PROCESSING and now != float("-inf"):
                    self._floor = now
            self.baseline = self.pipeline.stats()
            self.offset = await host.start_position(self.partition, restored.offset)
            self.changelog.epoch = restored.epoch + 1
            # Written before anything else: mends an unfinished batch, fences off earlier writers.
            first = await asyncio.to_thread(self.changelog.start, self.pipeline, restored, self.offset)
            await host.send_state(self.partition, first)
            done = True
        finally:
            host.restore_ended(self.partition, self.pipeline.pending if done else None)
        self._saved = self._progress()
        self._last_checkpoint = host.clock.now_ms()
        self.ready = True
        host.resume(self.partition)
        # Processing time: orders whose deadline passed while nobody owned the partition
        # time out at once, stamped with their deadline and marked recovered.
        if self.pipeline.time_mode is TimeMode.PROCESSING:
            await self._emit_due(self._now(), recovered=True)

    # -- feeding ---------------------------------------------------------------------

    def _now(self) -> int:
        return max(self.host.clock.now_ms(), self._floor)

    async def _feed(self, records) -> None:
        now = self._now()
        await self._emit_due(now)
        # Records before self.offset were already applied (fetched before the seek to the
        # restored offset). A record without a value is an empty line, rejected as such.
        fresh = [record for record in records if record.offset >= self.offset]
        if not fresh:
            return
        lines = [(record.value or b"").rstrip(b"\r\n") for record in fresh]
        # Runs of plain lines in one parser loop and one matcher batch; a line the batch
        # path stops at goes through feed alone, which says what is wrong with it (or
        # decides what the batch path leaves to it).
        feed = self.pipeline.feed
        out: list[Result] = []
        for results, stop in self.pipeline.feed_runs(lines, now):
            out += results
            if stop == len(lines):
                break
            record = fresh[stop]
            try:
                out += feed(lines[stop], now)
            except RejectedLine as rejected:
                reason = rejected.reason if record.value is not None else "record without a value"
                self.host.reject(self.partition, record.offset, reason, lines[stop])
        self.offset = fresh[-1].offset + 1
        self.pipeline.behind()  # records came: the --idle clock waits for the high watermark
        await self._emit(out)

    def _waits_to_catch_up(self) -> bool:
        pipeline = self.pipeline
        return pipeline.idle is not None and pipeline.time_mode is not TimeMode.PROCESSING and not pipeline.caught_up

    async def _catch_up(self) -> None:
        """``--idle``: the wall clock moves this partition's event time only while it has
        nothing left to read (its next offset at the high watermark): a restore or a
        takeover reads its backlog in event time first, so no record written while nobody
        owned the partition is late because of that. The first catch-up then times out
        what the wall time since the newest known event, downtime included, made due."""
        if not self._waits_to_catch_up():
            return
        highwater = self.host.highwater(self.partition)
        if highwater is None or self.offset is None or self.offset < highwater:
            return
        results = self.pipeline.catch_up(self._now())
        if self._restored:  # found at a restart, as the local runtime marks them
            results = [result._replace(recovered=True) if type(result) is Timeout else result for result in results]
            self._restored = False
        await self._emit(results)

    async def _emit_due(self, now: int, recovered: bool = False) -> None:
        while True:
            results = self.pipeline.advance(now, EMIT_SLICE)
            if recovered:
                results = [result._replace(recovered=True) for result in results]
            await self._emit(results)
            if len(results) < EMIT_SLICE:
                return

    async def _emit(self, results: list[Result]) -> None:
        if not results:
            return
        self.host.show(results)
        # Batches, in decision order (the results of a key stay in order in its partition).
        self._in_flight.append(await self.host.send_results(results))
        delivered = self.host.deliver(results)
        if delivered is not None:
            self._in_flight.append(delivered)

    # -- checkpoints -----------------------------------------------------------------

    def _progress(self) -> tuple:
        """What a checkpoint would save that the last one did not: unchanged, nothing is
        written (a quiet partition costs no records)."""
        pipeline = self.pipeline
        counts = tuple(pipeline.matcher.counts().values())
        return (self.offset, pipeline.events, pipeline.rejected, pipeline.late, pipeline.frontier, counts)

    async def _maybe_checkpoint(self) -> None:
        if self.host.clock.now_ms() - self._last_checkpoint >= self.checkpoint_every:
            await self.checkpoint()

    async def checkpoint(self) -> None:
        """Snapshot the state and save it once the results it covers are delivered: results
        first, then the state, then the group offset, so after a crash a result may come
        twice (same id), never zero times. While the previous checkpoint still waits, this
        one is skipped: the next covers its results too."""
        self._last_checkpoint = self.host.clock.now_ms()  # also when skipped: the next try is due then
        saving = self._saving
        if saving is not None:
            if not saving.done():
                return
            self._saving = None
            saving.result()  # a failed write surfaces here
        batch = self._batch()
        if batch is not None:
            self._saving = asyncio.create_task(self._save(*batch))
        elif self._commit_owed is not None:
            self._saving = asyncio.create_task(self._save([], [], self._commit_owed))

    def _batch(self) -> tuple | None:
        """What the next save writes: the results it waits for, its records and offset."""
        progress = self._progress()
        if progress == self._saved:
            return None
        covered, self._in_flight = self._in_flight, []
        self._saved = progress
        # A state write that did not complete goes again first: the last write of each key
        # stays the one that counts, and its meta record follows.
        records, self._unsent = self._unsent + self.changelog.batch(self.pipeline, self.offset), []
        return covered, records, self.offset

    def stuck(self, now: float, bound: float) -> str | None:
        """Why the checkpoint under way is late (waiting for the broker longer than
        ``bound`` seconds), or None. Waiting for deliveries is the sinks' own health."""
        if self._phase is None:
            return None
        what, since = self._phase
        if what == "deliveries" or now - since <= bound:
            return None
        return f"partition {self.partition}: checkpoint waiting {now - since:.0f}s for the broker ({what})"

    async def _save(self, covered: list[Awaitable], records: list, offset: int, timeout: float | None = None) -> bool:
        """Wait for ``covered`` (up to ``timeout`` seconds), then write ``records`` and commit
        ``offset``; False (nothing written) if the results were not all done in time, or
        the state write did not complete (it goes again with the next checkpoint)."""
        loop = asyncio.get_running_loop()
        try:
            if covered:
                self._phase = ("deliveries" if self.host.drain_timeout is not None else "results", loop.time())
                _, pending = await asyncio.wait(covered, timeout=timeout)
                if pending:
                    return False
                for future in covered:
                    future.result()  # a failed produce surfaces here
            if records:
                self._phase = ("writing the state", loop.time())
                try:
                    await self.host.send_state(self.partition, records)
                except CheckpointError as error:
                    self._unsent, self._saved = records, None  # the next checkpoint writes them again
                    self.host.checkpoint_failed(self.partition, str(error))
                    return False
            self._phase = ("committing", loop.time())
            try:
                await self.host.commit(self.partition, offset)
            except CheckpointError as error:
                self._commit_owed = offset
                self.host.checkpoint_failed(self.partition, str(error))
                return True  # the state is saved: the next owner starts after it anyway
            self._commit_owed = None
            self.host.checkpoint_failed(self.partition, None)
            return True
        finally:
            self._phase = None

    async def _last_checkpoint_before_leaving(self) -> None:
        """Revocation or shutdown: wait up to the drain timeout for every result decided
        here, then save and commit; if they are not all done, save nothing more: the next
        owner reads that input again and delivers its results (with the same ids)."""
        loop = asyncio.get_running_loop()
        timeout = self.host.drain_timeout  # None: no deliveries, the produces are waited for
        end = None if timeout is None else loop.time() + timeout
        saving, self._saving = self._saving, None
        if saving is not None:
            done, _ = await asyncio.wait([saving], timeout=timeout)
            if not done:
                saving.cancel()
                await asyncio.gather(saving, return_exceptions=True)
                return
            if not saving.result() and not self._unsent:
                return  # its results were not all out: nothing more is saved
        batch = self._batch()
        if batch is not None:
            await self._save(*batch, timeout=None if end is None else max(0.0, end - loop.time()))
        elif self._commit_owed is not None:
            await self._save([], [], self._commit_owed)

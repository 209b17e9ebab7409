"""What a partition task asks of its worker: its state read back, where to start, its
results and state written, its offset committed, its results shown and delivered.

A mixin of :class:`~.worker.Worker` (the ``Host`` of :mod:`.partition`): every wait on
the broker here is bounded by ``--request-timeout``; a state write or commit that does
not complete raises :class:`~.partition.CheckpointError`, which the task reports and
tries again with its next checkpoint.
"""

from __future__ import annotations

import asyncio
import gc

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from ...rules.matcher import Result
from .changelog import Record, Restored
from .connect import KafkaRunError
from .partition import CheckpointError
from .restore import read_state

__all__ = ["TaskServices"]


class TaskServices:
    """The host half of :class:`~.worker.Worker` (its ``settings``, clients, ``reports``...)."""

    async def restore(self, partition: int) -> Restored:
        """Read partition ``partition`` of the state topic from its start to its end,
        reporting its progress; ``restore_ended`` follows, whatever happens."""
        started = self._restore_started[partition] = self.reports.clock()
        if len(self._restore_started) == 1:
            # A restore makes millions of objects that all live on: collections meanwhile
            # would walk them again and again for nothing (a quarter of a restore's time).
            gc.disable()
        self.reports.restoring[partition] = (0, 0)
        try:
            return await read_state(self.settings.client.kwargs(), self.settings.state_topic, partition,
                                    self.config, self.bound, lambda read, total: self.reports.restore_progress(
                                        partition, read, total, started))
        finally:
            self.reports.restoring.pop(partition, None)

    def restore_ended(self, partition: int, orders: int | None) -> None:
        """A partition's restore is over: ready with ``orders`` open orders, or given up
        (None: stopped or failed)."""
        started = self._restore_started.pop(partition, None)
        if started is None:
            return
        if not self._restore_started:
            # The restored orders live as long as the partition: kept out of the collector's walks.
            gc.freeze()
            gc.enable()
        if orders is not None:
            self.reports.restored(partition, orders, self.reports.clock() - started)

    async def start_position(self, partition: int, restored_offset: int | None) -> int:
        """Seek to the offset after the restored state (else the group's committed offset,
        else ``--start``) and return it."""
        tp = TopicPartition(self.settings.topic, partition)
        if restored_offset is not None:
            self._consumer.seek(tp, restored_offset)
            return restored_offset
        try:
            async with asyncio.timeout(self.bound):
                return await self._consumer.position(tp)
        except TimeoutError:
            raise KafkaRunError(f"no committed offset of {self.settings.topic}-{partition} "
                                f"within {self.bound:g}s (--request-timeout)") from None

    def resume(self, partition: int) -> None:
        """Start fetching the partition again (unless paused by backpressure: later)."""
        if not self.paused:
            self._consumer.resume(TopicPartition(self.settings.topic, partition))

    def highwater(self, partition: int) -> int | None:
        """The input partition's high watermark at its last fetch (None: not fetched yet)."""
        tp = TopicPartition(self.settings.topic, partition)
        consumer = self._consumer
        return consumer.highwater(tp) if consumer is not None and tp in consumer.assignment() else None

    async def send_results(self, results: list[Result]) -> asyncio.Future:
        """Queue results for the results topic, in order; one future for all of them."""
        return await self._outgoing.send_results(results)

    async def send_state(self, partition: int, records: list[Record]) -> None:
        """Write one changelog batch and wait until the broker has all of it (at most
        --request-timeout: else :class:`CheckpointError`)."""
        try:
            async with asyncio.timeout(self.bound):
                await (await self._outgoing.send_records(partition, records))
        except (TimeoutError, KafkaError) as error:
            raise CheckpointError(f"writing the state of partition {partition} to {self.settings.state_topic}: "
                                  f"{_reason(error, self.bound)}") from None

    async def commit(self, partition: int, offset: int) -> None:
        """Commit the group offset (for lag tools; the state's own offset is what counts);
        :class:`CheckpointError` if the broker does not answer within --request-timeout."""
        try:
            async with asyncio.timeout(self.bound):
                await self._consumer.commit({TopicPartition(self.settings.topic, partition): offset})
        except TimeoutError as error:
            raise CheckpointError(f"committing offset {offset} of {self.settings.topic}-{partition}: "
                                  f"{_reason(error, self.bound)}") from None
        except KafkaError:
            pass  # a rebalance under way: the state already says where this partition is

    def checkpoint_failed(self, partition: int, reason: str | None) -> None:
        """A partition's checkpoint failed (``reason``) or worked again (None)."""
        self.reports.checkpoint(partition, reason)

    def show(self, results: list[Result]) -> None:
        """Results to stdout (``--json`` or rows). Returns once every byte is written (the
        writer loops over partial writes, also when a stop signal interrupts one), so the
        results are shown before they are produced and before any commit covering them;
        a stop waits for a slow reader rather than cut the write."""
        self.writer.write(results)
        self.writer.flush()

    def deliver(self, results: list[Result]):
        """Results to the sinks; a future done once they left the outbox (or None)."""
        return None if self.notifier is None else self.notifier.add_tracked(results)

    def reject(self, partition: int, offset: int, reason: str, raw: bytes) -> None:
        """A record that is not an event: reported with its partition and offset."""
        self.reporter.report(f"{self.settings.topic}-{partition} offset", offset, reason, raw)
        self.reporter.flush()


def _reason(error: BaseException, bound: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {bound:g}s (--request-timeout)"
    return str(error) or type(error).__name__

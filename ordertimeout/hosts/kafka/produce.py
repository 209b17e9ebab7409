"""The worker's produce path: results and changelog records as whole record batches.

    partition task ──results──▶ Outgoing.send_results ──▶ one batch per results partition
                   ──records──▶ Outgoing.send_records ──▶ batches for its state partition
                                        │ send_batch (aiokafka), one future per call
                                        ▼
                                     broker

Producing one record at a time costs a future, a pure-Python murmur2 and an
acknowledgement per record (measured: about half of a worker's CPU, and a bare producer
tops out near 40k records/s that way). Here records are appended to a record batch per
topic partition built in place (aiokafka's ``create_batch``), without waiting; one task
per topic partition sends its batches in order (``send_batch``), each once the previous
one is acknowledged, so while one is on its way the next fills with whatever the
partition tasks decide meanwhile: the batches grow with the load. A call gets one future
for the batches its records went into. Results keep the default partitioner's choice
(murmur2 of the record key, cached per key), so a consumer of the results topic finds a
key where a plain producer would put it, and the results of one key keep their order.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from ...rules.matcher import Result
from ...outputs.sinks import json_lines

__all__ = ["Outgoing", "BATCH_BYTES", "default_partition"]

#: Record batch size: 16 KB (the client's default) fills after ~40 results; a large batch
#: is one request and one acknowledgement for thousands. Below the broker's default
#: ``message.max.bytes`` (1 MB), which a batch must fit.
BATCH_BYTES = 512 * 1024

#: A result record has no headers (aiokafka's batch builder takes a list; never changed).
_NO_HEADERS: list = []

#: Records appended and not yet acknowledged above which a partition task waits (the
#: broker is behind: matching slows down rather than memory growing).
QUEUED_LIMIT = 200_000

#: Keys whose results partition is remembered (murmur2 in pure Python is not cheap).
_CACHE_LIMIT = 100_000


def default_partition(key: bytes, partitions: list[int]) -> int:
    """The partition the Java client's and aiokafka's default partitioner give a record
    with key ``key`` (murmur2, made positive, modulo the partition count)."""
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]


class _Lane:
    """One topic partition's outgoing records: the batch filling now, full batches
    waiting, and the task that sends them one at a time (each once the previous one is
    acknowledged: while one is on its way, the next fills)."""

    __slots__ = ("topic", "partition", "batch", "future", "count", "full", "wake", "pump", "sending")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.batch = None
        self.future: asyncio.Future | None = None
        self.count = 0  # records in the open batch
        self.full: deque[tuple[object, asyncio.Future, int]] = deque()
        self.wake = asyncio.Event()
        self.pump: asyncio.Task | None = None
        self.sending: asyncio.Future | None = None  # the batch on its way


class Outgoing:
    """Produces a worker's results and changelog records through ``producer``.

    ``start()`` (once the producer is started) learns the results topic's partitions;
    ``close()`` ends the sending tasks (what was not acknowledged then is not: the
    partitions did not commit it).
    """

    def __init__(self, producer: AIOKafkaProducer, results_topic: str, state_topic: str,
                 limit: int = QUEUED_LIMIT) -> None:
        self.producer = producer
        self.results_topic = results_topic
        self.state_topic = state_topic
        #: Results and changelog records handed to the producer so far.
        self.results = 0
        self.state_records = 0
        self._limit = limit
        self._queued = 0  # records appended, not yet acknowledged
        self._room = asyncio.Event()
        self._room.set()
        self._lanes: dict[tuple[str, int], _Lane] = {}
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}

    async def start(self) -> None:
        """Learn the results topic's partitions (the partitioner needs their number)."""
        self._partitions = sorted(await self.producer.partitions_for(self.results_topic))

    async def close(self) -> None:
        """Stop sending; batches not yet acknowledged are cancelled."""
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            lane.pump.cancel()
        await asyncio.gather(*(lane.pump for lane in lanes), return_exceptions=True)
        for lane in lanes:
            for future in [lane.sending, lane.future, *(future for _, future, _ in lane.full)]:
                if future is not None and not future.done():
                    future.cancel()

    def partition_for(self, key: bytes) -> int:
        """The results partition of ``key`` (:func:`default_partition`, remembered)."""
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= _CACHE_LIMIT:
                self._partition_of.clear()
            partition = self._partition_of[key] = default_partition(key, self._partitions)
        return partition

    async def send_results(self, results: list[Result]) -> asyncio.Future:
        """Queue ``results`` for the results topic (key: the result's key, value: its JSON
        object); returns one future, done once the broker has every one of them."""
        await self._room.wait()  # backpressure: the broker is behind
        futures: set[asyncio.Future] = set()
        partition_for, append, topic = self.partition_for, self._append, self.results_topic
        for result, line in zip(results, json_lines(results)):
            key = result.key.encode("utf-8", "surrogatepass")
            futures.add(append(topic, partition_for(key), key, line[:-1], _NO_HEADERS))
        self.results += len(results)
        return _all(futures)

    async def send_records(self, partition: int, records: list) -> asyncio.Future:
        """Queue changelog ``records`` (:class:`~.changelog.Record`) for partition
        ``partition`` of the state topic, in order; one future for all of them."""
        await self._room.wait()
        futures: set[asyncio.Future] = set()
        for record in records:
            futures.add(self._append(self.state_topic, partition, record.key, record.value, record.headers))
        self.state_records += len(records)
        return _all(futures)

    def _append(self, topic: str, partition: int, key: bytes, value: bytes | None, headers: list) -> asyncio.Future:
        """Add one record to its lane's open batch; the future of that batch."""
        lane = self._lanes.get((topic, partition))
        if lane is None:
            lane = self._lanes[(topic, partition)] = _Lane(topic, partition)
            lane.pump = asyncio.create_task(self._pump(lane), name=f"produce-{topic}-{partition}")
        if lane.batch is None:
            self._open(lane)
        elif lane.batch.append(key=key, value=value, timestamp=None, headers=headers) is not None:
            lane.count += 1
            self._count(1)
            return lane.future
        else:  # full: it waits its turn, a new one opens (a record alone always fits an empty batch)
            lane.full.append((lane.batch, lane.future, lane.count))
            self._open(lane)
        lane.batch.append(key=key, value=value, timestamp=None, headers=headers)
        lane.count += 1
        self._count(1)
        return lane.future

    def _open(self, lane: _Lane) -> None:
        lane.batch, lane.count = self.producer.create_batch(), 0
        lane.future = asyncio.get_running_loop().create_future()
        lane.future.add_done_callback(_retrieve)
        lane.wake.set()

    def _count(self, records: int) -> None:
        self._queued += records
        if self._queued >= self._limit:
            self._room.clear()
        elif not self._room.is_set():
            self._room.set()

    async def _pump(self, lane: _Lane) -> None:
        """Send the lane's batches in order, each once the previous one is acknowledged."""
        producer = self.producer
        while True:
            await lane.wake.wait()
            lane.wake.clear()
            while lane.full or lane.batch is not None:
                if lane.full:
                    batch, future, count = lane.full.popleft()
                else:
                    batch, future, count = lane.batch, lane.future, lane.count
                    lane.batch = lane.future = None
                lane.sending = future
                try:
                    await (await producer.send_batch(batch, lane.topic, partition=lane.partition))
                except Exception as error:  # noqa: BLE001 (handed to whoever waits for the batch)
                    if not future.done():
                        future.set_exception(error)
                else:
                    if not future.done():
                        future.set_result(None)
                finally:
                    lane.sending = None
                    self._count(-count)


def _retrieve(future: asyncio.Future) -> None:
    # A failed batch nobody waits for any more (its partition left) is not worth a warning.
    if not future.cancelled():
        future.exception()


def _all(futures: set[asyncio.Future]) -> asyncio.Future:
    # Shielded: a caller that stops waiting (a timeout, a stop) must not cancel a batch
    # that other records, and other callers, are in.
    if len(futures) == 1:
        return asyncio.shield(next(iter(futures)))
    return asyncio.gather(*(asyncio.shield(future) for future in futures))

"""The worker's produce path: results and changelog records as whole record batches.

    partition task ──results──▶ Outgoing.send_results ──▶ one batch per results partition
                   ──records──▶ Outgoing.send_records ──▶ batches for its state partition
                                        │ send_batch (aiokafka), one future per call
                                        ▼
                                     broker

Producing one record at a time costs a future, a pure-Python murmur2 and an
acknowledgement per record (measured: about half of a worker's CPU, and a bare producer
tops out near 40k records/s that way). Here every call appends its records to record
batches built in place (aiokafka's ``create_batch``) and submits each batch once
(``send_batch``): one future per call. Results keep the default partitioner's choice
(murmur2 of the record key, cached per key), so a consumer of the results topic finds a
key where a plain producer would put it, and the results of one key keep their order
(the batches of one call are submitted in order, and a partition task awaits each call
before the next).
"""

from __future__ import annotations

import asyncio
from typing import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from ...rules.matcher import Result
from ...outputs.sinks import json_lines

__all__ = ["Outgoing", "BATCH_BYTES"]

#: Record batch size: 16 KB (the client's default) fills after ~40 results; a large batch
#: is one request and one acknowledgement for thousands. Below the broker's default
#: ``message.max.bytes`` (1 MB), which a batch must fit.
BATCH_BYTES = 512 * 1024

#: A result record has no headers (aiokafka's batch builder takes a list; never changed).
_NO_HEADERS: list = []

#: Keys whose results partition is remembered (murmur2 in pure Python is not cheap).
_CACHE_LIMIT = 100_000


class Outgoing:
    """Produces a worker's results and changelog records through ``producer``.

    ``start()`` (once the producer is started) learns the results topic's partitions.
    """

    def __init__(self, producer: AIOKafkaProducer, results_topic: str, state_topic: str) -> None:
        self.producer = producer
        self.results_topic = results_topic
        self.state_topic = state_topic
        #: Results and changelog records handed to the producer so far.
        self.results = 0
        self.state_records = 0
        self._partitions: list[int] = []
        self._partition_of: dict[bytes, int] = {}

    async def start(self) -> None:
        """Learn the results topic's partitions (the partitioner needs their number)."""
        self._partitions = sorted(await self.producer.partitions_for(self.results_topic))

    def partition_for(self, key: bytes) -> int:
        """The results partition of ``key``: the Java client's and aiokafka's default
        partitioner (murmur2, positive, modulo the partition count)."""
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= _CACHE_LIMIT:
                self._partition_of.clear()
            partitions = self._partitions
            partition = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            self._partition_of[key] = partition
        return partition

    async def send_results(self, results: list[Result]) -> asyncio.Future:
        """Queue ``results`` for the results topic (key: the result's key, value: its JSON
        object); returns one future, done once the broker has every one of them."""
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        partition_for = self.partition_for
        for result, line in zip(results, json_lines(results)):
            key = result.key.encode("utf-8", "surrogatepass")
            by_partition.setdefault(partition_for(key), []).append((key, line[:-1]))
        futures = []
        for partition, records in by_partition.items():
            futures += await self._send(self.results_topic, partition, ((key, value, _NO_HEADERS) for key, value in records))
        self.results += len(results)
        return _all(futures)

    async def send_records(self, partition: int, records: list) -> asyncio.Future:
        """Queue changelog ``records`` (:class:`~.changelog.Record`) for partition
        ``partition`` of the state topic, in order; one future for all of them."""
        futures = await self._send(self.state_topic, partition,
                                   ((record.key, record.value, record.headers) for record in records))
        self.state_records += len(records)
        return _all(futures)

    async def _send(self, topic: str, partition: int, records: Iterable[tuple]) -> list[asyncio.Future]:
        """Fill batches with ``records`` (key, value, headers) and submit them in order."""
        producer = self.producer
        futures = []
        batch = producer.create_batch()
        for key, value, headers in records:
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # Full: submit it and start the next (a record alone always fits an empty batch).
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures


def _all(futures: list[asyncio.Future]) -> asyncio.Future:
    if len(futures) == 1:
        return futures[0]
    return asyncio.gather(*futures)

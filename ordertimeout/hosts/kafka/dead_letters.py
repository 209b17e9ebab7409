"""A kafka worker's dead letters: the topic ``<group>-dead``, listed and re-queued.

In: the entries a worker's relay gives up on. Out: one record per dead letter in the
compacted topic ``<group>-dead`` (one partition; key: sink and result id; value: the
entry as JSON with ``"state": "dead"``), written before the input partition that decided
the result commits past it, so a dead letter outlives the worker that buried it.

``ordertimeout outbox --kafka`` reads the topic (:func:`read_dead_letters`: the latest
record per key) and re-queues (:func:`requeue`): it writes the same key again with
``"state": "requeued"``. The workers of the group form the consumer group
``<group>-dead`` on that topic; the one holding its partition takes a re-queued letter
within a second, delivers it like any result and writes a tombstone once it is delivered
(or ``"dead"`` again). The group's offset moves only past letters that have left its
outbox, so a worker killed meanwhile leaves them to the next.
"""

from __future__ import annotations

import asyncio
from collections import deque
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from ...notify.outbox import Entry, dead_letters
from .connect import ClientSettings, KafkaRunError, group_timeouts

__all__ = ["DeadLetters", "dead_topic", "read_dead_letters", "requeue", "DEAD", "REQUEUED"]

DEAD, REQUEUED = "dead", "requeued"


def dead_topic(group: str) -> str:
    """The dead-letter topic of a consumer group."""
    return f"{group}-dead"


def _key(entry: Entry) -> bytes:
    return f"{entry.sink} {entry.id}".encode("utf-8", "surrogatepass")


def encode(entry: Entry, state: str) -> bytes:
    """A dead letter's record value."""
    return orjson.dumps({"state": state, "sink": entry.sink, "id": entry.id, "key": entry.key,
                         "decided": entry.enqueued, "attempts": entry.attempts, "last_error": entry.last_error,
                         "result": orjson.Fragment(entry.body)})


def decode(value: bytes) -> tuple[str, Entry]:
    """``(state, entry)`` of a record value."""
    fields = orjson.loads(value)
    body = orjson.dumps(fields["result"])
    entry = Entry(fields["sink"], fields["id"], fields["key"], body, fields["decided"], fields["attempts"],
                  fields["decided"], fields["last_error"], fields["state"] == DEAD)
    return fields["state"], entry


async def ensure_topic(client: ClientSettings, topic: str, replication: int) -> bool:
    """Create the compacted one-partition topic if it is missing; whether it was."""
    admin = AIOKafkaAdminClient(**client.kwargs())
    await admin.start()
    try:
        if topic in set(await admin.list_topics()):
            return False
        await admin.create_topics([NewTopic(topic, 1, replication, topic_configs={"cleanup.policy": "compact"})])
        return True
    finally:
        await admin.close()


class DeadLetters:
    """A worker's side of ``<group>-dead``: keeps its dead letters there, takes re-queued ones."""

    def __init__(self, client: ClientSettings, group: str, producer: AIOKafkaProducer, notifier,
                 replication: int = 1, request_timeout: int = 30_000, session_timeout: int = 10_000) -> None:
        self.client, self.group, self.topic = client, group, dead_topic(group)
        self.producer, self.notifier = producer, notifier
        self.replication, self.request_timeout = replication, request_timeout
        self.session_timeout = session_timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    @classmethod
    def for_worker(cls, worker) -> "DeadLetters":
        """The dead letters of a connected :class:`~.worker.Worker` with sinks."""
        settings = worker.settings
        return cls(settings.client, settings.group, worker._producer, worker.notifier, settings.replication,
                   settings.request_timeout, settings.session_timeout)

    async def start(self) -> None:
        """Make sure the topic exists, keep dead letters in it, and take re-queued ones."""
        try:
            if await ensure_topic(self.client, self.topic, self.replication):
                # The clients learn of the new topic now, not from a failed request later
                # (a broker may answer a stale client's produce with NotLeaderForPartition).
                await self.producer.client.force_metadata_update()
                await self.producer.partitions_for(self.topic)
        except KafkaError as error:
            raise KafkaRunError(f"cannot create the dead-letter topic {self.topic}: {error}") from None
        self.notifier.keep_dead_letters(self.keep)
        self.notifier.dead_letter_place = (
            f"the topic {self.topic}",
            f"ordertimeout outbox --kafka --bootstrap {self.client.bootstrap} --group {self.group}")
        # The worker's --session-timeout here too: a worker killed while it holds this
        # group's partition leaves it to the others as soon as its input partitions.
        self._consumer = AIOKafkaConsumer(
            **self.client.kwargs(), group_id=self.topic, enable_auto_commit=False, auto_offset_reset="earliest",
            request_timeout_ms=self.request_timeout, **group_timeouts(self.session_timeout))
        await self._consumer.start()
        # Subscribed after start, the group is joined in the background: the worker's own
        # group does not wait for this one (a join takes a rebalance, and after a crash the
        # dead member's session too).
        self._consumer.subscribe([self.topic])
        self._task = asyncio.create_task(self._take_requeued(), name="dead-letters")

    async def keep(self, entry: Entry) -> None:
        """Write one dead letter and wait until the broker has it."""
        await (await self.producer.send(self.topic, encode(entry, DEAD), key=_key(entry)))

    async def _take_requeued(self) -> None:
        consumer, notifier = self._consumer, self.notifier
        waiting: deque[tuple[int, int, asyncio.Future, Entry]] = deque()  # (partition, offset, future, entry)
        while True:
            batches = await consumer.getmany(timeout_ms=500)
            taken = []
            for tp, records in batches.items():
                for record in records:
                    if record.value is None:
                        continue
                    state, entry = decode(record.value)
                    if state == REQUEUED:
                        taken.append((tp.partition, record.offset, entry))
            if taken:
                futures = notifier.requeue([entry for _, _, entry in taken])
                waiting.extend((partition, offset, future, entry)
                               for (partition, offset, entry), future in zip(taken, futures))
                notifier.report("info", f"{dead_letters(len(taken))} re-queued from {self.topic} "
                                "(ordertimeout outbox --kafka --retry-dead)", moved=len(taken))
            commit = {}
            while waiting and waiting[0][2].done():
                partition, offset, _, entry = waiting.popleft()
                if not entry.dead:  # delivered: gone from the dead letters (dead again: kept anew)
                    await (await self.producer.send(self.topic, None, key=_key(entry)))
                    notifier.outbox.forget_dead(1)
                commit[TopicPartition(self.topic, partition)] = offset + 1
            if not waiting:  # nothing re-queued in flight: the group may move past what it read
                for tp in consumer.assignment():
                    commit.setdefault(tp, await consumer.position(tp))
            if commit:
                try:
                    await consumer.commit(commit)
                except KafkaError:
                    pass  # a rebalance under way: read again by the next holder (at least once)

    async def stop(self) -> None:
        """Stop taking re-queued letters and leave the group."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            try:
                await self._consumer.stop()
            except KafkaError:
                pass


# -- ordertimeout outbox --kafka ------------------------------------------------------------


async def read_dead_letters(client: ClientSettings, group: str, timeout_ms: int = 30_000) -> list[tuple[str, Entry]]:
    """The latest state of every dead letter of ``group``: ``(state, entry)``, oldest first."""
    topic = dead_topic(group)
    consumer = AIOKafkaConsumer(**client.kwargs(), enable_auto_commit=False, request_timeout_ms=timeout_ms)
    try:
        await consumer.start()
    except KafkaError as error:
        raise KafkaRunError(f"cannot connect to {client.bootstrap}: {error}") from None
    try:
        if topic not in await consumer.topics():
            return []
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        latest: dict[bytes, tuple[str, Entry] | None] = {}
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, ()):
                latest.pop(record.key, None)  # a key's latest record decides its place too
                latest[record.key] = None if record.value is None else decode(record.value)
            end = max(end, consumer.highwater(tp) or 0)
        return [letter for letter in latest.values() if letter is not None]
    except KafkaError as error:
        raise KafkaRunError(f"cannot read {topic} on {client.bootstrap}: {error}") from None
    finally:
        await consumer.stop()


async def requeue(client: ClientSettings, group: str, letters: list[Entry], timeout_ms: int = 30_000) -> int:
    """Ask the group's workers to deliver ``letters`` again; how many were asked for."""
    producer = AIOKafkaProducer(**client.kwargs(), acks="all", request_timeout_ms=timeout_ms)
    try:
        await producer.start()
        futures = [await producer.send(dead_topic(group), encode(entry, REQUEUED), key=_key(entry))
                   for entry in letters]
        await asyncio.gather(*futures)
    except KafkaError as error:
        raise KafkaRunError(f"cannot write to {dead_topic(group)} on {client.bootstrap}: {error}") from None
    finally:
        await producer.stop()
    return len(letters)

"""Reading one partition's changelog back, with progress, every request bounded.

    <group>-state partition p ──fetch (large)──▶ (key, value, epoch) ──fold──▶ Restored
                                  │ progress(done, total) about every second

A consumer of its own (no group) is assigned the one partition, reads from its start to
its end and is closed. Every await on the broker has a bound (``timeout`` seconds
without any progress), so an unanswering broker fails the restore instead of hanging
the partition. Fetches are large (a restore reads megabytes, not a live stream's few
records), which is most of what a fast restore needs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from .changelog import ChangelogError, Folder, Restored
from .connect import KafkaRunError

__all__ = ["read_state", "FETCH_BYTES"]

#: Bytes fetched per request while restoring (aiokafka's default is 1 MB per partition).
FETCH_BYTES = 8 * 1024 * 1024

#: Seconds between two progress reports.
PROGRESS_EVERY = 1.0


async def read_state(client: dict, state_topic: str, partition: int, config: dict, timeout: float,
                     progress: Callable[[int, int], None] | None = None) -> Restored:
    """The state of input partition ``partition``, folded from partition ``partition`` of
    ``state_topic``. ``client``: aiokafka connection options. ``progress(read, total)``
    is told the records read so far and the partition's record count (its end offset
    minus its start) at the start, about every second, and at the end.

    Raises :class:`KafkaRunError` when the broker does not answer within ``timeout``
    seconds or the state cannot be used (another format or configuration).
    """
    tp = TopicPartition(state_topic, partition)
    consumer = AIOKafkaConsumer(
        **client, enable_auto_commit=False, auto_offset_reset="earliest",
        request_timeout_ms=int(timeout * 1000), max_partition_fetch_bytes=FETCH_BYTES, fetch_max_bytes=FETCH_BYTES,
        # Read what is there; a restore never waits for new records.
        fetch_max_wait_ms=100,
    )
    folder = Folder(partition, config)
    read = 0
    try:
        async with asyncio.timeout(timeout):
            await consumer.start()
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            start = await consumer.position(tp)
            end = (await consumer.end_offsets([tp]))[tp]
        total = max(0, end - start)
        report = progress or (lambda read, total: None)
        report(0, total)
        told = time.monotonic()
        position = start
        # An empty partition needs no fetch (which would wait for data that never comes).
        while position < end:
            async with asyncio.timeout(timeout):  # a bound on each step, not on the whole restore
                batch = await consumer.getmany(tp, timeout_ms=500)
                position = await consumer.position(tp)
            # Folded while the next fetch is on its way (getmany emptied the buffer).
            fetched = batch.get(tp, ())
            folder.add([(record.key, record.value, _epoch(record.headers)) for record in fetched])
            read += len(fetched)
            # The fetch's high watermark can only be later than ListOffsets' answer
            # (which some brokers give as the start of the last batch).
            end = max(end, consumer.highwater(tp) or 0)
            total = max(total, end - start)
            if time.monotonic() - told >= PROGRESS_EVERY:
                told = time.monotonic()
                report(read, total)
        report(read, read)
    except ChangelogError as error:  # (another format: found while folding)
        raise KafkaRunError(f"{state_topic}: {error}") from None
    except (KafkaError, TimeoutError) as error:
        reason = "no answer" if isinstance(error, TimeoutError) else str(error) or type(error).__name__
        raise KafkaRunError(f"cannot read {state_topic} partition {partition} within {timeout:g}s: {reason}") from None
    finally:
        try:
            async with asyncio.timeout(2.0):
                await consumer.stop()
        except (KafkaError, TimeoutError):
            pass  # the consumer had no group to leave: nothing is lost
    try:
        return folder.result()
    except ChangelogError as error:
        raise KafkaRunError(f"{state_topic}: {error}") from None


def _epoch(headers) -> int:
    # The writer's epoch header (see changelog), where the writer puts it (second) first:
    # this runs once per restored record.
    if headers and len(headers) == 2 and headers[1][0] == "epoch":
        return int(headers[1][1])
    for name, value in headers or ():
        if name == "epoch":
            return int(value)
    return 0

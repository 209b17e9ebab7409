"""What a worker tells about its group: log lines (text and JSON), the restore's progress
on the status line, /healthz and /metrics; and where its produce path puts a result.
Pure: a manual clock, no broker."""

from __future__ import annotations

import asyncio
import io

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from ordertimeout.observe import metrics
from ordertimeout.observe.logs import Log
from ordertimeout.hosts.kafka.changelog import Record
from ordertimeout.hosts.kafka.connect import ClientSettings, WorkerSettings
from ordertimeout.hosts.kafka.produce import default_partition
from ordertimeout.hosts.kafka.reports import RESTORE_LOG_EVERY, Reports

SETTINGS = WorkerSettings(ClientSettings("k1:9092"), "orders", "ot", "results")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _reports(format: str = "json") -> tuple[Reports, io.StringIO, Clock]:
    stream, clock = io.StringIO(), Clock()
    return Reports(SETTINGS, Log(stream, format, clock=lambda: 0.0), clock), stream, clock


def _lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_restore_tells_its_start_its_progress_at_most_every_few_seconds_and_its_end():
    reports, stream, clock = _reports()
    started = clock()
    reports.restore_progress(2, 0, 1_000_000, started)
    assert reports.restoring_text() == "restoring state: partition 2 0 of 1,000,000 (0%)"
    clock.now += RESTORE_LOG_EVERY - 0.1
    reports.restore_progress(2, 300_000, 1_000_000, started)  # too soon for a line
    assert reports.restoring_text() == "restoring state: partition 2 300,000 of 1,000,000 (30%)"
    clock.now += 0.1
    reports.restore_progress(2, 400_000, 1_000_000, started)
    reports.restoring.pop(2)
    reports.restored(2, 999_000, clock() - started)
    lines = _lines(stream)
    assert [line["message"] for line in lines] == [
        "partition 2: restoring 1,000,000 state records from ot-state",
        "partition 2: restoring: 400,000 of 1,000,000 state records (40%, 80,000/s)",
        "partition 2: restored 999,000 open orders in 5.0s",
    ]
    assert lines[1]["fields"] == {"group": "ot", "topic": "orders", "event": "restoring", "partition": 2,
                                  "read": 400_000, "total": 1_000_000}
    assert reports.restoring_text() is None


def test_group_events_are_one_line_each_and_a_lost_cluster_is_told_once():
    reports, stream, _ = _reports("text")
    reports.partitions = 3
    reports.assigned([0, 2], 1)
    reports.revoked([2])
    reports.assigned([], 2)
    for attempt in (1, 2, 3):
        reports.connection(attempt, "no broker answered")
    reports.connection(0, None)
    assert stream.getvalue().splitlines() == [
        "ordertimeout: joined group ot: assigned orders partitions 0, 2",
        "ordertimeout: group ot: revoked orders partitions 2 (checkpointed)",
        "ordertimeout: group ot rebalanced: no partitions assigned: the other workers hold every partition of "
        "orders (it has 3); this worker waits as a spare",
        "ordertimeout: lost the Kafka cluster at k1:9092 (no broker answered); reconnecting",
        "ordertimeout: reconnected to the Kafka cluster at k1:9092",
    ]


def test_a_failed_checkpoint_is_warned_once_and_reported_until_one_completes():
    reports, stream, _ = _reports("text")
    reports.checkpoint(1, "committing offset 7 of orders-1: no answer within 30s (--request-timeout)")
    reports.checkpoint(1, "committing offset 9 of orders-1: no answer within 30s (--request-timeout)")
    assert reports.checkpoint_text([]) == \
        "partition 1: committing offset 9 of orders-1: no answer within 30s (--request-timeout)"
    assert len(stream.getvalue().splitlines()) == 1
    reports.checkpoint(1, None)
    assert reports.checkpoint_text([]) is None
    assert stream.getvalue().splitlines()[-1] == "ordertimeout: partition 1: checkpoint written again"


def test_metrics_show_a_restore_under_way_per_partition():
    partitions = {"0": {"topic": "orders", "partition": 0, "lag": 5},
                  "1": {"topic": "orders", "partition": 1, "lag": None, "restore": {"read": 250, "total": 1000}}}

    class Kafka:
        def collect(self):
            return metrics._kafka({"partitions": partitions})

    registry = CollectorRegistry()
    registry.register(Kafka())
    text = generate_latest(registry).decode()
    assert 'ordertimeout_kafka_restore_records_read{partition="1",topic="orders"} 250.0' in text
    assert 'ordertimeout_kafka_restore_records{partition="1",topic="orders"} 1000.0' in text
    assert 'ordertimeout_kafka_restore_records_read{partition="0"' not in text
    assert 'ordertimeout_kafka_partition_lag{partition="0",topic="orders"} 5.0' in text


@settings(max_examples=300)
@given(st.binary(max_size=40), st.integers(1, 64))
def test_results_go_where_the_default_partitioner_puts_their_key(key, count):
    """The batched produce path picks each result's partition itself: it must be the one
    a plain producer would pick (a consumer may rely on where a key lives)."""
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(count))
    assert default_partition(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_a_caller_that_stops_waiting_does_not_cancel_the_batch_others_are_in():
    """A state write given up after --request-timeout cancels its wait, not the batch:
    the records appended to that batch afterwards must still be acknowledged. The producer
    here holds each batch until the test releases it: the broker's timing, scripted (a
    real broker cannot be made to acknowledge exactly then)."""
    from ordertimeout.hosts.kafka.produce import Outgoing

    class Producer:  # holds every batch until released (a broker that is slow to acknowledge)
        def __init__(self) -> None:
            self.sent: list[asyncio.Future] = []

        def create_batch(self):
            class Batch:
                count = 0

                def append(self, **record):
                    self.count += 1
                    return self

                def record_count(self):
                    return self.count
            return Batch()

        async def send_batch(self, batch, topic, partition):
            future = asyncio.get_running_loop().create_future()
            self.sent.append(future)
            return future

    async def scenario():
        producer = Producer()
        outgoing = Outgoing(producer, "results", "state")
        first = await outgoing.send_records(0, [Record(b"k", b"v", 1)])
        await asyncio.sleep(0)  # the first batch is on its way
        state = await outgoing.send_records(0, [Record(b"k2", b"v", 1)])  # the next one fills
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await state  # given up
        later = await outgoing.send_records(0, [Record(b"k3", b"v", 1)])  # same batch as the given-up one
        producer.sent[0].set_result(None)
        await first
        await asyncio.sleep(0)
        producer.sent[1].set_result(None)
        await asyncio.wait_for(later, 1)
        await outgoing.close()
        return later

    assert asyncio.run(scenario()).done()

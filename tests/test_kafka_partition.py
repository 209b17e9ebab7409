"""A partition task feeding its records: through the batch path, exactly as record by record.

``PartitionTask._feed`` hands runs of plain records to ``Pipeline.feed_lines`` and the
records it stops at to ``Pipeline.feed``. Held here to the one-record-at-a-time path it
replaced: the same results in the same order, the same rejected records reported with
their own offsets, the same state. The worker's Kafka side is not needed for that: the
task gets its records as the consumer hands them over, and a recording host takes what
it shows and rejects (the broker tests in test_kafka.py run the whole worker).
"""

import asyncio
import copy
from dataclasses import dataclass

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, RejectedLine, TimeMode
from ordertimeout.rules.clocks import ManualClock
from ordertimeout.hosts.kafka.partition import EMIT_SLICE, PartitionTask

from .helpers import as_lines, lines_strategy

CONFIG = {"within_ms": 100, "match": "each"}


@dataclass(frozen=True)
class FetchedRecord:
    """What the task reads of a consumer record."""

    offset: int
    value: bytes | None


class RecordingHost:
    """The worker as a partition task sees it when feeding: a clock, and where results and
    rejected records go (recorded here)."""

    drain_timeout = None

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.shown: list = []
        self.rejected: list[tuple[int, str, bytes]] = []

    def show(self, results) -> None:
        self.shown += results

    async def send_results(self, results):
        return None

    def deliver(self, results):
        return None

    def reject(self, partition: int, offset: int, reason: str, raw: bytes) -> None:
        assert partition == 3
        self.rejected.append((offset, reason, raw))


def _pipeline(time_mode, lateness=20, mode="each") -> Pipeline:
    return Pipeline(EventParser(EventSchema()), Matcher(100, mode), time_mode=time_mode,
                    lateness=lateness if time_mode is not TimeMode.PROCESSING else 0)


def batched(fetches, start, time_mode, **options):
    """What the task does with ``fetches`` (lists of records), from input offset ``start``."""
    clock = ManualClock(1_000)
    host = RecordingHost(clock)
    task = PartitionTask(3, _pipeline(time_mode, **options), host, CONFIG, checkpoint_every=10**9)
    task.offset = start

    async def feed_all():
        for records in fetches:
            clock.advance(7)
            await task._feed(records)

    asyncio.run(feed_all())
    return host.shown, host.rejected, task.offset, task.pipeline.snapshot()


def one_by_one(fetches, start, time_mode, **options):
    """The path the batch path replaced: every record fed alone."""
    clock = ManualClock(1_000)
    pipeline = _pipeline(time_mode, **options)
    shown, rejected, offset = [], [], start
    for records in fetches:
        now = clock.advance(7)
        while True:
            due = pipeline.advance(now, EMIT_SLICE)
            shown += due
            if len(due) < EMIT_SLICE:
                break
        for record in records:
            if record.offset < offset:
                continue
            offset = record.offset + 1
            raw = (record.value or b"").rstrip(b"\r\n")
            try:
                shown += pipeline.feed(raw, now)
            except RejectedLine as error:
                reason = error.reason if record.value is not None else "record without a value"
                rejected.append((record.offset, reason, raw))
    return shown, rejected, offset, pipeline.snapshot()


def test_bad_empty_and_late_records_amid_a_fetch_are_reported_at_their_offsets():
    def event(key, kind, ts):
        return orjson.dumps({"userId": key, "type": kind, "ts": ts})

    values = [
        event("a", "create", 1000),  # offset 40: before the restored offset, already applied
        event("a", "create", 1000),
        event("b", "create", 1010),
        b"not json\r\n",
        None,  # a record without a value
        event("a", "pay", 1020),
        event("c", "create", 900),  # late: 120 ms behind with lateness 20
        event("b", "pay", 1030),
        event("d", "create", 1500),
    ]
    fetch = [FetchedRecord(40 + index, value) for index, value in enumerate(values)]
    expected = one_by_one([fetch], 41, TimeMode.EVENT)
    shown, rejected, offset, state = batched([fetch], 41, TimeMode.EVENT)
    assert (shown, rejected, offset, state) == expected
    assert [(result.key, type(result).__name__) for result in shown] == [("a", "Success"), ("b", "Success")]
    assert [(offset, reason.split(" (")[0].split(":")[0], raw[:4]) for offset, reason, raw in rejected] == [
        (43, "not valid JSON", b"not "), (44, "record without a value", b""), (46, "late", b'{"us')]
    assert offset == 49


@settings(max_examples=150, deadline=None)
@given(
    lines_strategy,
    st.lists(st.integers(0, 60), max_size=4),
    st.sets(st.integers(0, 60), max_size=5),
    st.integers(0, 5),
    st.sampled_from([None, TimeMode.EVENT, TimeMode.PROCESSING]),
    st.integers(0, 30),
    st.sampled_from(["each", "next", "followed-by"]),
)
def test_fetches_through_the_batch_path_equal_records_one_by_one(items, cuts, no_value, start, time_mode,
                                                                  lateness, mode):
    """Random records (odd and late ones, records without a value, some before the offset
    to start from) in fetches cut anywhere: the same results in the same order, the same
    rejects at the same offsets, the same offset to go on from and the same state."""
    values = [None if index in no_value else line for index, line in enumerate(as_lines(items))]
    records = [FetchedRecord(100 + index, value) for index, value in enumerate(values)]
    bounds = [0, *sorted(cuts), len(records)]
    fetches = [records[begin:end] for begin, end in zip(bounds, bounds[1:])]
    options = dict(lateness=lateness, mode=mode)
    expected = one_by_one(copy.deepcopy(fetches), 100 + start, time_mode, **options)
    assert batched(fetches, 100 + start, time_mode, **options) == expected

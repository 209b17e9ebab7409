"""The changelog records of a partition's state: written batch by batch, folded back.

Pure data, no broker: a batch is a list of records, the log is their concatenation.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, RejectedLine, TimeMode
from ordertimeout.kafka.changelog import ChangelogError, ChangelogWriter, fold

CONFIG = {"within_ms": 100, "match": "each"}


def _pipeline(mode="each", paid_late=None, lateness=20) -> Pipeline:
    return Pipeline(EventParser(EventSchema()), Matcher(100, mode, paid_late), time_mode=TimeMode.EVENT,
                    lateness=lateness)


def _snapshot(pipeline: Pipeline) -> dict:
    return orjson.loads(orjson.dumps(pipeline.snapshot(), default=lambda raw: raw.decode()))


def _log(records) -> list[tuple[bytes, bytes | None, int]]:
    """Records as the worker reads them back: key, value, epoch."""
    return [(record.key, record.value, record.epoch) for record in records]


events = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["create", "pay", "view"]), st.integers(0, 60),
              st.booleans()),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(events, st.sampled_from(["each", "next", "followed-by"]), st.booleans(), st.integers(0, 5))
def test_folding_the_log_restores_the_state_of_the_last_complete_batch(steps, mode, paid_late, torn):
    """Whatever was decided, batches written along the way fold back into exactly the
    pipeline state of the last complete batch; a torn batch (a writer killed before its
    meta record) counts for nothing, and the next owner's first batch mends the log."""
    pipeline = _pipeline(mode, 50 if paid_late else None)
    writer = ChangelogWriter(0, CONFIG)
    log, saved = [], None
    time = 0
    for offset, (key, kind, gap, checkpoint) in enumerate(steps):
        time += gap
        try:
            pipeline.feed(orjson.dumps({"userId": key, "type": kind, "ts": time}), now=0)
        except RejectedLine:
            pass  # late: counted
        if checkpoint:
            log += writer.batch(pipeline, offset + 1)
            saved = (offset + 1, _snapshot(pipeline))
    tail = writer.batch(pipeline, len(steps))
    log += tail[: min(torn, len(tail) - 1)]  # the records before the meta, cut anywhere

    restored = fold(0, _log(log), CONFIG)
    if saved is None:
        assert restored.offset is None and restored.pipeline_state() is None
        return
    assert restored.offset == saved[0]
    again = _pipeline(mode, 50 if paid_late else None)
    again.restore(restored.pipeline_state())
    assert _snapshot(again) == saved[1]

    # The next owner's first batch undoes the torn one: folding again gives the same state.
    mended = log + ChangelogWriter(0, CONFIG, restored.epoch + 1).start(again, restored, restored.offset)
    refolded = fold(0, _log(mended), CONFIG)
    assert refolded.orders == restored.orders and not refolded.stray


def test_every_record_is_stamped_with_the_offset_its_batch_covers():
    pipeline = _pipeline(lateness=0)
    writer = ChangelogWriter(3, CONFIG)
    pipeline.feed(b'{"userId":"a","type":"create","ts":1}', now=0)
    records = writer.batch(pipeline, 17)
    assert [record.key for record in records] == [b"3:order:open:a:1:0", b"3:meta"]
    assert {tuple(record.headers) for record in records} == {(("offset", b"17"), ("epoch", b"1"))}
    pipeline.feed(b'{"userId":"a","type":"pay","ts":30}', now=0)
    closing = writer.batch(pipeline, 18)
    assert [(record.key, record.value) for record in closing][0] == (b"3:order:open:a:1:0", None)  # a tombstone


def test_state_written_under_other_settings_is_refused():
    pipeline = _pipeline()
    records = ChangelogWriter(0, CONFIG).batch(pipeline, 1)
    with pytest.raises(ChangelogError, match="within_ms 100 there, 200 here"):
        fold(0, _log(records), {"within_ms": 200, "match": "each"})


def test_a_writer_fenced_off_by_a_later_one_is_ignored():
    """A worker that kept writing after its partition moved on (frozen past its session
    timeout): its records come after the new owner's first batch, with a lower epoch."""
    old = _pipeline(lateness=0)
    old_writer = ChangelogWriter(0, CONFIG, epoch=1)
    old.feed(b'{"userId":"a","type":"create","ts":1}', now=0)
    log = old_writer.batch(old, 1)

    restored = fold(0, _log(log), CONFIG)
    new = _pipeline(lateness=0)
    new.restore(restored.pipeline_state())
    new_writer = ChangelogWriter(0, CONFIG, restored.epoch + 1)
    log += new_writer.start(new, restored, 1)
    new.feed(b'{"userId":"b","type":"create","ts":2}', now=0)

    old.feed(b'{"userId":"a","type":"pay","ts":2}', now=0)  # the zombie goes on deciding
    log += old_writer.batch(old, 2)
    log += new_writer.batch(new, 2)

    final = fold(0, _log(log), CONFIG)
    assert final.epoch == 2
    assert sorted(order.key for order in final.orders.values()) == ["a", "b"]  # a's pay never happened here

"""The changelog records of a partition's state: written batch by batch, folded back.

Pure data, no broker: a batch is a list of records, the log is their concatenation.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, RejectedLine, TimeMode
from ordertimeout.hosts.kafka.changelog import ChangelogError, ChangelogWriter, fold

CONFIG = {"within_ms": 100, "match": "each"}


def _pipeline(mode="each", paid_late=None, lateness=20) -> Pipeline:
    return Pipeline(EventParser(EventSchema()), Matcher(100, mode, paid_late), time_mode=TimeMode.EVENT,
                    lateness=lateness)


def _snapshot(pipeline: Pipeline) -> dict:
    return orjson.loads(orjson.dumps(pipeline.snapshot(), default=lambda raw: raw.decode()))


def _log(records) -> list[tuple[bytes, bytes | None, int]]:
    """Records as the worker reads them back: key, value, epoch."""
    return [(record.key, record.value, record.epoch) for record in records]


def _compact(log: list, upto: int | None = None, drop_tombstones: bool = False) -> list:
    """What Kafka's log cleaner leaves of ``log`` after cleaning its first ``upto`` records
    (all by default): of each key only its last record in the cleaned part, where it was;
    the head after ``upto`` untouched. With ``drop_tombstones``, a tombstone that is the
    last of its key in the cleaned part goes too (after ``delete.retention.ms``)."""
    upto = len(log) if upto is None else upto
    cleaned = log[:upto]
    last = {record.key: index for index, record in enumerate(cleaned)}
    kept = [
        record for index, record in enumerate(cleaned)
        if last[record.key] == index and not (drop_tombstones and record.value is None)
    ]
    return kept + log[upto:]


def _restart(log: list, mode="each", paid_late=None, lateness=20):
    """A new owner of the partition: fold the log, restore, and write its first batch.
    Returns the pipeline, its writer, the offset to read from and that first batch."""
    restored = fold(0, _log(log), CONFIG)
    pipeline = _pipeline(mode, paid_late, lateness)
    state = restored.pipeline_state()
    if state is not None:
        pipeline.restore(state)
    offset = restored.offset or 0
    writer = ChangelogWriter(0, CONFIG, restored.epoch + 1)
    return pipeline, writer, offset, writer.start(pipeline, restored, offset)


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

    # The zombie's tombstone is the last record of a's key: the next owner writes a again,
    # so that compaction, which keeps only that last record, cannot lose it.
    assert final.stray == {b"0:order:open:a:1:0"}
    log += _restart(log, lateness=0)[3]
    for cleaned in (log, _compact(log), _compact(log, drop_tombstones=True)):
        assert sorted(order.key for order in fold(0, _log(cleaned), CONFIG).orders.values()) == ["a", "b"]


def _meta_of(pipeline: Pipeline, offset: int):
    """The meta record a writer ends its batch with (the state around the open orders)."""
    return ChangelogWriter(0, CONFIG).batch(pipeline, offset)[-1]


def test_orders_whose_last_writes_are_out_of_creation_order_restore_in_it_and_close_under_their_keys():
    """After mends and compaction the last writes need not be in creation order: the
    restored timeline is, and closing an order tombstones the record key it was read under."""
    pipeline = _pipeline(lateness=0)
    pipeline.feed(b'{"userId":"z","type":"view","ts":5}', now=0)
    meta = _meta_of(pipeline, 1)
    values = {b"0:order:open:%b:%d:0" % (key.encode(), created): (created, key, 0, '{"userId":"%s"}' % key, created + 100)
              for key, created in [("c", 30), ("a", 10), ("b", 20)]}
    log = [(key, orjson.dumps(value), 1) for key, value in values.items()] + [(meta.key, meta.value, 1)]
    restored = fold(0, log, CONFIG)
    again = _pipeline(lateness=0)
    again.restore(restored.pipeline_state())
    assert [order.key for order in again.matcher.open_orders()] == ["a", "b", "c"]
    writer = ChangelogWriter(0, CONFIG, restored.epoch + 1)
    assert [record.key for record in writer.start(again, restored, 1)] == [b"0:meta"]
    again.feed(b'{"userId":"b","type":"pay","ts":40}', now=0)
    again.feed(b'{"userId":"z","type":"view","ts":115}', now=0)  # a times out
    closing = writer.batch(again, 3)
    assert sorted((record.key, record.value) for record in closing[:-1]) == [
        (b"0:order:open:a:10:0", None), (b"0:order:open:b:20:0", None)]
    assert [order.key for order in again.matcher.open_orders()] == ["c"]


def test_an_order_record_written_before_deadlines_has_the_window_of_the_settings():
    """Records of a version without per-order deadlines have four fields: their deadline
    is created plus the window (the settings' window, checked against the meta's)."""
    pipeline = _pipeline(lateness=0)
    pipeline.feed(b'{"userId":"z","type":"view","ts":5}', now=0)
    meta = _meta_of(pipeline, 1)
    log = [(b"0:order:open:a:10:0", orjson.dumps((10, "a", 0, '{"userId":"a"}')), 1), (meta.key, meta.value, 1)]
    restored = fold(0, log, CONFIG)
    assert [order.deadline for order in restored.orders.values()] == [110]
    again = _pipeline(lateness=0)
    again.restore(restored.pipeline_state())
    results = again.feed(b'{"userId":"z","type":"view","ts":110}', now=0)
    assert [(result.key, result.created, result.deadline) for result in results] == [("a", 10, 110)]


@pytest.mark.parametrize("keys", ["ab", "aa"])
def test_ties_at_one_millisecond_keep_input_order_after_a_mended_batch_and_compaction(keys):
    """Two creates at the same millisecond; a writer killed mid-batch had tombstoned the
    first. The next owner writes it again at the end of the log; once the log is
    compacted (only the last record of a key survives, where it is) the two must still
    restore in input order, the order their timeouts go out in. With one key this decides
    which order a pay closes."""
    first, second = keys
    pipeline = _pipeline(lateness=0)
    writer = ChangelogWriter(0, CONFIG)
    pipeline.feed(b'{"userId":"%s","type":"create","ts":10}' % first.encode(), now=0)
    pipeline.feed(b'{"userId":"%s","type":"create","ts":10}' % second.encode(), now=0)
    log = writer.batch(pipeline, 2)
    saved = _snapshot(pipeline)
    expected = [(result.key, result.seq) for result in Matcher.restore(pipeline.matcher.snapshot()).drain()]
    assert expected == [(first, 0), (second, 1 if first == second else 0)]
    pipeline.feed(b'{"userId":"%s","type":"pay","ts":20}' % first.encode(), now=0)
    torn = writer.batch(pipeline, 3)
    assert torn[0].value is None  # the first order's tombstone ...
    log += torn[:-1]  # ... and the writer dies before the meta record

    _, _, offset, started = _restart(log, lateness=0)
    assert offset == 2
    log += started
    for cleaned in (log, _compact(log, len(log) - 1), _compact(log), _compact(log, drop_tombstones=True)):
        again, _, _, _ = _restart(cleaned, lateness=0)
        assert _snapshot(again)["matcher"]["open"] == saved["matcher"]["open"]
        assert _snapshot(again) == saved
        assert [(result.key, result.seq) for result in again.finish()] == expected


tie_events = st.lists(
    # Few keys and mostly no time between events: many creates share a millisecond.
    st.tuples(st.sampled_from("abc"), st.sampled_from(["create", "create", "create", "pay", "view"]),
              st.sampled_from([0] * 6 + [1, 30, 60]), st.sampled_from([0] * 5 + [-15])),
    min_size=6, max_size=40,
)
operations = st.lists(
    st.tuples(st.sampled_from(["feed"] * 3 + ["checkpoint"] * 2 + ["crash"] * 2 + ["compact"]), st.integers(0, 1000)),
    min_size=10, max_size=80,
)


@settings(max_examples=120, deadline=None)
@example(  # a and b open at one millisecond; a killed writer tombstoned a; two restarts
    [("a", "create", 0, 0), ("b", "create", 0, 0), ("a", "pay", 0, 0), ("c", "view", 0, 0)],
    [("feed", 1), ("checkpoint", 0), ("feed", 0), ("crash", 7), ("crash", 0)], "each", None, 0,
)
@given(tie_events, operations, st.sampled_from(["each", "next", "followed-by"]), st.sampled_from([None, 50]),
       st.sampled_from([0, 20]))
def test_restarts_and_compaction_give_the_results_of_one_uninterrupted_run(events, operations, mode, paid_late,
                                                                           lateness):
    """A partition's owners come and go: checkpoints at random, writers killed anywhere
    (mid-batch, or in the first batch after a restore), the log compacted at random (all of
    it or a prefix, tombstones kept or dropped). Every new owner restores exactly the state
    of the last complete batch (open orders in the same order), and the results (ids and
    order) are those of one uninterrupted run: the ones delivered before each saved state,
    then what the last owner decides from it."""
    lines, time = [], 100
    for key, kind, gap, jitter in events:
        time += gap
        lines.append(orjson.dumps({"userId": key, "type": kind, "ts": time + jitter}))

    def feed(pipeline, line):
        try:
            return pipeline.feed(line, now=0)
        except RejectedLine:
            return []  # late: counted, and the same in every run

    def restart(log):
        return _restart(log, mode, paid_late, lateness)

    uninterrupted = _pipeline(mode, paid_late, lateness)
    expected = [result for line in lines for result in feed(uninterrupted, line)] + uninterrupted.finish()

    log: list = []
    pipeline, writer, offset, started = restart(log)
    log += started
    saved = _snapshot(pipeline)
    results: list = []
    delivered = 0  # results covered by the saved state
    for operation, choice in operations:
        if operation == "feed":
            for line in lines[offset : offset + 1 + choice % 8]:
                results += feed(pipeline, line)
                offset += 1
        elif operation == "checkpoint":
            log += writer.batch(pipeline, offset)
            saved, delivered = _snapshot(pipeline), len(results)
        elif operation == "crash":
            # Killed mid-batch: some of its records are written, never its meta.
            torn = writer.batch(pipeline, offset)
            log += torn[: choice % len(torn)]
            for again in range(choice % 3, -1, -1):
                pipeline, writer, offset, started = restart(log)
                assert _snapshot(pipeline) == saved
                del results[delivered:]  # decided again from the saved state, with the same ids
                # Killed again in its first batch, up to twice.
                log += started[: (choice // 3 + again) % len(started)] if again else started
        elif operation == "compact":
            log = _compact(log, choice % (len(log) + 1), drop_tombstones=choice % 2 == 1)
    assert _snapshot(restart(log)[0]) == saved  # the log as it was left
    results += [result for line in lines[offset:] for result in feed(pipeline, line)] + pipeline.finish()
    assert [result.id for result in results] == [result.id for result in expected]
    assert results == expected

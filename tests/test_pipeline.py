"""The pipeline: time modes, watermark, lateness and rejections, on a manual clock."""

import orjson
import pytest

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, RejectedLine, TimeMode
from ordertimeout.rules.clocks import ManualClock
from ordertimeout.rules.pipeline import LateEvent

from .helpers import event


def make(time_mode=None, lateness=0, within=1000, mode="each"):
    return Pipeline(EventParser(EventSchema()), Matcher(within, mode), time_mode=time_mode, lateness=lateness)


def line(key, kind, **extra):
    return orjson.dumps({"userId": key, "type": kind, **extra})


def test_first_event_with_time_field_selects_event_time():
    pipeline = make()
    pipeline.feed(event("1", "create", 1000), now=5)
    assert pipeline.time_mode is TimeMode.EVENT
    with pytest.raises(RejectedLine, match="no time field 'ts'"):
        pipeline.feed(line("1", "pay"), now=6)
    assert pipeline.rejected == 1


def test_first_event_without_time_field_selects_processing_time():
    pipeline = make()
    pipeline.feed(line("1", "create"), now=5)
    assert pipeline.time_mode is TimeMode.PROCESSING


def test_rejected_lines_do_not_decide_the_mode():
    pipeline = make()
    with pytest.raises(RejectedLine):
        pipeline.feed(b"not json", now=0)
    assert pipeline.time_mode is None
    pipeline.feed(event("1", "create", 1), now=0)
    assert pipeline.time_mode is TimeMode.EVENT


def test_processing_time_create_alone_times_out_at_deadline_without_input():
    clock = ManualClock(10_000)
    pipeline = make()
    assert pipeline.feed(line("1", "create"), clock.now_ms()) == []
    assert pipeline.next_timer() == 11_000
    clock.advance(999)
    assert pipeline.advance(clock.now_ms()) == []
    clock.advance(1)
    (timeout,) = pipeline.advance(clock.now_ms())
    assert (timeout.created, timeout.deadline) == (10_000, 11_000)
    assert pipeline.next_timer() is None


def test_processing_time_pay_uses_arrival_time():
    clock = ManualClock(0)
    pipeline = make(time_mode=TimeMode.PROCESSING)
    pipeline.feed(event("1", "create", 999_999), clock.now_ms())  # its ts is ignored
    clock.advance(999)
    (success,) = pipeline.feed(line("1", "pay"), clock.now_ms())
    assert (success.created, success.paid) == (0, 999)


def test_event_time_has_no_timers():
    pipeline = make()
    pipeline.feed(event("1", "create", 1000), now=0)
    assert pipeline.next_timer() is None
    assert pipeline.next_deadline() == 2000


def test_late_event_is_counted_and_not_matched():
    pipeline = make(lateness=500)
    pipeline.feed(event("1", "create", 1000), 0)
    pipeline.feed(event("2", "create", 2000), 0)  # watermark 1499
    with pytest.raises(LateEvent, match=r"watermark 1970-01-01T00:00:01\.499Z"):
        pipeline.feed(event("1", "pay", 1499), 0)
    # On time: just after the watermark, and at the frontier, so applied at once.
    (success,) = pipeline.feed(event("1", "pay", 1500), 0)
    assert success.paid == 1500
    results = pipeline.finish()
    assert pipeline.late == 1
    assert [type(r).__name__ for r in results] == ["Timeout"]


def test_buffered_events_wait_for_the_watermark():
    pipeline = make(lateness=100)
    assert pipeline.feed(event("1", "create", 1000), 0) == []
    assert pipeline.pending == 1  # held in the reorder buffer, still counted
    assert pipeline.feed(event("1", "pay", 1050), 0) == []
    (success,) = pipeline.feed(event("2", "other", 1150), 0)
    assert success.paid == 1050


def test_timeout_is_released_once_final():
    pipeline = make()
    pipeline.feed(event("1", "create", 1000), 0)
    assert pipeline.feed(event("2", "other", 1999), 0) == []
    (timeout,) = pipeline.feed(event("2", "other", 2000), 0)
    assert timeout.deadline == 2000


def test_stats_account_for_everything():
    pipeline = make(lateness=0)
    for raw in [event("1", "create", 10), b"{", event("1", "pay", 5), event("1", "pay", 20), event("1", "x", 30)]:
        try:
            pipeline.feed(raw, 0)
        except RejectedLine:
            pass
    pipeline.finish()
    stats = pipeline.stats()
    assert stats["events"] == 4 and stats["rejected"] == 1 and stats["late"] == 1
    assert stats["creates"] == 1 and stats["pays"] == 1 and stats["other"] == 1
    assert stats["success"] == 1 and stats["pending"] == 0 and stats["time_mode"] == "event"

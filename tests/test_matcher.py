"""The matcher alone: table-driven rules at the exact millisecond, modes, counters, state."""

import pytest

from ordertimeout.rules.events import CANCEL, CREATE, OTHER, PAY
from ordertimeout.rules.matcher import (
    Matcher,
    Mode,
    OpenOrder,
    OutOfOrderError,
    _created_raw_seq,
    _created_of,
    _pack,
    _pack_long,
    _unpack,
    _unpack_long,
)

from .helpers import W, short
from .helpers import run_matcher as run

@pytest.mark.parametrize(
    "paid,expected",
    [
        (1998, ("success", "a", 1000, 1998)),
        (1999, ("success", "a", 1000, 1999)),  # one millisecond before the deadline
        (2000, ("timeout", "a", 1000, 2000)),  # exactly at the deadline: too late
        (2001, ("timeout", "a", 1000, 2000)),
    ],
)
@pytest.mark.parametrize("mode", list(Mode))
def test_deadline_boundary(mode, paid, expected):
    results, matcher = run([("a", CREATE, 1000), ("a", PAY, paid)], mode)
    assert results == [expected]
    assert matcher.pending == 0


TABLE = [
    # (name, mode, events, expected results)
    ("each: pay closes the oldest", "each",
     [("a", CREATE, 0), ("a", CREATE, 100), ("a", PAY, 200)],
     [("success", "a", 0, 200), ("timeout", "a", 100, 1100)]),
    ("followed-by: pay closes all", "followed-by",
     [("a", CREATE, 0), ("a", CREATE, 100), ("a", PAY, 200)],
     [("success", "a", 0, 200), ("success", "a", 100, 200)]),
    ("next: second create discards the first", "next",
     [("a", CREATE, 0), ("a", CREATE, 100), ("a", PAY, 200)],
     [("success", "a", 100, 200)]),
    ("next: other event discards", "next",
     [("a", CREATE, 0), ("a", OTHER, 100), ("a", PAY, 200)], []),
    ("each: other events are ignored", "each",
     [("a", CREATE, 0), ("a", OTHER, 100), ("a", PAY, 200)], [("success", "a", 0, 200)]),
    ("keys never interact", "next",
     [("a", CREATE, 0), ("b", OTHER, 100), ("b", CREATE, 150), ("a", PAY, 200)],
     [("success", "a", 0, 200), ("timeout", "b", 150, 1150)]),
    ("expired window settled before the event", "next",
     [("a", CREATE, 0), ("a", CREATE, 1000)],
     [("timeout", "a", 0, 1000), ("timeout", "a", 1000, 2000)]),
    ("pay without create is no result", "each", [("a", PAY, 0)], []),
    ("same time: create then pay succeeds", "each",
     [("a", CREATE, 5), ("a", PAY, 5)], [("success", "a", 5, 5)]),
    ("same time: pay then create times out", "each",
     [("a", PAY, 5), ("a", CREATE, 5)], [("timeout", "a", 5, 1005)]),
    ("timeouts of other keys come first", "each",
     [("a", CREATE, 0), ("b", CREATE, 500), ("b", PAY, 1000)],
     [("timeout", "a", 0, 1000), ("success", "b", 500, 1000)]),
    ("each: cancel closes the oldest", "each",
     [("a", CREATE, 0), ("a", CREATE, 10), ("a", CANCEL, 20), ("a", PAY, 30)],
     [("cancelled", "a", 0, 20), ("success", "a", 10, 30)]),
    ("followed-by: cancel is just another event", "followed-by",
     [("a", CREATE, 0), ("a", CANCEL, 20), ("a", PAY, 30)], [("success", "a", 0, 30)]),
]


@pytest.mark.parametrize("name,mode,events,expected", TABLE, ids=[row[0] for row in TABLE])
def test_rules(name, mode, events, expected):
    results, matcher = run(events, mode)
    assert results == expected
    assert matcher.pending == 0


def test_counters_account_for_every_create():
    events = [("a", CREATE, 0), ("a", CREATE, 10), ("a", OTHER, 20), ("a", PAY, 30),
              ("b", PAY, 40), ("c", CREATE, 50), ("c", PAY, 60)]
    _, matcher = run(events, "next")
    counts = matcher.counts()
    assert counts["creates"] == 3
    assert counts["discarded"] == 2
    assert counts["success"] == 1
    assert counts["unmatched_pays"] == 2
    assert counts["creates"] == counts["success"] + counts["timeout"] + counts["discarded"]


def test_advance_to_fires_at_deadline_not_before():
    matcher = Matcher(W)
    assert matcher.on_event("a", CREATE, 1000, b"x") == []
    assert matcher.next_deadline() == 2000
    assert matcher.advance_to(1999) == []
    assert matcher.pending == 1
    assert [short(r) for r in matcher.advance_to(2000)] == [("timeout", "a", 1000, 2000)]
    assert matcher.next_deadline() is None


def test_next_deadline_skips_resolved_orders():
    matcher = Matcher(W)
    matcher.on_event("a", CREATE, 0, b"x")
    matcher.on_event("b", CREATE, 100, b"y")
    matcher.on_event("a", PAY, 200, b"z")
    assert matcher.next_deadline() == 1100


def test_events_must_not_go_back_in_time():
    matcher = Matcher(W)
    matcher.on_event("a", CREATE, 100, b"x")
    with pytest.raises(OutOfOrderError):
        matcher.on_event("a", PAY, 99, b"y")
    matcher.advance_to(500)
    with pytest.raises(OutOfOrderError):
        matcher.on_event("a", PAY, 499, b"y")


def test_results_carry_the_original_bytes():
    matcher = Matcher(W)
    matcher.on_event("a", CREATE, 0, b'{"c":1}')
    (success,) = matcher.on_event("a", PAY, 10, b'{"p":2}')
    assert (success.create, success.pay, success.deadline) == (b'{"c":1}', b'{"p":2}', 1000)


def test_many_open_orders_of_one_key_are_fifo():
    events = [("a", CREATE, t) for t in range(0, 500, 5)] + [("a", PAY, 600)] * 3
    results, matcher = run(events, "each", end=False)
    assert results == [("success", "a", 0, 600), ("success", "a", 5, 600), ("success", "a", 10, 600)]
    assert matcher.pending == 97


def test_invalid_window():
    with pytest.raises(ValueError):
        Matcher(0)


def test_open_orders_of_a_key_switch_between_bare_and_list():
    """The per-key structure: one open order is kept bare (no list), several in a list."""
    import gc

    matcher = Matcher(W)
    matcher.on_event("a", CREATE, 0, b"first")
    assert type(matcher._open["a"]) is bytes
    gc.collect()
    assert not gc.is_tracked(matcher._open["a"])  # invisible to full collections
    matcher.on_event("a", CREATE, 10, b"second")
    matcher.on_event("a", CREATE, 20, b"third")
    assert [_unpack("a", o, W).raw for o in matcher._open["a"]] == [b"first", b"second", b"third"]
    matcher.on_event("a", PAY, 30, b"p")
    matcher.on_event("a", PAY, 40, b"p")
    assert _unpack("a", matcher._open["a"], W) == (20, "a", b"third", 0, 20 + W)
    matcher.on_event("a", PAY, 50, b"p")
    assert "a" not in matcher._open and matcher.pending == 0


@pytest.mark.parametrize(
    "created,raw,seq",
    [(0, b"{}", 0), (-62135596800000, b"x", 7), (253402300799999, b'{"k":"\xff"}', 2**32 - 1), (5, b"", 1)],
)
def test_packed_orders_round_trip(created, raw, seq):
    order = _pack(created, raw, seq)
    assert _unpack("ключ-🔑", order, 1000) == OpenOrder(created, "ключ-🔑", raw, seq, created + 1000)
    long = _pack_long(created, raw, seq, created + 7, 12)
    assert _unpack_long("ключ-🔑", long) == OpenOrder(created, "ключ-🔑", raw, seq, created + 7)
    assert _created_of(long) == created
    assert (_created_of(order), _created_raw_seq(order)) == (created, (created, raw, seq))


@pytest.mark.parametrize("key", ["a", "", "ключ-🔑", "\ud800", "k" * 70000])
def test_any_key_round_trips_through_the_matcher(key):
    """Keys are not packed into orders: any text, a lone surrogate included, comes back as
    it went in, in results and in the saved state."""
    matcher = Matcher(W)
    matcher.on_event(key, CREATE, 0, b"c")
    assert matcher.open_orders() == [OpenOrder(0, key, b"c", 0, W)]
    restored = Matcher.restore(matcher.snapshot())
    assert [result.key for result in restored.drain()] == [key]


def test_result_ids_number_a_keys_creates_within_one_millisecond():
    matcher = Matcher(W)
    out = []
    for key, kind, time in [("u1", CREATE, 5), ("u1", PAY, 5), ("u1", CREATE, 5), ("u2", CREATE, 5),
                            ("u1", CREATE, 6), ("u1", PAY, 6)]:
        out += matcher.on_event(key, kind, time, b"{}")
    out += matcher.drain()
    assert [result.id for result in out] == [
        "success:u1:5:0", "success:u1:5:1", "timeout:u2:5:0", "timeout:u1:6:0",
    ]
    assert len({result.id for result in out}) == len(out)


def test_result_ids_are_ascii_and_unambiguous_for_any_key():
    matcher = Matcher(W)
    out = matcher.on_event("a:b c/ключ", CREATE, 1, b"{}") + matcher.drain()
    assert out[0].id == "timeout:a%3Ab%20c%2F%D0%BA%D0%BB%D1%8E%D1%87:1:0"
    assert out[0].id.isascii() and '"' not in out[0].id


def test_timeline_skips_resolved_entries_and_keeps_deadline_order():
    matcher = Matcher(W)
    for time in range(0, 100, 10):
        matcher.on_event(str(time % 3), CREATE, time, b"x")
    for key in ("0", "1"):
        matcher.on_event(key, PAY, 100, b"p")
    assert [o.created for o in matcher.open_orders()] == [10, 20, 30, 40, 50, 60, 70, 80, 90][1:]
    assert matcher.next_deadline() == 1020  # 0 (key 0) and 10 (key 1) were paid
    deadlines = [r.deadline for r in matcher.drain()]
    assert deadlines == sorted(deadlines) and len(deadlines) == 8


def test_advance_with_a_limit_hands_out_a_burst_in_slices():
    matcher = Matcher(W)
    for index in range(10):
        matcher.on_event(f"k{index}", CREATE, 0, b"x")
    slices = []
    while batch := matcher.advance_to(W, limit=4):
        slices.append([r.key for r in batch])
        if len(batch) < 4:
            break
    assert slices == [["k0", "k1", "k2", "k3"], ["k4", "k5", "k6", "k7"], ["k8", "k9"]]
    assert matcher.pending == 0 and matcher.now == W


def test_a_partial_advance_leaves_time_where_it_was():
    matcher = Matcher(W)
    for index in range(3):
        matcher.on_event(f"k{index}", CREATE, index, b"x")
    assert len(matcher.advance_to(5000, limit=1)) == 1
    assert matcher.now == 2  # the other two are still due: events may not pass them yet
    (success_or_timeouts) = matcher.on_event("k9", PAY, 5000, b"p")
    assert [r.key for r in success_or_timeouts] == ["k1", "k2"]


def test_a_key_with_a_lone_surrogate_still_gets_an_ascii_id():
    matcher = Matcher(W)
    out = matcher.on_event("a\ud800", CREATE, 1, b"{}") + matcher.drain()
    assert out[0].id == "timeout:a%ED%A0%80:1:0" and out[0].id.isascii()

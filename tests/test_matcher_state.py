"""The matcher's saved state (matcher_state.py): snapshots that continue exactly, and the
incremental changes a state store applies, checked against the full picture."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.rules.events import CANCEL, CREATE, OTHER, PAY
from ordertimeout.rules.matcher import Matcher, Mode

from .helpers import W, short
from .helpers import run_matcher as run


@pytest.mark.parametrize("mode", list(Mode))
def test_snapshot_and_restore_continue_identically(mode):
    events = [("a", CREATE, 0), ("b", CREATE, 100), ("a", CREATE, 200), ("b", OTHER, 250),
              ("a", PAY, 300), ("c", CREATE, 400), ("a", PAY, 900), ("b", PAY, 950), ("c", PAY, 1300)]
    whole, _ = run(events, mode)
    for cut in range(len(events) + 1):
        first = Matcher(W, mode)
        results = []
        for key, kind, time in events[:cut]:
            results += first.on_event(key, kind, time, f"{key}/{time}".encode())
        state = first.snapshot()
        second = Matcher.restore(state)
        for key, kind, time in events[cut:]:
            results += second.on_event(key, kind, time, f"{key}/{time}".encode())
        results += second.drain()
        assert [short(r) for r in results] == whole, cut
        assert second.counts() == run(events, mode)[1].counts()


def test_result_id_numbering_survives_a_snapshot_mid_millisecond():
    first = Matcher(W)
    first.on_event("u", CREATE, 3, b"{}")
    first.on_event("u", PAY, 3, b"{}")
    second = Matcher.restore(first.snapshot())
    out = second.on_event("u", CREATE, 3, b"{}") + second.drain()
    assert [result.id for result in out] == ["timeout:u:3:1"]



events_strategy = st.lists(
    st.tuples(st.sampled_from("abc"), st.sampled_from([CREATE, CREATE, PAY, OTHER, CANCEL]),
              st.integers(0, 700), st.booleans()),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(events_strategy, st.sampled_from(list(Mode)))
def test_changes_applied_to_a_store_keep_it_equal_to_the_open_orders(events, mode):
    """A store kept by take_changes (as state.py keeps its table) always holds exactly the
    matcher's open orders at their positions, whatever happens between checkpoints."""
    matcher = Matcher(W, mode)
    store: dict[int, tuple] = {}
    synced = False
    time = 0
    for key, kind, gap, checkpoint in events:
        time += gap
        matcher.on_event(key, kind, time, f"{key}/{time}".encode())
        if not checkpoint:
            continue
        if not synced:
            matcher.take_changes()
            head, opened = matcher.numbered_open_orders()
            store, synced = {}, True
        else:
            head, opened, closed = matcher.take_changes()
            for order in closed:  # the stored order with that result id, if it was stored
                same = [p for p, o in store.items() if (o.key, o.created, o.seq) == (order.key, order.created, order.seq)]
                assert len(same) <= 1  # a result id names one order
                if same:
                    del store[same[0]]
            store = {p: o for p, o in store.items() if p >= head}
        store.update(opened)
        assert sorted(store.items()) == list(matcher.numbered_open_orders()[1])


def test_a_restore_keeps_timeouts_at_one_millisecond_in_input_order():
    def fed():
        matcher = Matcher(1, "each")
        for key in "aaaab":
            matcher.on_event(key, CREATE, 0, key.encode())
        return matcher

    whole = [(r.key, r.seq) for r in fed().drain()]
    assert whole == [("a", 0), ("a", 1), ("a", 2), ("a", 3), ("b", 0)]
    restored = Matcher.restore(fed().snapshot())
    assert [(r.key, r.seq) for r in restored.drain()] == whole


def test_a_snapshot_is_a_copy_that_later_events_do_not_change():
    matcher = Matcher(W)
    matcher.on_event("a", CREATE, 5, b"{}")
    state = matcher.snapshot()
    matcher.on_event("b", CREATE, 5, b"{}")
    assert state["tick"] == [5, {"a": 1}]
    assert [order[1] for order in state["open"]] == ["a"]


@settings(max_examples=300, deadline=None)
@given(events_strategy, st.sampled_from(list(Mode)), st.integers(0, 40), st.integers(1, 900))
def test_any_cut_through_a_snapshot_gives_the_same_results_in_the_same_order(events, mode, cut, within):
    def results(matcher, part, time):
        out = []
        for key, kind, gap, _ in part:
            time += gap % 3 * (gap % 200)  # many events share a millisecond
            out += matcher.on_event(key, kind, time, f"{key}/{time}".encode())
        return out, time

    uncut = Matcher(within, mode)
    expected = results(uncut, events, 0)[0] + uncut.drain()
    first = Matcher(within, mode)
    before, time = results(first, events[:cut], 0)
    second = Matcher.restore(first.snapshot())
    after, _ = results(second, events[cut:], time)
    assert before + after + second.drain() == expected


def test_changes_after_forget_changes_are_complete_with_reminders():
    """A host that restored the open orders starts tracking with forget_changes(); with
    lanes (reminders, windows of their own) the orders opened after it must still be
    reported (a kafka changelog missed every one of them: restarts restored nothing)."""
    matcher = Matcher(1000, "each", remind=(100,))
    for key, time in (("a", 0), ("b", 10)):
        matcher.on_event(key, CREATE, time, b"{}")
    matcher.forget_changes()
    matcher.on_event("c", CREATE, 20, b"{}")
    matcher.on_event("a", PAY, 30, b"{}")
    _, opened, closed = matcher.take_changes()
    assert [order.key for _, order in opened] == ["c"]
    assert [order.key for order in closed] == ["a"]

"""Windows of their own and reminders (issue 21), at the matcher: table-driven cases at the
exact boundary milliseconds, and Hypothesis properties against a reference written apart
from the code (a heap of timers over the rules of docs/semantics.md)."""

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.rules.events import CANCEL, CREATE, OTHER, PAY, create_kind
from ordertimeout.rules.matcher import Cancelled, Matcher, Mode, PaidLate, Reminder, Success, Timeout

KINDS = {"pay": PAY, "other": OTHER, "cancel": CANCEL}


def feed(matcher, events):
    """(key, type, time[, window]) events through the matcher, then the end of input."""
    results = []
    for key, kind, time, *window in events:
        code = create_kind(window[0], matcher.within) if kind == "create" else KINDS[kind]
        results += matcher.on_event(key, code, time, b"{}")
    return results + matcher.drain()


def plain(results):
    """Results as comparable tuples."""
    out = []
    for r in results:
        if type(r) is Success:
            out.append(("success", r.key, r.created, r.paid, r.deadline))
        elif type(r) is Timeout:
            out.append(("timeout", r.key, r.created, r.deadline))
        elif type(r) is Reminder:
            out.append(("reminder", r.key, r.created, r.due, r.stage))
        elif type(r) is Cancelled:
            out.append(("cancelled", r.key, r.created, r.cancelled))
        elif type(r) is PaidLate:
            out.append(("paid_late", r.key, r.created, r.paid))
    return out


# -- boundaries, at the millisecond ----------------------------------------------------

W = 100


@pytest.mark.parametrize(
    "events,remind,before,expected",
    [
        # a pay 1 ms before its own deadline matches, at the deadline it does not
        ([("a", "create", 0, 30), ("a", "pay", 29)], (), (), [("success", "a", 0, 29, 30)]),
        ([("a", "create", 0, 30), ("a", "pay", 30)], (), (), [("timeout", "a", 0, 30)]),
        # a short window times out before an older long one of the same key
        ([("a", "create", 0, 50), ("a", "create", 10, 20), ("a", "other", 30)], (), (),
         [("timeout", "a", 10, 30), ("timeout", "a", 0, 50)]),
        # ... and a pay then closes the oldest still open
        ([("a", "create", 0, 50), ("a", "create", 10, 20), ("a", "pay", 30)], (), (),
         [("timeout", "a", 10, 30), ("success", "a", 0, 30, 50)]),
        # a reminder at exactly the pay's time comes first; one ms after, the pay wins
        ([("a", "create", 0, W), ("a", "pay", 40)], (40,), (), [("reminder", "a", 0, 40, 1), ("success", "a", 0, 40, W)]),
        ([("a", "create", 0, W), ("a", "pay", 39)], (40,), (), [("success", "a", 0, 39, W)]),
        # dues at the create or at the deadline do not count; equal dues are one reminder
        ([("a", "create", 0, W)], (W, 60, 150), (W, 40),  [("reminder", "a", 0, 60, 1), ("timeout", "a", 0, W)]),
        # stages are ranks: after and before mixed
        ([("a", "create", 0, W)], (70,), (90, 50), [("reminder", "a", 0, 10, 1), ("reminder", "a", 0, 50, 2),
                                                     ("reminder", "a", 0, 70, 3), ("timeout", "a", 0, W)]),
        # a reminder of a window too short for it is not due
        ([("a", "create", 0, 30)], (40,), (), [("timeout", "a", 0, 30)]),
        # timers of one time: by created time, then input order; all before the event
        ([("b", "create", 0, 60), ("a", "create", 10, 50), ("c", "create", 10, W), ("c", "pay", 60)], (50,), (),
         [("reminder", "b", 0, 50, 1), ("timeout", "b", 0, 60), ("timeout", "a", 10, 60), ("reminder", "c", 10, 60, 1),
          ("success", "c", 10, 60, 110)]),
    ],
)
def test_boundaries(events, remind, before, expected):
    matcher = Matcher(W, "each", remind=remind, remind_before=before)
    assert plain(feed(matcher, events)) == expected


def test_reminders_only_while_open_and_each_mode_keeps_its_rules():
    matcher = Matcher(W, "next", remind=(50,))
    # next: the second create discards the first; only the second is reminded
    got = plain(feed(matcher, [("a", "create", 0, W), ("a", "create", 10, 30), ("a", "pay", 39)]))
    assert got == [("success", "a", 10, 39, 40)]
    assert matcher.discarded == 1 and matcher.reminder == 0
    matcher = Matcher(W, "followed-by", remind=(20,))
    got = plain(feed(matcher, [("a", "create", 0, W), ("a", "create", 10, 30), ("a", "pay", 25)]))
    assert got == [("reminder", "a", 0, 20, 1), ("success", "a", 0, 25, W), ("success", "a", 10, 25, 40)]


def test_cancel_and_paid_late_use_the_orders_own_deadline():
    matcher = Matcher(W, "each", paid_late=1000, remind_before=(10,))
    got = plain(feed(matcher, [("a", "create", 0, 30), ("b", "create", 0, 300), ("b", "cancel", 5), ("a", "pay", 31)]))
    assert got == [("cancelled", "b", 0, 5), ("reminder", "a", 0, 20, 1), ("timeout", "a", 0, 30), ("paid_late", "a", 0, 31)]
    assert matcher.counts()["reminder"] == 1 and matcher.reminders_by_stage() == {1: 1}


def test_time_advances_to_reminders_and_limit_slices_them():
    matcher = Matcher(W, remind=(10, 20))
    matcher.on_event("a", CREATE, 0, b"{}")
    matcher.on_event("b", CREATE, 0, b"{}")
    assert matcher.next_deadline() == 10
    first = matcher.advance_to(25, limit=3)
    assert [(r.key, r.stage) for r in first] == [("a", 1), ("b", 1), ("a", 2)]
    assert [(r.key, r.stage) for r in matcher.advance_to(25)] == [("b", 2)]
    assert matcher.next_deadline() == W


# -- the reference: a heap of timers ----------------------------------------------------


def reminder_times(created, deadline, remind, before):
    dues = {created + d for d in remind} | {deadline - d for d in before}
    return sorted(due for due in dues if created < due < deadline)


def reference(events, mode, remind=(), before=()):
    """Results of time-ordered (key, type, time, window) events, written from the rules:
    a heap of (time, created, input index, what) timers fired before every event at or
    after their time, while their order is open."""
    timers, open_orders, out = [], [], []  # open_orders: [key, created, deadline, index] oldest first

    def fire_until(time):
        while timers and timers[0][0] <= time:
            due, created, index, stage, order = heapq.heappop(timers)
            if order not in open_orders:
                continue
            if stage == 0:
                open_orders.remove(order)
                out.append(("timeout", order[0], created, order[2]))
            else:
                out.append(("reminder", order[0], created, due, stage))

    for index, (key, kind, time, *window) in enumerate(events):
        fire_until(time)
        mine = [order for order in open_orders if order[0] == key]
        if kind == "create":
            if mode == "next":
                for order in mine:
                    open_orders.remove(order)
            order = [key, time, time + window[0], index]
            open_orders.append(order)
            heapq.heappush(timers, (order[2], time, index, 0, order))
            for stage, due in enumerate(reminder_times(time, order[2], remind, before), 1):
                heapq.heappush(timers, (due, time, index, stage, order))
        elif kind == "pay" and mine:
            for order in (mine if mode == "followed-by" else mine[:1]):
                open_orders.remove(order)
                out.append(("success", key, order[1], time, order[2]))
        elif kind == "other" and mode == "next":
            for order in mine:
                open_orders.remove(order)
    fire_until(float("inf"))
    return out


def stream(max_size=40):
    """Random (key, type, gap, window) steps; small gaps and windows: ties at every boundary."""
    return st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from(["create", "create", "pay", "other"]),
                  st.integers(0, 25), st.sampled_from([W, 20, 35, 50, 1, 7, 64])),
        max_size=max_size,
    )


def timed(steps):
    time, events = 0, []
    for key, kind, gap, window in steps:
        time += gap
        events.append((key, kind, time, window) if kind == "create" else (key, kind, time))
    return events


durations = st.lists(st.integers(1, 110), max_size=3)


@settings(max_examples=400, deadline=None)
@given(stream(), st.sampled_from(list(Mode)), durations, durations)
def test_matcher_agrees_with_the_heap_of_timers(steps, mode, remind, before):
    events = timed(steps)
    matcher = Matcher(W, mode, windows=(20, 35), remind=tuple(remind), remind_before=tuple(before))
    assert plain(feed(matcher, events)) == reference(events, mode.value, remind, before)


@settings(max_examples=200, deadline=None)
@given(stream(), st.sampled_from(list(Mode)), durations, durations)
def test_reminders_change_nothing_else(steps, mode, remind, before):
    events = timed(steps)
    with_reminders = plain(feed(Matcher(W, mode, remind=tuple(remind), remind_before=tuple(before)), events))
    without = plain(feed(Matcher(W, mode), events))
    assert [r for r in with_reminders if r[0] != "reminder"] == without


@settings(max_examples=200, deadline=None)
@given(stream(), st.sampled_from(list(Mode)), st.integers(1, 80))
def test_all_windows_equal_is_plain_within(steps, mode, window):
    events = [(key, kind, time, window) if kind == "create" else (key, kind, time)
              for key, kind, time, *_ in timed(steps)]
    # windows of their own, all equal (lanes), against the plain one-window matcher
    lanes = Matcher(W if window != W else W + 1, mode, windows=(window,))
    assert plain(feed(lanes, events)) == plain(feed(Matcher(window, mode), events))


@settings(max_examples=200, deadline=None)
@given(stream(30), st.sampled_from(list(Mode)), durations, durations, st.integers(1, 30))
def test_a_snapshot_anywhere_goes_on_exactly(steps, mode, remind, before, cut):
    """Save and restore (a restart) at any point: the same results, reminders once."""
    events = timed(steps)
    options = dict(windows=(20, 35), remind=tuple(remind), remind_before=tuple(before))
    whole = plain(feed(Matcher(W, mode, **options), events))
    first = Matcher(W, mode, **options)
    results = []
    cut = min(cut, len(events))
    for key, kind, time, *window in events[:cut]:
        code = create_kind(window[0], W) if kind == "create" else KINDS[kind]
        results += first.on_event(key, code, time, b"{}")
    second = Matcher.restore(first.snapshot())
    assert plain(results + feed(second, events[cut:])) == whole


@settings(max_examples=200, deadline=None)
@given(stream(), st.sampled_from(list(Mode)), st.sampled_from([None, 30, 200]), st.integers(1, 6), st.integers(0, 40))
def test_the_first_window_of_its_own_switches_to_lanes_mid_run(steps, mode, paid_late, every, plain_steps):
    """A plain matcher meets its first create with a window of its own mid-run (and
    mid-batch: events go in batches of ``every``, as a pipeline feeds them): it moves its
    orders (and --paid-late's memory, with orders already paid late) over and goes on
    exactly as one with lanes from the start; the changes it reports for checkpoints
    (after each batch) always add up to its open orders."""
    # The first ``plain_steps`` creates have the run's window: the switch comes late
    # enough for timeouts, and payments after them, to come before it.
    steps = [(key, kind, gap, W if index < plain_steps else window)
             for index, (key, kind, gap, window) in enumerate(steps)]
    events = timed(steps)
    started = Matcher(W, mode, paid_late, windows=(1,))  # lanes from the start
    switched = Matcher(W, mode, paid_late)
    saved: dict = {}  # what a store keeps: position -> (key, created, seq, deadline)
    switched.take_changes()
    got, expected = [], []
    coded = [(key, create_kind(window[0], W) if kind == "create" else KINDS[kind], time, b"{}")
             for key, kind, time, *window in events]
    for start in range(0, len(coded), every):
        got += switched.on_events(coded[start:start + every])
        expected += started.on_events(coded[start:start + every])
        head, opened, closed = switched.take_changes()
        for order in closed:
            position = next((p for p, o in saved.items() if o == (order.key, order.created, order.seq)), None)
            if position is not None:
                del saved[position]
        saved = {p: o for p, o in saved.items() if p >= head}
        saved.update((p, (o.key, o.created, o.seq)) for p, o in opened)
        assert sorted(saved.values()) == sorted((o.key, o.created, o.seq) for o in switched.open_orders())
    assert plain(got + switched.drain()) == plain(expected + started.drain())


def test_an_order_paid_in_the_batch_that_switches_to_lanes_is_reported_closed():
    """Found by the state-file property: the switch renames the orders closed since the
    last take_changes; one paid later in the same batch went to the old list, so a state
    file kept it open, and after a restart it timed out although paid."""
    matcher = Matcher(W, Mode.EACH)
    matcher.take_changes()
    matcher.on_events([("a", CREATE, 0, b"{}")])
    _, opened, _ = matcher.take_changes()
    assert [(order.key, order.created) for _, order in opened] == [("a", 0)]
    matcher.on_events([("b", create_kind(20, W), 5, b"{}"), ("a", PAY, 10, b"{}")])
    _, opened, closed = matcher.take_changes()
    assert [(order.key, order.created) for order in closed] == [("a", 0)]
    assert [(order.key, order.created) for _, order in opened] == [("b", 5)]


def test_a_window_of_its_own_after_a_payment_paid_late_switches_to_lanes():
    """Found by the state-file property: the timed-out order that was paid late is still
    in --paid-late's line (dropped lazily) when lanes take over; it stays paid."""
    matcher = Matcher(1000, Mode.EACH, 500)
    results = feed(matcher, [("u0", "create", 0, 1000), ("u1", "create", 0, 1000), ("u0", "pay", 1100),
                             ("u2", "create", 1100, 300), ("u1", "pay", 1200), ("u0", "pay", 1300)])
    assert plain(results) == plain([
        Timeout("u0", 0, 1000, b"{}"), Timeout("u1", 0, 1000, b"{}"),
        PaidLate("u0", 0, 1000, 1100, b"{}", b"{}"),
        PaidLate("u1", 0, 1000, 1200, b"{}", b"{}"),
        Timeout("u2", 1100, 1400, b"{}"),
    ])

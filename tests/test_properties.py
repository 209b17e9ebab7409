"""Hypothesis invariants, checked against a brute-force reference written independently."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.rules.events import CREATE, OTHER, PAY
from ordertimeout.rules.matcher import Matcher, Mode, Success, Timeout

from .helpers import event, run_event_time

KINDS = {"create": CREATE, "pay": PAY, "other": OTHER}

events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["create", "pay", "other"]),
        st.integers(min_value=0, max_value=60),  # small gaps: many ties and boundary hits
    ),
    max_size=40,
)


def as_timed(gaps):
    """(key, type, gap) triples to (key, type, time) with non-decreasing times."""
    time, timed = 0, []
    for key, kind, gap in gaps:
        time += gap
        timed.append((key, kind, time))
    return timed


def reference(events, within, mode):
    """Brute force over time-ordered (key, type, time) events; results in canonical order.

    Sort key: (time, 0 for a timeout / 1 otherwise, input position of what decided it).
    """
    open_orders = []  # [key, created, index]
    results = []
    for index, (key, kind, time) in enumerate(events):
        for order in [o for o in open_orders if o[1] + within <= time]:
            open_orders.remove(order)
            results.append(((order[1] + within, 0, order[2]), ("timeout", order[0], order[1])))
        mine = [o for o in open_orders if o[0] == key]
        if kind == "create":
            if mode == "next":
                for order in mine:
                    open_orders.remove(order)
            open_orders.append([key, time, index])
        elif kind == "pay" and mine:
            chosen = mine if mode == "followed-by" else mine[:1]
            for order in chosen:
                open_orders.remove(order)
                results.append(((time, 1, index), ("success", key, order[1], time)))
        elif kind == "other" and mode == "next":
            for order in mine:
                open_orders.remove(order)
    for order in open_orders:
        results.append(((order[1] + within, 0, order[2]), ("timeout", order[0], order[1])))
    results.sort(key=lambda pair: pair[0])
    return [result for _, result in results]


def matcher_results(events, within, mode):
    matcher = Matcher(within, mode)
    results = []
    for key, kind, time in events:
        results += matcher.on_event(key, KINDS[kind], time, b"{}")
    results += matcher.drain()
    out = []
    for r in results:
        if isinstance(r, Success):
            out.append(("success", r.key, r.created, r.paid))
        else:
            out.append(("timeout", r.key, r.created))
    return out, matcher, results


@settings(max_examples=300)
@given(events_strategy, st.integers(min_value=1, max_value=80), st.sampled_from(list(Mode)))
def test_matcher_agrees_with_reference(gaps, within, mode):
    events = as_timed(gaps)
    got, _, _ = matcher_results(events, within, mode.value)
    assert got == reference(events, within, mode.value)


@settings(max_examples=300)
@given(events_strategy, st.integers(min_value=1, max_value=80))
def test_each_gives_one_result_per_create_in_canonical_order(gaps, within):
    events = as_timed(gaps)
    _, matcher, results = matcher_results(events, within, "each")
    creates = sum(1 for _, kind, _ in events if kind == "create")
    assert len(results) == creates == matcher.success + matcher.timeout
    assert matcher.pending == 0
    order_keys = [(r.time, 0 if isinstance(r, Timeout) else 1) for r in results]
    assert order_keys == sorted(order_keys)
    for r in results:
        assert r.deadline == r.created + within
        if isinstance(r, Success):
            assert r.created <= r.paid < r.deadline  # success only before the deadline
    paid_windows = [r for r in results if isinstance(r, Success)]
    pays = sum(1 for _, kind, _ in events if kind == "pay")
    assert len(paid_windows) + matcher.unmatched_pays == pays


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["create", "pay", "other"]),
                  st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=50)),
        max_size=30,
    ),
    st.integers(min_value=1, max_value=120),
    st.integers(min_value=0, max_value=60),
    st.sampled_from(list(Mode)),
)
def test_out_of_order_within_lateness_is_as_if_sorted(raw_events, within, lateness, mode):
    """Event time: results equal the reference on the non-late events, stably sorted by time."""
    base, arrived = 0, []
    for key, kind, gap, jitter in raw_events:
        base += gap
        arrived.append((key, kind, max(0, base - jitter)))
    # Late by the definition: time <= watermark = (largest time so far) - lateness - 1.
    on_time, largest = [], None
    for key, kind, time in arrived:
        if largest is not None and time <= largest - lateness - 1:
            continue
        on_time.append((key, kind, time))
        largest = time if largest is None else max(largest, time)
    expected = reference(sorted(on_time, key=lambda e: e[2]), within, mode.value)
    results, pipeline = run_event_time(
        [event(key, kind, time) for key, kind, time in arrived], within, mode.value, lateness
    )
    got = [
        ("success", r["key"], r["created"], r["paid"]) if r["result"] == "success"
        else ("timeout", r["key"], r["created"])
        for r in results
    ]
    assert got == expected
    assert pipeline.late == len(arrived) - len(on_time)

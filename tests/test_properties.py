"""Hypothesis invariants, checked against a brute-force reference written independently."""

import datetime
import pathlib

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ordertimeout import EventSchema
from ordertimeout.cli import main

from ordertimeout.rules.events import CANCEL, CREATE, OTHER, PAY
from ordertimeout.rules.matcher import Cancelled, Matcher, Mode, PaidLate, Success, Timeout

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


def reference(events, within, mode, paid_late=None, cancels=False):
    """Brute force over time-ordered (key, type, time) events; results in canonical order.

    Written from SEMANTICS.md and docs/semantics.md, apart from the matcher. Types:
    create, pay, cancel, and any other (a page view...): a cancel closes the key's oldest open order as
    cancelled when ``cancels`` (``--cancel-type``, which ``each`` mode alone has);
    otherwise it is just another type. ``paid_late`` (``--paid-late``, ms): a timed-out
    order is remembered until its deadline + paid_late (exclusive); a pay that finds no
    open order of its key closes the oldest remembered one (every one in followed-by).

    Results: ("success", key, created, paid), ("timeout", key, created),
    ("cancelled", key, created, cancelled), ("paid_late", key, created, paid).
    Sort key: (time, 0 for a timeout / 1 otherwise, input position of what decided it).
    """
    cancels = cancels and mode == "each"
    open_orders = []  # [key, created, index], in input order
    remembered = []  # timed-out orders a late pay may still close, in the order they timed out
    results = []

    def time_out(now):
        """Every open order whose deadline has come by ``now``, in deadline order."""
        due = sorted((o for o in open_orders if o[1] + within <= now), key=lambda o: (o[1] + within, o[2]))
        for order in due:
            open_orders.remove(order)
            results.append(((order[1] + within, 0, order[2]), ("timeout", order[0], order[1])))
            if paid_late is not None:
                remembered.append(order)

    for index, (key, kind, time) in enumerate(events):
        time_out(time)  # expired windows are settled before the event
        if paid_late is not None:
            remembered[:] = [o for o in remembered if time < o[1] + within + paid_late]
        if kind not in ("create", "pay", "cancel") or kind == "cancel" and not cancels:
            kind = "other"  # any other type (a page view...)
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
        elif kind == "pay":
            late = [o for o in remembered if o[0] == key]
            for order in late if mode == "followed-by" else late[:1]:
                remembered.remove(order)
                results.append(((time, 1, index), ("paid_late", key, order[1], time)))
        elif kind == "cancel" and mine:
            open_orders.remove(mine[0])
            results.append(((time, 1, index), ("cancelled", key, mine[0][1], time)))
        elif kind == "other" and mode == "next":
            for order in mine:
                open_orders.remove(order)
    time_out(float("inf"))
    results.sort(key=lambda pair: pair[0])
    return [result for _, result in results]


def brief_tuple(result):
    """A result as the reference writes it, from a result object or its JSON dict."""
    if not isinstance(result, dict):
        result = result._asdict() | {"result": type(result).__name__}
    kind = {"Success": "success", "Timeout": "timeout", "Cancelled": "cancelled", "PaidLate": "paid_late"}.get(
        result["result"], result["result"])
    if kind == "timeout":
        return (kind, result["key"], result["created"])
    return (kind, result["key"], result["created"], result["cancelled" if kind == "cancelled" else "paid"])


def matcher_results(events, within, mode, paid_late=None, cancels=False):
    matcher = Matcher(within, mode, paid_late)
    kinds = {**KINDS, "cancel": CANCEL if cancels else OTHER}
    results = []
    for key, kind, time in events:
        results += matcher.on_event(key, kinds[kind], time, b"{}")
    results += matcher.drain()
    return [brief_tuple(r) for r in results], matcher, results


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
    got = [brief_tuple(r) for r in results]
    assert got == expected
    assert pipeline.late == len(arrived) - len(on_time)


# -- cancels and --paid-late -----------------------------------------------------------

# Gaps, windows and --paid-late from one small set of values, so times often land exactly
# on a deadline or on deadline + paid_late: the boundaries where the rules decide.
MOMENTS = [1, 5, 10, 30, 60]
all_kinds_strategy = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["create", "create", "pay", "pay", "cancel", "other"]),
        st.sampled_from([0, 0, *MOMENTS]),
    ),
    max_size=40,
)
within_strategy = st.sampled_from(MOMENTS) | st.integers(min_value=1, max_value=80)
paid_late_strategy = st.none() | st.sampled_from(MOMENTS) | st.integers(min_value=1, max_value=100)


@settings(max_examples=500)
@given(all_kinds_strategy, within_strategy, st.sampled_from(list(Mode)), paid_late_strategy, st.booleans())
# Two timed-out orders of a key, then one pay in followed-by: both are paid late.
@example([("a", "create", 0), ("a", "create", 1), ("a", "pay", 20)], 10, Mode.FOLLOWED_BY, 30, False)
# A cancel closes the oldest open order of its key.
@example([("a", "create", 0), ("a", "create", 1), ("a", "cancel", 1)], 10, Mode.EACH, None, True)
# A pay exactly at deadline + paid_late: too late even for that.
@example([("a", "create", 0), ("a", "pay", 15)], 10, Mode.EACH, 5, False)
def test_matcher_agrees_with_reference_on_cancels_and_paid_late(gaps, within, mode, paid_late, cancels):
    events = as_timed(gaps)
    got, _, _ = matcher_results(events, within, mode.value, paid_late, cancels)
    assert got == reference(events, within, mode.value, paid_late, cancels)


@settings(max_examples=300)
@given(all_kinds_strategy, within_strategy, paid_late_strategy)
def test_each_accounts_for_every_create_pay_and_cancel(gaps, within, paid_late):
    """One result per create (success, timeout or cancelled); a pay is a success, a late
    pay of one timed-out order, or unmatched; a cancel cancels one order or is unmatched."""
    events = as_timed(gaps)
    _, matcher, results = matcher_results(events, within, "each", paid_late, cancels=True)
    count = {kind: sum(1 for _, k, _ in events if k == kind) for kind in ("create", "pay", "cancel")}
    by_kind = {kind: [r for r in results if type(r) is kind] for kind in (Success, Timeout, Cancelled, PaidLate)}
    assert len(by_kind[Success]) + len(by_kind[Timeout]) + len(by_kind[Cancelled]) == count["create"]
    assert len(by_kind[Success]) + len(by_kind[PaidLate]) + matcher.unmatched_pays == count["pay"]
    assert len(by_kind[Cancelled]) + matcher.unmatched_cancels == count["cancel"]
    timed_out = {(r.key, r.created, r.seq) for r in by_kind[Timeout]}
    late = [(r.key, r.created, r.seq) for r in by_kind[PaidLate]]
    assert len(set(late)) == len(late) and set(late) <= timed_out  # each paid late once, after its timeout
    for r in by_kind[PaidLate]:
        assert r.deadline <= r.paid < r.deadline + paid_late
    for r in by_kind[Cancelled]:
        assert r.created <= r.cancelled < r.deadline


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["create", "pay", "cancel", "other"]),
                  st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=50)),
        max_size=30,
    ),
    st.integers(min_value=1, max_value=120),
    st.integers(min_value=0, max_value=60),
    st.sampled_from(list(Mode)),
    paid_late_strategy,
)
def test_parsed_lines_out_of_order_agree_with_reference_on_cancels_and_paid_late(raw_events, within, lateness, mode,
                                                                                  paid_late):
    """The whole event-time pipeline (parser, watermark, reorder buffer, matcher) on JSON
    lines with cancels (--cancel-type in each mode) and --paid-late."""
    base, arrived = 0, []
    for key, kind, gap, jitter in raw_events:
        base += gap
        arrived.append((key, kind, max(0, base - jitter)))
    on_time, largest = [], None
    for key, kind, time in arrived:
        if largest is not None and time <= largest - lateness - 1:
            continue  # late: at or before the watermark
        on_time.append((key, kind, time))
        largest = time if largest is None else max(largest, time)
    cancels = mode is Mode.EACH
    expected = reference(sorted(on_time, key=lambda e: e[2]), within, mode.value, paid_late, cancels)
    schema = EventSchema(cancel_type="cancel" if cancels else None)
    results, pipeline = run_event_time([event(key, kind, time) for key, kind, time in arrived], within, mode.value,
                                       lateness, schema, paid_late)
    assert [brief_tuple(r) for r in results] == expected
    assert pipeline.late == len(arrived) - len(on_time)


# -- the sample data -------------------------------------------------------------------

SAMPLE = pathlib.Path(__file__).parent.parent / "sample_data" / "orders.jsonl"


def sample_events():
    """The sample's events as (key, type, ms), read here without the tool's parser."""
    events = []
    for line in SAMPLE.read_bytes().splitlines():
        record = orjson.loads(line)
        moment = datetime.datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
        events.append((record["userId"], record["type"], round(moment.timestamp() * 1000)))
    return events


def test_the_sample_expected_output_is_the_reference_result():
    expected = [orjson.loads(line) for line in SAMPLE.with_name("orders.expected.jsonl").read_bytes().splitlines()]
    assert [brief_tuple(r) for r in expected] == reference(sample_events(), 15 * 60_000, "each")
    assert all(r["deadline"] == r["created"] + 15 * 60_000 for r in expected)


@pytest.mark.parametrize("mode", [mode.value for mode in Mode])
@pytest.mark.parametrize("paid_late", [None, 60_000, 10 * 60_000])
def test_the_sample_through_the_command_line_is_the_reference_result(mode, paid_late):
    options = ["--paid-late", f"{paid_late}ms"] if paid_late else []
    outcome = CliRunner().invoke(main, ["watch", str(SAMPLE), "--within", "15m", "--match", mode, "--json", "-q",
                                        *options])
    assert outcome.exit_code == 0, outcome.stderr
    got = [brief_tuple(orjson.loads(line)) for line in outcome.stdout.splitlines()]
    assert got == reference(sample_events(), 15 * 60_000, mode, paid_late)

"""A restored state file stays in sync with its matcher: checkpoints after a restart write
what changed, never every open order again, and the file always holds exactly the open
orders (the state store, ordertimeout.state.store)."""

import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.state.store import StateError, StateStore

from .helpers import event

import pytest

CONFIG = {"key": "userId", "within_ms": 1000, "match": "each"}


#: How orders get their deadlines: all the run's window (the plain timeline); some with a
#: deadline of their own (a "due" field: lanes from the first of them, mid-run); or
#: reminders (lanes from the start).
DEADLINES = {
    "plain": ({}, {}),
    "due": ({"deadline_field": "due", "within": 1000}, {}),
    "remind": ({}, {"remind": (300,), "remind_before": (100,)}),
}


def new_pipeline(mode="each", paid_late=None, lateness=0, deadlines="plain"):
    schema_options, matcher_options = DEADLINES[deadlines]
    return Pipeline(EventParser(EventSchema(**schema_options)), Matcher(1000, mode, paid_late, **matcher_options),
                    time_mode=TimeMode.EVENT, lateness=lateness)


def file_orders(where):
    """The open orders in a state file (by path), or through a store's own connection (the
    file is locked while a store has it open)."""
    if isinstance(where, StateStore):
        return sorted(where.connection.execute("SELECT key, created, seq FROM open_orders"))
    connection = sqlite3.connect(where)
    try:
        return sorted(connection.execute("SELECT key, created, seq FROM open_orders"))
    finally:
        connection.close()


def matcher_orders(pipeline):
    return sorted((order.key, order.created, order.seq) for order in pipeline.matcher.open_orders())


@pytest.mark.parametrize("chunk", [65_536, 7])
@pytest.mark.parametrize("deadlines", DEADLINES)
def test_a_restart_with_nothing_new_writes_no_open_order_again(tmp_path, monkeypatch, deadlines, chunk):
    # Read in chunks of 7 too: a key's orders then span chunks.
    monkeypatch.setattr("ordertimeout.state.store._RestoredOrders.CHUNK", chunk)
    path = str(tmp_path / "state.db")
    first = new_pipeline(deadlines=deadlines)
    for i in range(2000):
        # Every third order repeats a key (two open orders on one key); with a "due"
        # field every fifth has a deadline of its own.
        due = {"due": i // 10 + 700} if deadlines == "due" and i % 5 == 0 else {}
        first.feed(event(f"u{i - i % 3 // 2}", "create", i // 10, **due), 0)
    store = StateStore(path, CONFIG)
    store.open()
    store.save(first, {})
    store.close()

    again = StateStore(path, CONFIG)
    restored = new_pipeline(deadlines=deadlines)
    restored.restore(again.open()["pipeline"])
    before = again.connection.total_changes
    again.save(restored, {})
    written = again.connection.total_changes - before
    again.close()
    assert written <= 5, written  # the meta row, not 2,000 deletes and 2,000 inserts
    assert file_orders(path) == matcher_orders(first) == matcher_orders(restored)
    assert len(matcher_orders(first)) == 2000
    # The same orders in the same order: each key's oldest first, and in deadline order.
    assert restored.matcher.open_orders() == first.matcher.open_orders()
    assert restored.finish() == first.finish()


def test_the_open_orders_are_read_while_the_store_is_open(tmp_path):
    path = str(tmp_path / "state.db")
    pipeline = new_pipeline()
    pipeline.feed(event("u1", "create", 5), 0)
    store = StateStore(path, CONFIG)
    store.open()
    store.save(pipeline, {})
    store.close()
    reopened = StateStore(path, CONFIG)
    checkpoint = reopened.open()
    reopened.close()
    with pytest.raises(StateError, match="restore them before close"):
        new_pipeline().restore(checkpoint["pipeline"])


KINDS = ["create", "create", "pay", "cancel", "other"]


@st.composite
def runs_of_events(draw):
    """Events in time order (ties at every boundary) on a few keys, cut into runs, each
    run with the points after which it checkpoints."""
    count = draw(st.integers(1, 60))
    times, now = [], 0
    for _ in range(count):
        now += draw(st.sampled_from([0, 0, 1, 250, 999, 1000, 1001]))
        times.append(now)
    events = []
    for at in times:
        kind = draw(st.sampled_from(KINDS))
        # Some creates have a deadline of their own (read where the schema has the field).
        due = {"due": at + draw(st.sampled_from([1, 300, 1000, 2500]))} if kind == "create" and draw(st.booleans()) else {}
        events.append(event(f"u{draw(st.integers(0, 3))}", kind, at, **due))
    cuts = sorted(draw(st.lists(st.integers(0, count), max_size=4)))
    bounds = [0, *cuts, count]
    runs = [events[a:b] for a, b in zip(bounds, bounds[1:])]
    saves = [sorted(draw(st.lists(st.integers(0, len(run)), max_size=3))) for run in runs]
    return events, runs, saves


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=runs_of_events(), mode=st.sampled_from(["each", "next", "followed-by"]),
       paid_late=st.sampled_from([None, 500]), lateness=st.sampled_from([0, 300]),
       deadlines=st.sampled_from(list(DEADLINES)))
def test_runs_through_one_state_file_give_the_results_of_one_run(tmp_path_factory, case, mode, paid_late, lateness,
                                                                 deadlines):
    events, runs, saves = case
    path = str(tmp_path_factory.mktemp("sync") / "state.db")
    config = {**CONFIG, "match": mode, "paid_late_ms": paid_late, "lateness_ms": lateness, "deadlines": deadlines}
    whole = new_pipeline(mode, paid_late, lateness, deadlines)
    expected = [result for line in events for result in whole.feed(line, 0)] + whole.finish()

    got = []
    for run, save_points in zip(runs, saves):
        store = StateStore(path, config)
        checkpoint = store.open()
        pipeline = new_pipeline(mode, paid_late, lateness, deadlines)
        if checkpoint is not None:
            pipeline.restore(checkpoint["pipeline"])
            assert file_orders(store) == matcher_orders(pipeline)
        for index, line in enumerate(run):
            got += pipeline.feed(line, 0)
            if index + 1 in save_points:
                store.save(pipeline, {})
                assert file_orders(store) == matcher_orders(pipeline)
        store.save(pipeline, {})  # every run ends with a checkpoint, as the runtime's do
        assert file_orders(store) == matcher_orders(pipeline)
        store.close()

    store = StateStore(path, config)
    final = new_pipeline(mode, paid_late, lateness, deadlines)
    checkpoint = store.open()
    if checkpoint is not None:
        final.restore(checkpoint["pipeline"])
    store.close()
    got += final.finish()
    assert [tuple(result) for result in got] == [tuple(result) for result in expected]

"""The outbox: in memory, and in the state file written inside the checkpoint's transaction."""

import os
import random
import sqlite3
import stat
import time

import orjson
import pytest
from click.testing import CliRunner

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.cli import main
from ordertimeout.notify.delivery import Outcome, after_failure
from ordertimeout.notify.outbox import MemoryOutbox, OutboxError, entries_for
from ordertimeout.notify.sqlite_outbox import SqliteOutbox
from ordertimeout.notify.outbox_file import read_rows, retry_dead
from ordertimeout.outputs.sinks import json_line
from ordertimeout.state.store import StateError, StateStore

from .helpers import event

CONFIG = {"key": "userId", "within_ms": 1000, "match": "each"}


def decided(lines):
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(1000), time_mode=TimeMode.EVENT)
    results = []
    for line in lines:
        results += pipeline.feed(line, 0)
    return pipeline, results + pipeline.finish()


LINES = [event("a", "create", 100), event("b", "create", 200), event("a", "pay", 300), event("c", "create", 400)]


def test_entries_carry_the_json_object_and_id_per_sink_and_only_filters():
    _, results = decided(LINES)
    entries = entries_for(results, ["webhook", "exec"], now=5000)
    assert len(entries) == 2 * len(results) == 6
    first = entries[0]
    assert orjson.loads(first.body)["id"] == first.id == "success:a:100:0" and first.kind == "success"
    assert (first.sink, entries[1].sink, first.enqueued, first.next_attempt) == ("webhook", "exec", 5000, 5000)
    assert [e.id for e in entries_for(results, ["exec"], 0, only="timeout")] == ["timeout:b:200:0", "timeout:c:400:0"]


def test_memory_outbox_hands_out_entries_oldest_first_and_keeps_dead_letters():
    outbox = MemoryOutbox(["exec"])
    _, results = decided(LINES)
    outbox.add(results, 0)
    assert outbox.pending_count() == 3 and outbox.oldest_pending() == 0
    a, b = outbox.take("exec", 0, 2, set(), set())
    assert (a.id, b.id, a.sink, a.body) == (results[0].id, results[1].id, "exec", json_line(results[0])[:-1])
    outbox.delivered(a)
    b.next_attempt = 500
    outbox.retry(b)
    (c,) = outbox.take("exec", 0, 5, set(), set())  # b waits for its own step
    assert c.id == results[2].id and outbox.next_due("exec", 0) == 500
    outbox.bury(c)
    assert (outbox.pending_count(), outbox.dead_count(), outbox.oldest_pending()) == (1, 1, 0)
    assert outbox.take("exec", 499, 5, set(), set()) == [] and outbox.take("exec", 500, 5, set(), set()) == [b]
    assert outbox.take("webhook", 500, 5, set(), set()) == []  # not a sink of this outbox


def keyed(*keys):
    """Results of the given keys, in that decision order (each a timeout of its own order)."""
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(1000), time_mode=TimeMode.EVENT)
    for number, key in enumerate(keys):
        pipeline.feed(event(key, "create", 100 * number), 0)
    return pipeline.finish()


def test_one_keys_entries_wait_while_an_earlier_one_of_the_key_is_in_flight_or_waiting():
    outbox = MemoryOutbox(["webhook"])
    results = keyed("a", "b", "a", "c", "a")
    outbox.add(results, 0)
    first = outbox.take("webhook", 0, 8, set(), set())
    assert [e.key for e in first] == ["a", "b", "c"]  # the later a's wait behind the first
    a1, b, c = first
    in_flight = {a1.position, b.position, c.position}
    assert outbox.take("webhook", 0, 8, in_flight, {"a", "b", "c"}) == []  # nothing handed out twice
    assert [e.key for e in outbox.take("webhook", 0, 8, {a1.position}, {"a"})] == ["b", "c"]  # a still waits
    outbox.delivered(b)
    outbox.delivered(c)
    a1.next_attempt = 300
    outbox.retry(a1)  # a1 failed and waits for its step: a's later results wait with it
    assert outbox.take("webhook", 0, 8, set(), set()) == []
    assert [e.id for e in outbox.take("webhook", 300, 8, set(), set())] == [a1.id]
    outbox.delivered(a1)
    a2 = outbox.take("webhook", 300, 8, set(), set())
    assert [e.id for e in a2] == [results[2].id]


def open_store(path):
    store = StateStore(str(path), CONFIG)
    store.open()
    return store


def rows(path):
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT sink, id, dead FROM outbox ORDER BY position").fetchall()
    finally:
        connection.close()


def test_state_outbox_rows_commit_with_the_checkpoint_and_leave_when_delivered(tmp_path):
    path = tmp_path / "state.db"
    store = open_store(path)
    outbox = SqliteOutbox(store.connection, ["webhook"])
    pipeline, results = decided(LINES)
    outbox.add(results, 7)
    assert outbox.pending_count() == 3 and outbox.take("webhook", 10, 5, set(), set()) == []  # staged: not yet
    store.save(pipeline, {}, also=lambda connection: outbox.committed(outbox.write_staged(connection)))
    due = outbox.take("webhook", 10, 5, set(), set())
    assert [e.id for e in due] == [r.id for r in results] and outbox.staged == 0
    assert outbox.take("webhook", 10, 5, {due[0].position}, {due[0].key}) == due[1:]  # in flight: not twice
    outbox.delivered(due[0])
    due[1].attempts, due[1].next_attempt, due[1].last_error = 1, 900, "HTTP 503"
    outbox.retry(due[1])
    due[2].last_error = "HTTP 400"
    outbox.bury(due[2])
    assert outbox.next_due("webhook", 10) == 900
    store.close()
    reopened = open_store(path)
    again = SqliteOutbox(reopened.connection, ["webhook"])
    assert (again.pending_count(), again.dead_count(), again.oldest_pending()) == (1, 1, 7)
    assert SqliteOutbox(reopened.connection, ["exec"]).pending_count() == 0  # another sink's rows are not ours
    assert again.take("webhook", 899, 5, set(), set()) == []
    (row,) = again.take("webhook", 900, 5, set(), set())
    assert (row.id, row.attempts, row.last_error) == (results[1].id, 1, "HTTP 503")
    reopened.close()


def test_state_outbox_rows_are_lost_with_a_checkpoint_that_fails(tmp_path):
    path = tmp_path / "state.db"
    store = open_store(path)
    outbox = SqliteOutbox(store.connection, ["webhook"])
    pipeline, results = decided(LINES)
    outbox.add(results, 7)

    def also(connection):
        outbox.write_staged(connection)
        raise sqlite3.OperationalError("disk I/O error")  # the checkpoint fails after the rows went in

    with pytest.raises(StateError):
        store.save(pipeline, {}, also=also)
    assert outbox.staged == 3  # still staged: the next checkpoint writes them
    store.close()
    assert rows(path) == []


def test_a_new_state_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "state.db"
    open_store(path).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_state_file_from_before_the_outbox_gets_one(tmp_path):
    path = tmp_path / "state.db"
    open_store(path).close()
    connection = sqlite3.connect(path)
    connection.execute("DROP TABLE outbox")
    connection.commit()
    connection.close()
    store = open_store(path)
    assert SqliteOutbox(store.connection, ["exec"]).pending_count() == 0
    store.close()


def filled_state(path, dead_ids=()):
    store = open_store(path)
    outbox = SqliteOutbox(store.connection, ["webhook"])
    pipeline, results = decided(LINES)
    outbox.add(results, 7)
    store.save(pipeline, {}, also=lambda connection: outbox.committed(outbox.write_staged(connection)))
    for item in outbox.take("webhook", 7, 5, set(), set()):
        if item.id in dead_ids:
            item.last_error = "HTTP 400"
            outbox.bury(item)
    store.close()


def test_outbox_command_lists_rows_and_json_and_moves_dead_letters_back(tmp_path):
    path = str(tmp_path / "state.db")
    filled_state(path, dead_ids={"timeout:b:200:0"})
    runner = CliRunner()
    listed = runner.invoke(main, ["outbox", path])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["pending", "webhook", "success:a:100:0"], ["pending", "webhook", "timeout:c:400:0"],
        ["dead", "webhook", "timeout:b:200:0"]]
    assert lines[-1].endswith("HTTP 400") and "2 pending, 1 dead" in listed.stderr
    as_json = [orjson.loads(line) for line in runner.invoke(main, ["outbox", path, "--json"]).stdout.splitlines()]
    assert as_json[2]["state"] == "dead" and as_json[2]["result"]["id"] == "timeout:b:200:0"
    assert as_json[2]["last_error"] == "HTTP 400" and as_json[0]["next_attempt"] == 7
    moved = runner.invoke(main, ["outbox", path, "--retry-dead"])
    assert moved.exit_code == 0 and "1 dead letter moved back to pending" in moved.stderr
    assert all(not entry.dead for entry in read_rows(path))


def test_a_dead_letter_moved_back_gets_a_fresh_maximum_age(tmp_path):
    """--retry-dead restarts the age limit: a letter that died old is retried after its
    next failure, not buried again at once by --deliver-max-age."""
    path = str(tmp_path / "state.db")
    filled_state(path, dead_ids={"timeout:b:200:0"})  # decided at 7 ms
    day = 86_400_000
    now = 7 + 3 * day  # long past a one-day maximum age
    assert retry_dead(path, now) == 1
    (entry,) = [entry for entry in read_rows(path) if entry.id == "timeout:b:200:0"]
    assert (entry.dead, entry.attempts, entry.next_attempt, entry.enqueued) == (False, 0, now, now)
    assert after_failure(entry, Outcome(False, "HTTP 503"), now + 1, random.Random(1), max_age_ms=day)
    assert now < entry.next_attempt <= now + day and "maximum age" not in entry.last_error
    # and it does die once the fresh day has passed
    assert not after_failure(entry, Outcome(False, "HTTP 503"), now + day, random.Random(1), max_age_ms=day)
    assert "older than the maximum age" in entry.last_error
    # The command line stamps the move with the wall clock.
    filled_state(str(tmp_path / "other.db"), dead_ids={"timeout:b:200:0"})
    before = time.time_ns() // 1_000_000
    assert CliRunner().invoke(main, ["outbox", str(tmp_path / "other.db"), "--retry-dead"]).exit_code == 0
    after = time.time_ns() // 1_000_000
    (moved,) = [entry for entry in read_rows(str(tmp_path / "other.db")) if entry.id == "timeout:b:200:0"]
    assert before <= moved.enqueued == moved.next_attempt <= after


def test_outbox_command_reads_a_file_a_run_holds_and_refuses_a_foreign_file(tmp_path):
    path = str(tmp_path / "state.db")
    filled_state(path, dead_ids={"timeout:b:200:0"})
    store = open_store(path)  # a run holds the file (in this process: the lock is the same)
    try:
        held = CliRunner().invoke(main, ["outbox", path])
        assert held.exit_code == 0, held.output
        assert len(held.stdout.splitlines()) == 3 and "2 pending, 1 dead (as of the last checkpoint" in held.stderr
        with pytest.raises(StateError, match="in use by another process"):
            open_store(path)  # a second run is still refused
    finally:
        store.close()
    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).close()
    refused = CliRunner().invoke(main, ["outbox", str(foreign)])
    assert refused.exit_code == 1 and "not an ordertimeout state file" in refused.stderr
    assert "Traceback" not in refused.output


def test_retry_dead_asks_a_running_service_and_fails_clearly_when_none_answers(tmp_path):
    path = str(tmp_path / "state.db")
    filled_state(path, dead_ids={"timeout:b:200:0"})
    store = open_store(path)
    try:
        # No run takes the request here (the store alone is held): the command says so, and
        # leaves no request behind for a later run to act on by surprise.
        from ordertimeout.notify import outbox_file

        with pytest.raises(OutboxError, match="did not take the request within 0.3s"):
            outbox_file.request_retry(path, wait=0.3)
        assert not os.path.exists(path + outbox_file.REQUEST_SUFFIX)
    finally:
        store.close()
    assert [entry.dead for entry in read_rows(path)] == [False, False, True]  # nothing changed


def test_memory_outbox_keeps_the_latest_dead_letters_and_counts_them_all():
    outbox = MemoryOutbox(["exec"])
    _, results = decided(LINES)
    for round_ in range(MemoryOutbox.DEAD_KEPT // len(results) + 2):
        outbox.add(results, round_)
        for entry in outbox.take("exec", round_, len(results), set(), set()):
            outbox.bury(entry)
    buried = (MemoryOutbox.DEAD_KEPT // len(results) + 2) * len(results)
    assert outbox.dead_count() == buried > MemoryOutbox.DEAD_KEPT
    assert len(outbox.dead) == MemoryOutbox.DEAD_KEPT
    assert outbox.dead[-1].id == results[-1].id and outbox.pending_count() == 0


def test_state_outbox_hands_out_oldest_first_and_one_key_in_decision_order(tmp_path):
    store = open_store(tmp_path / "state.db")
    outbox = SqliteOutbox(store.connection, ["webhook"])
    pipeline, _ = decided(LINES)
    results = keyed("a", "b", "a", "c")
    outbox.add(results, 0)
    store.save(pipeline, {}, also=lambda connection: outbox.committed(outbox.write_staged(connection)))
    first = outbox.take("webhook", 0, 8, set(), set())
    assert [e.key for e in first] == ["a", "b", "c"]
    a1 = first[0]
    a1.attempts, a1.next_attempt, a1.last_error = 1, 50, "HTTP 503"
    outbox.retry(a1)
    for other in first[1:]:
        outbox.delivered(other)
    assert outbox.take("webhook", 49, 8, set(), set()) == [] and outbox.next_due("webhook", 0) == 50
    assert [e.id for e in outbox.take("webhook", 50, 8, set(), set())] == [results[0].id]
    outbox.delivered(a1)
    assert [e.id for e in outbox.take("webhook", 50, 8, set(), set())] == [results[2].id]
    store.close()


def test_held_rows_are_in_the_file_before_stdout_and_delivered_after_their_checkpoint(tmp_path):
    path = tmp_path / "state.db"
    store = open_store(path)
    outbox = SqliteOutbox(store.connection, ["webhook"])
    pipeline, results = decided(LINES)
    outbox.add(results, 7)
    outbox.hold_staged()  # what the runtime's flush does before stdout
    assert not store.connection.in_transaction  # committed
    assert [row[0] for row in store.connection.execute("SELECT id FROM outbox")] == [r.id for r in results]
    assert outbox.take("webhook", 10, 5, set(), set()) == [] and outbox.next_due("webhook", 0) is None  # held
    assert outbox.staged == 3 and outbox.pending_count() == 3
    store.save(pipeline, {}, also=lambda connection: outbox.committed(outbox.write_staged(connection)))
    assert [e.id for e in outbox.take("webhook", 10, 5, set(), set())] == [r.id for r in results]
    assert outbox.staged == 0
    store.close()


def test_held_rows_of_a_run_that_died_are_delivered_and_not_added_twice(tmp_path):
    path = tmp_path / "state.db"
    store = open_store(path)
    outbox = SqliteOutbox(store.connection, ["webhook", "exec"])
    pipeline, results = decided(LINES)
    outbox.add(results[:1], 7)
    store.save(pipeline, {}, also=lambda connection: outbox.committed(outbox.write_staged(connection)))
    (first,) = outbox.take("webhook", 7, 5, set(), set())
    outbox.delivered(first)  # the webhook row of the first result left; its exec row waits
    outbox.flush()
    outbox.add(results[1:], 8)
    outbox.hold_staged()  # shown on stdout, then kill -9 before the next checkpoint
    store.close()
    reopened = open_store(path)
    again = SqliteOutbox(reopened.connection, ["webhook", "exec"])
    due = again.take("webhook", 9, 10, set(), set()) + again.take("exec", 9, 10, set(), set())
    assert again.pending_count() == 5 and {e.id for e in due} == {r.id for r in results}
    # The input after the checkpoint is read again: the same results are decided anew.
    again.add(results[1:], 9)
    again.add(results[1:], 9)  # a result decided once more than before is a new one: kept
    again.hold_staged()
    assert again.pending_count() == 5 + 4
    reopened.save(pipeline, {}, also=lambda connection: again.committed(again.write_staged(connection)))
    reopened.close()
    ids = sorted((sink, rid) for sink, rid, _ in rows(path))
    assert ids == sorted([("exec", results[0].id)] + [(sink, r.id) for r in results[1:] for sink in ("webhook", "exec")] * 2)


def test_a_failed_outbox_still_gives_its_figures_and_leaves_the_error_to_the_run(tmp_path):
    """Once a commit of the outbox failed (a full disk), the run reports that error once;
    the summary's figures must not raise it again (it reached users as a traceback)."""
    store = open_store(tmp_path / "state.db")
    outbox = SqliteOutbox(store.connection, ["webhook"])
    outbox._error = OutboxError("cannot write the outbox of the state file: disk I/O error")  # as _commit_soon leaves it
    assert outbox.oldest_pending() is None
    with pytest.raises(OutboxError):  # the relay's next use still raises it
        outbox.take("webhook", 0, 1, set(), set())
    store.close()

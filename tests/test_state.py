"""Durable state: checkpoints, restarts, refusals, and kill -9 at random moments."""

import os
import pathlib
import random
import shutil
import signal
import sqlite3
import subprocess
import time

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.cli import main
from ordertimeout.outputs.sinks import json_line
from ordertimeout.inputs.sources import SavedPosition
from ordertimeout.rules.orders import PACKED_RAW
from ordertimeout.state.store import StateError, StateStore

from .helpers import COMMAND, event, live_watch, run_event_time

CONFIG = {"key": "userId", "within_ms": 1000, "match": "each"}


def pipeline_with(lines, lateness=0):
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(1000), time_mode=TimeMode.EVENT, lateness=lateness)
    for line in lines:
        pipeline.feed(line, 0)
    return pipeline


def test_checkpoint_round_trip(tmp_path):
    path = str(tmp_path / "state.db")
    pipeline = pipeline_with([event("1", "create", 100), event("2", "create", 150), event("3", "pay", 160),
                              event("4", "create", 120)], lateness=50)
    store = StateStore(path, CONFIG)
    assert store.open() is None
    store.save(pipeline, {"/data/a.jsonl": SavedPosition(1, 2, 3, "abc", 1234, 7)})
    store.close()
    reopened = StateStore(path, CONFIG)
    checkpoint = reopened.open()
    assert checkpoint["offsets"] == {"/data/a.jsonl": (1, 2, 3, "abc", 1234, 7)}
    restored = Pipeline(EventParser(EventSchema()), Matcher(1000), lateness=50)
    restored.restore(checkpoint["pipeline"])  # its open orders are read from the open file
    reopened.close()
    assert restored.stats() == pipeline.stats()
    assert [tuple(r) for r in restored.finish()] == [tuple(r) for r in pipeline.finish()]
    connection = sqlite3.connect(path)
    rows = connection.execute("SELECT key, created, deadline FROM open_orders").fetchall()
    connection.close()
    assert rows == [("1", 100, 1100)]  # 2 and 4 still wait in the reorder buffer


@pytest.mark.parametrize("mode", ["each", "next", "followed-by"])
def test_restart_through_the_state_file_gives_the_same_results(tmp_path, mode):
    lines = [event(str(i % 7), ["create", "pay", "create", "other"][i % 4], 100 * i - 40 * (i % 3)) for i in range(60)]
    whole, _ = run_event_time(lines, 250, mode, lateness=100)
    for cut in range(0, 61, 6):
        path = str(tmp_path / f"{mode}-{cut}.db")
        first = Pipeline(EventParser(EventSchema()), Matcher(250, mode), lateness=100)
        results = []
        for line in lines[:cut]:
            results += first.feed(line, 0)
        store = StateStore(path, CONFIG)
        store.open()
        store.save(first, {})
        store.close()
        store = StateStore(path, CONFIG)
        second = Pipeline(EventParser(EventSchema()), Matcher(250, mode), lateness=100)
        second.restore(store.open()["pipeline"])
        store.close()
        for line in lines[cut:]:
            results += second.feed(line, 0)
        results += second.finish()
        assert [orjson.loads(json_line(r)) for r in results] == whole, cut


def test_other_configuration_is_refused(tmp_path):
    path = str(tmp_path / "state.db")
    store = StateStore(path, CONFIG)
    store.open()
    store.close()
    with pytest.raises(StateError, match="different configuration .*within_ms 1000 there, 2000 here"):
        StateStore(path, {**CONFIG, "within_ms": 2000}).open()


def test_corrupt_and_foreign_files_are_refused_untouched(tmp_path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not sqlite" * 100)
    before = corrupt.read_bytes()
    with pytest.raises(StateError, match="corrupt"):
        StateStore(str(corrupt), CONFIG).open()
    assert corrupt.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["corrupt.db"]
    foreign = tmp_path / "foreign.db"
    connection = sqlite3.connect(foreign)
    connection.execute("CREATE TABLE users (id)")
    connection.commit()
    connection.close()
    with pytest.raises(StateError, match="not an ordertimeout state file"):
        StateStore(str(foreign), CONFIG).open()


def test_a_state_file_in_use_is_refused(tmp_path):
    path = str(tmp_path / "state.db")
    first = StateStore(path, CONFIG)
    first.open()
    with pytest.raises(StateError, match="in use by another process"):
        StateStore(path, CONFIG).open()
    first.close()
    second = StateStore(path, CONFIG)
    second.open()
    second.close()


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "state.db")
    store = StateStore(path, CONFIG)
    store.open()
    small = pipeline_with([event("1", "create", 100)])
    store.save(small, {})
    store._connection.execute("PRAGMA max_page_count = 8")  # the disk is full from now on
    big = pipeline_with([event(str(i), "create", 100, pad="x" * 500) for i in range(200)])
    with pytest.raises(StateError, match="full"):
        store.save(big, {})
    store.close()
    reopened = StateStore(path, CONFIG)
    assert reopened.open()["pipeline"]["matcher"]["counts"]["creates"] == 1
    reopened.close()


def test_cli_resumes_a_named_file_after_its_last_line(tmp_path):
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(event("1", "create", 1000) + b"\n" + event("2", "create", 1100) + b"\n")
    args = ["watch", str(source), "--json", "-q", "--state", state, "--within", "1s"]
    first = CliRunner().invoke(main, args)
    assert first.stdout == ""  # the input goes on in a later run: both orders stay pending
    with open(source, "ab") as handle:
        handle.write(event("3", "create", 5000) + b"\n" + b"oops\n")
    second = CliRunner().invoke(main, args)
    assert [orjson.loads(l)["key"] for l in second.stdout.splitlines()] == ["1", "2"]
    assert "line 4: not valid JSON" in second.stderr  # line numbers continue too
    final = CliRunner().invoke(main, [*args, "--final"])
    assert [orjson.loads(l)["key"] for l in final.stdout.splitlines()] == ["3"]


def _as_format(path: str, version: int) -> None:
    """Rewrite a state file as an older version laid it out: format 3 kept each open
    order's raw create event, not the order packed (format 4)."""
    connection = sqlite3.connect(path)
    with connection:
        connection.execute(f"UPDATE open_orders SET packed = substr(packed, {PACKED_RAW + 1})")
        connection.execute("ALTER TABLE open_orders RENAME COLUMN packed TO raw")
        connection.execute("UPDATE meta SET value = ? WHERE name = 'format'", (str(version),))
    connection.close()


def test_a_file_of_format_3_is_upgraded_in_place_and_goes_on_exactly(tmp_path):
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    lines = [event("1", "create", 1000), event("2", "create", 1100), event("2", "create", 1100),
             event("3", "create", 1200), event("2", "pay", 1300)]
    source.write_bytes(b"\n".join(lines) + b"\n")
    args = ["watch", str(source), "--json", "-q", "--state", state, "--within", "1s"]
    first = CliRunner().invoke(main, args)
    assert [(r["result"], r["key"]) for r in map(orjson.loads, first.stdout.splitlines())] == [("success", "2")]
    _as_format(state, 3)
    pending = CliRunner().invoke(main, ["pending", state, "--json"])  # read as format 3
    assert [(row["key"], row["create"]["ts"]) for row in map(orjson.loads, pending.stdout.splitlines()[:-1])] == [
        ("1", 1000), ("2", 1100), ("3", 1200)]
    with open(source, "ab") as handle:
        handle.write(event("3", "pay", 1500) + b"\n" + event("9", "create", 5000) + b"\n")
    resumed = CliRunner().invoke(main, args)
    assert resumed.exit_code == 0, resumed.stderr
    assert [(r["result"], r["key"], r["created"]) for r in map(orjson.loads, resumed.stdout.splitlines())] == [
        ("success", "3", 1200), ("timeout", "1", 1000), ("timeout", "2", 1100)]
    connection = sqlite3.connect(state)
    assert connection.execute("SELECT value FROM meta WHERE name = 'format'").fetchone() == ("4",)
    assert [row[1] for row in connection.execute("PRAGMA table_info(open_orders)")].count("packed") == 1
    connection.close()
    final = CliRunner().invoke(main, [*args, "--final"])
    assert [(r["result"], r["key"]) for r in map(orjson.loads, final.stdout.splitlines())] == [("timeout", "9")]


def test_a_file_of_an_older_format_is_refused_untouched(tmp_path):
    state = str(tmp_path / "state.db")
    CliRunner().invoke(main, ["watch", "--state", state, "-q"], input=event("1", "create", 5) + b"\n")
    _as_format(state, 2)
    before = pathlib.Path(state).read_bytes()
    outcome = CliRunner().invoke(main, ["watch", "--state", state, "-q"], input=b"")
    assert outcome.exit_code == 1
    assert "has state format 2, this version reads 4" in outcome.stderr
    assert pathlib.Path(state).read_bytes() == before


def test_cli_refuses_mixed_configuration_with_exit_1(tmp_path):
    state = str(tmp_path / "state.db")
    CliRunner().invoke(main, ["watch", "--state", state, "-q"], input=b"")
    outcome = CliRunner().invoke(main, ["watch", "--state", state, "--match", "next", "-q"], input=b"")
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("Error: ") and "match 'each' there, 'next' here" in outcome.stderr


def test_processing_time_orders_overdue_after_a_restart_come_back_as_recovered(tmp_path):
    state = str(tmp_path / "state.db")
    args = [*COMMAND, "watch", "--processing-time", "--within", "300ms", "--json", "-q", "--state", state]
    first = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first.stdin.write(b'{"userId":"1","type":"create"}\n{"userId":"2","type":"create"}\n{"userId":"2","type":"pay"}\n')
    first.stdin.flush()
    assert orjson.loads(first.stdout.readline())["result"] == "success"
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=10)
    assert first.returncode == 143
    time.sleep(0.4)  # the tool is down while the deadline passes
    second = subprocess.run(args, input=b"", capture_output=True, timeout=10)
    (result,) = [orjson.loads(line) for line in second.stdout.splitlines()]
    assert result["result"] == "timeout" and result["recovered"] is True and result["key"] == "1"
    assert result["deadline"] - result["created"] == 300


#: Kills landed mid-run by the kill -9 test (docs/reliability.md: a bigger budget finds more).
KILLS = int(os.environ.get("ORDERTIMEOUT_KILLS", "10"))
#: Its bounds: starts of the tool per round, and seconds for all of it (a loaded 2-core
#: machine needs a few seconds a kill; past these the test fails, it never loops on).
KILL_STARTS = 200
KILL_SECONDS = 60 + 6 * KILLS


def wal_mark(state):
    """(size, mtime) of the state file's write-ahead log, or None: it changes when a run commits."""
    try:
        status = os.stat(f"{state}-wal")
    except FileNotFoundError:
        return None
    return status.st_size, status.st_mtime_ns


def saved_offset(state, scratch):
    """The input offset of the state file's last checkpoint (0 if none), read from a copy of
    the file and its write-ahead log, so the next run finds the file as the kill left it."""
    copy = scratch / "copy.db"
    for suffix in ("", "-wal", "-shm"):
        pathlib.Path(f"{copy}{suffix}").unlink(missing_ok=True)
    for suffix in ("", "-wal"):
        if os.path.exists(f"{state}{suffix}"):
            shutil.copyfile(f"{state}{suffix}", f"{copy}{suffix}")
    connection = sqlite3.connect(copy)
    try:
        (offset,) = connection.execute("SELECT coalesce(max(offset), 0) FROM offsets").fetchone()
    except sqlite3.OperationalError:  # killed before its first checkpoint: no tables yet
        offset = 0
    finally:
        connection.close()
    return offset


def kill_rounds(tmp_path, seed, kills):
    """SIGKILL one run over one input at seeded random moments, restarting it until it
    completes; fresh rounds until ``kills`` kills landed mid-run. Each round's results
    (duplicates kept) are checked against an uninterrupted run of the same input.

    A run is killed only after it committed a checkpoint of its own, and a kill counts
    only if the saved offset moved: every restart makes progress, so a slow start-up
    under load cannot make a round restart for ever. Rounds and time are bounded too."""
    source = tmp_path / "events.jsonl"
    subprocess.run([*COMMAND, "generate", "--events", "60000", "--users", "500", "--seed", str(seed),
                    "--disorder", "20ms", "-o", str(source)], check=True)
    base = [*COMMAND, "watch", str(source), "--json", "-q", "--lateness", "20ms"]
    clean = subprocess.run(base, capture_output=True, check=True).stdout.splitlines()
    rng = random.Random(seed)
    landed = rounds = 0
    give_up = time.monotonic() + KILL_SECONDS

    def bounded(starts):
        if starts > KILL_STARTS or time.monotonic() > give_up:
            pytest.fail(f"{landed} of {kills} kills landed in {rounds} rounds; round {rounds} made "
                        f"{starts} starts without finishing (bounds: {KILL_STARTS} starts, {KILL_SECONDS} s)")

    while landed < kills:
        rounds += 1
        state, output = tmp_path / f"state{rounds}.db", tmp_path / f"results{rounds}.jsonl"
        args = [*base, "--checkpoint-every", "5ms", "--state", str(state)]
        offset = starts = 0
        while True:
            starts += 1
            bounded(starts)
            seen = wal_mark(state)
            # Commits to wait for: a new file's first one is its layout, not a checkpoint.
            needed = 2 if seen is None else 1
            with open(output, "ab") as out:
                process = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL)
                time.sleep(rng.uniform(0.05, 0.5))
                while process.poll() is None and needed:
                    mark = wal_mark(state)
                    if mark != seen:
                        needed, seen = needed - 1, mark
                        continue
                    bounded(starts)
                    time.sleep(0.005)
                if process.poll() is not None:
                    assert process.returncode == 0
                    break
                process.send_signal(signal.SIGKILL)
                process.wait()
            moved = saved_offset(state, tmp_path)
            assert moved >= offset  # a checkpoint never goes back
            landed += moved > offset
            offset = moved
            data = output.read_bytes()
            output.write_bytes(data[: data.rfind(b"\n") + 1])  # a consumer drops a torn last line
        yield output.read_bytes().splitlines(), clean


@pytest.mark.timeout(KILL_SECONDS + 60)
def test_kill_9_at_random_points_loses_nothing(tmp_path):
    creates = None
    for seen, clean in kill_rounds(tmp_path, seed=7, kills=KILLS):
        assert set(seen) == set(clean)  # every result of the clean run, and nothing else
        assert len(seen) >= len(clean)  # some may come twice (at-least-once), none zero times
        creates = creates or {orjson.loads(line)["create"]["orderId"] for line in clean}
        assert {orjson.loads(line)["create"]["orderId"] for line in seen} == creates
    assert creates


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["create", "pay", "other", "cancel"]),
                       st.sampled_from([0, 0, 1, 5, 30, 61])), max_size=40),
    st.sampled_from(["each", "next", "followed-by"]),
    st.integers(min_value=1, max_value=5),
)
# Identical twins: the first is paid and its stale entry leaves the head in the same
# checkpoint, so deleting the wrong twin's row would lose the open one.
@example([("a", "create", 0), ("a", "create", 0), ("a", "pay", 0)], "each", 1)
def test_incremental_checkpoints_always_hold_exactly_the_open_orders(tmp_path_factory, steps, mode, every):
    """Checkpoints write only changes; after each one, the file must hold exactly the
    matcher's open orders, in deadline order, identical twins included."""
    path = str(tmp_path_factory.mktemp("incremental") / "state.db")
    schema = EventSchema(cancel_type="cancel" if mode == "each" else None)
    pipeline = Pipeline(EventParser(schema), Matcher(60, mode), time_mode=TimeMode.EVENT)
    store = StateStore(path, CONFIG)
    store.open()
    time = 0
    for index, (key, kind, gap) in enumerate(steps):
        time += gap  # many equal times, so identical create lines are common
        pipeline.feed(orjson.dumps({"userId": key, "type": kind, "ts": time}), 0)
        pipeline.next_deadline()  # as the runtime does: it drops stale entries at the head
        if index % every == 0:
            store.save(pipeline, {})
            # Read through the store's own connection: it holds the file's exclusive lock.
            saved = store._connection.execute(
                f"SELECT created, key, substr(packed, {PACKED_RAW + 1}), seq, deadline FROM open_orders ORDER BY position").fetchall()
            assert [(c, k, bytes(r), s, d) for c, k, r, s, d in saved] == [tuple(o) for o in pipeline.matcher.open_orders()]
    store.close()


def test_cli_refuses_a_state_file_in_use_and_leaves_it_alone(tmp_path):
    state = str(tmp_path / "state.db")
    with live_watch("--state", state) as running:
        running.stdin.write(b'{"userId":"1","type":"create","ts":5}\n{"userId":"1","type":"pay","ts":6}\n')
        running.stdin.flush()
        running.stdout.readline()  # the first run holds the file now
        outcome = CliRunner().invoke(main, ["watch", "--state", state, "-q"], input=b"")
        assert outcome.exit_code == 1
        assert outcome.stderr.startswith("Error: state file") and "in use by another process" in outcome.stderr


def test_an_empty_file_or_database_is_taken_as_new(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.db"
    sqlite3.connect(blank).close()
    for path in (empty, blank):
        store = StateStore(str(path), CONFIG)
        assert store.open() is None
        store.close()
        reopened = StateStore(str(path), CONFIG)
        assert reopened.open() is None  # created, no checkpoint yet: still ours
        reopened.close()


def test_save_runs_also_inside_the_checkpoint_transaction(tmp_path):
    """A host's own rows (the notify outbox) commit with the checkpoint, or not at all."""
    path = str(tmp_path / "state.db")
    store = StateStore(path, CONFIG)
    store.open()

    def outbox(connection):  # the state file's own outbox table (see ordertimeout.notify.outbox)
        connection.execute("INSERT INTO outbox (sink, id, key, body, enqueued, next_attempt)"
                           " VALUES ('webhook', 'timeout:1:100:0', '1', x'7b7d', 0, 0)")

    pipeline = pipeline_with([event("1", "create", 100)])
    store.save(pipeline, {}, also=outbox)

    def failing(connection):
        connection.execute("INSERT INTO outbox (sink, id, key, body, enqueued, next_attempt)"
                           " VALUES ('webhook', 'lost', '2', x'7b7d', 0, 0)")
        raise RuntimeError("delivery bookkeeping failed")

    pipeline.feed(event("2", "create", 200), 0)
    with pytest.raises(RuntimeError, match="delivery bookkeeping failed"):
        store.save(pipeline, {"/f": SavedPosition(1, 2, 0, "", 9, 1)}, also=failing)
    store.close()
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT id FROM outbox").fetchall() == [("timeout:1:100:0",)]
    assert connection.execute("SELECT count(*) FROM open_orders").fetchone() == (1,)
    assert connection.execute("SELECT count(*) FROM offsets").fetchone() == (0,)
    connection.close()


def limit_file_size(limit):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_mid_run_is_a_clear_error_and_the_next_run_loses_nothing(tmp_path):
    """The state file cannot grow (a small filesystem, here a file size limit): exit 1 with
    one clear line, the last good checkpoint intact, and a rerun completes every result."""
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    subprocess.run([*COMMAND, "generate", "--events", "20000", "--users", "5000", "-o", str(source)], check=True)
    args = [*COMMAND, "watch", str(source), "--json", "--within", "1h", "--state", state]
    full = subprocess.run([*args, "--checkpoint-every", "1ms"], capture_output=True, timeout=120,
                          preexec_fn=limit_file_size(256 * 1024))
    assert full.returncode == 1 and b"Traceback" not in full.stderr
    (error,) = [line for line in full.stderr.decode().splitlines() if line.startswith("Error:")]
    assert error.startswith(f"Error: cannot write state file {state}: ") and "its last checkpoint is kept" in error
    assert "disk full" in error
    rerun = subprocess.run([*args, "--final", "-q"], capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    clean = subprocess.run([*COMMAND, "watch", str(source), "--json", "--within", "1h", "-q"],
                           capture_output=True, check=True).stdout.splitlines()
    seen = full.stdout.splitlines() + rerun.stdout.splitlines()
    assert set(seen) == set(clean)  # nothing lost, nothing invented (repeats allowed)


def test_a_state_file_removed_mid_run_is_a_clear_error(tmp_path):
    """SQLite would go on writing to the deleted file, and every later checkpoint be lost."""
    state = tmp_path / "state.db"
    process = subprocess.Popen([*COMMAND, "watch", "--json", "-q", "--state", str(state), "--checkpoint-every", "10ms"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b'{"userId":"1","type":"create","ts":5}\n{"userId":"1","type":"pay","ts":6}\n')
    process.stdin.flush()
    assert orjson.loads(process.stdout.readline())["result"] == "success"
    state.unlink()
    process.stdin.write(b'{"userId":"2","type":"create","ts":7}\n')
    process.stdin.flush()
    _, err = process.communicate(timeout=20)
    process.stdin.close()
    assert process.returncode == 1
    assert err.decode().strip() == f"Error: state file {state} was removed or replaced while this run used it"


def test_a_gzip_input_resumes_after_its_last_decompressed_line(tmp_path):
    import gzip

    lines = b"".join(event(f"u{i % 3}", ["create", "pay"][i % 2], 1000 * i) + b"\n" for i in range(40))
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(lines))
    state = str(tmp_path / "state.db")
    runner = CliRunner()
    first = runner.invoke(main, ["watch", str(path), "--json", "-q", "--state", state, "--stats", str(tmp_path / "1.json")])
    assert first.exit_code == 0, first.output
    # The compressed file is shorter than the decompressed offset: that is no truncation.
    second = runner.invoke(main, ["watch", str(path), "--json", "-q", "--state", state, "--stats", str(tmp_path / "2.json")])
    assert second.exit_code == 0, second.output
    assert second.stdout == "" and "truncated" not in second.stderr
    stats = orjson.loads((tmp_path / "2.json").read_bytes())
    assert (stats["events"], stats["late"]) == (40, 0)


def test_the_longest_windows_are_saved_and_resumed(tmp_path):
    # A window past 10,000 years made deadlines beyond 64 bits: the state's config could not
    # be written (a traceback). Now such windows are refused, and the longest taken works.
    events = tmp_path / "events.jsonl"
    events.write_text('{"userId":"a","type":"create","ts":"9999-12-31T23:59:59.999Z"}\n')
    state = str(tmp_path / "s.db")
    longest = ["--within", "3652425d", "--paid-late", "3652425d", "--json", "-q", "--state", state, "--max-future", "off"]
    first = CliRunner().invoke(main, ["watch", str(events), *longest], catch_exceptions=False)
    assert first.exit_code == 0 and first.stdout == ""
    last = CliRunner().invoke(main, ["watch", str(events), *longest, "--final"], catch_exceptions=False)
    assert last.exit_code == 0
    assert orjson.loads(last.stdout)["deadline"] == 253_402_300_799_999 + 315_569_520_000_000
    refused = CliRunner().invoke(main, ["watch", str(events), "--within", "999999999999999d", "--state", state])
    assert refused.exit_code == 2 and "longer than 10,000 years" in refused.stderr

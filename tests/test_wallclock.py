"""The wall clock in event time (rules/wallclock.py): --idle after a downtime, --max-future.

Issue 19 items 2 and 4. Semantics on a manual clock through the library (a restart is a
snapshot restored into a new pipeline, as --state does); then the same paths through
real processes, real files and real SQLite state: the issue's example, the cron recipe
of docs/service.md scaled down, and a create stamped a day ahead.
"""

from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import threading
import time

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, RejectedLine, TimeMode
from ordertimeout.cli import main
from ordertimeout.rules.pipeline import FutureEvent

from .helpers import COMMAND
from .helpers import free_port, wait_until_catching
from .monitoring import scrape, start_monitored, wait_for

WALL = 1_800_000_000_000  # the manual clock's start


def ev(key: str, kind: str, ts: int) -> bytes:
    return orjson.dumps({"userId": key, "type": kind, "ts": ts})


def pipeline(within: int = 2000, idle: int | None = 1000, max_future: int | None = None) -> Pipeline:
    return Pipeline(EventParser(EventSchema()), Matcher(within), time_mode=TimeMode.EVENT, idle=idle,
                    max_future=max_future)


def restarted(before: Pipeline, **options) -> Pipeline:
    """A new run continuing ``before`` from its saved state (what --state does)."""
    after = pipeline(**options)
    after.restore(copy.deepcopy(before.snapshot()))
    return after


def outcome(results) -> dict[str, str]:
    return {result.key: type(result).__name__.lower() for result in results}


# -- --idle after a downtime ----------------------------------------------------------


def test_the_issues_example_on_a_manual_clock():
    """--idle 1s --within 2s: o1 created, run ends; o2 created, paid 0.5 s later, o3
    created while the tool is down; 4 s later a run gives o1 timeout, o2 success, o3
    timeout, nothing late."""
    first = pipeline()
    first.catch_up(WALL)
    assert first.feed(ev("o1", "create", WALL), WALL) == []
    downtime_lines = [ev("o2", "create", WALL + 100), ev("o2", "pay", WALL + 600), ev("o3", "create", WALL + 600)]
    second = restarted(first)
    now = WALL + 4600
    # The restored run reads its backlog in event time: the wall clock waits for it.
    assert second.advance(now) == [] and second.next_timer() is None
    results = []
    for line in downtime_lines:
        results += second.feed(line, now)
    assert second.late == 0
    results += second.catch_up(now)  # nothing more to read: the downtime counts now
    assert outcome(results) == {"o1": "timeout", "o2": "success", "o3": "timeout"}
    assert [result.deadline for result in results if result.key != "o2"] == [WALL + 2000, WALL + 2600]


def test_a_quiet_night_times_orders_out_at_the_next_run():
    first = pipeline(within=60_000, idle=30_000)
    first.catch_up(WALL)
    first.feed(ev("late-night", "create", WALL), WALL)
    morning = WALL + 8 * 3_600_000
    second = restarted(first, within=60_000, idle=30_000)
    (timeout,) = second.catch_up(morning)  # nothing was written overnight
    assert (timeout.key, timeout.deadline) == ("late-night", WALL + 60_000)


def test_a_backlog_newer_than_the_downtime_still_times_out_by_the_wall_clock():
    """The backlog's newest event is known by the time it is read, but counts as known
    as far after the previous newest one as its time is: so its order times out at the
    catch-up, though the run read it only now."""
    first = pipeline(within=1000, idle=500)
    first.catch_up(WALL)
    first.feed(ev("a", "create", WALL), WALL)
    second = restarted(first, within=1000, idle=500)
    now = WALL + 10_000
    assert outcome(second.feed(ev("b", "create", WALL + 8000), now)) == {"a": "timeout"}  # by event time
    # "b" was written at WALL + 8000 at the latest: since then the wall clock moved 2 s.
    assert outcome(second.catch_up(now)) == {"b": "timeout"}
    assert second.frontier == WALL + 8000 + 2000 - 500


def test_a_backlog_read_later_than_its_events_never_runs_the_watermark_ahead():
    """Where the backlog's events are further behind the wall clock than the last known
    one (a replay), reading them says they were known by now at the latest: the
    watermark moves from there, no further."""
    first = pipeline(within=1000, idle=500)
    first.catch_up(WALL)
    first.feed(ev("a", "create", WALL), WALL)  # known at once
    second = restarted(first, within=1000, idle=500)
    second.feed(ev("b", "create", WALL + 100), WALL + 60_000)  # 60 s later: only 100 ms newer
    second.catch_up(WALL + 60_000)
    assert second.frontier == WALL + 60_000 - 500  # as if "b" came just after "a"


def test_without_a_catch_up_the_wall_clock_never_moves_event_time():
    fresh = pipeline()
    fresh.feed(ev("a", "create", WALL), WALL)
    assert fresh.advance(WALL + 3_600_000) == [] and fresh.next_timer() is None
    assert not fresh.caught_up
    (timeout,) = fresh.catch_up(WALL + 3_600_000)
    assert timeout.key == "a" and fresh.caught_up
    assert not restarted(fresh).caught_up  # a restart reads its backlog first again


def test_a_run_that_stops_reading_for_a_while_makes_nothing_late():
    """Live, then lines come in and the run stops reading for a while (an outbox over
    --outbox-limit, a slow disk): until a read finds nothing new again, the wall clock
    does not move event time, so the lines written meanwhile are not late."""
    run = pipeline(within=1000, idle=300)
    run.catch_up(WALL)
    run.feed(ev("a", "create", WALL), WALL)
    run.behind()  # lines came: more may be unread
    assert run.advance(WALL + 60_000) == [] and run.next_timer() is None
    results = run.feed(ev("a", "pay", WALL + 500), WALL + 60_000)  # written long ago, read now
    assert outcome(results) == {"a": "success"} and run.late == 0
    run.feed(ev("b", "create", WALL + 59_900), WALL + 60_000)
    assert outcome(run.catch_up(WALL + 60_000)) == {} and run.next_timer() == WALL + 60_000 + 1000 + 300


PRODUCER_STEP = st.tuples(
    st.integers(0, 400),  # wall time since the previous line was written
    st.integers(0, 1000),  # how far its time is behind the wall clock (in --idle's share)
    st.sampled_from(["a", "b", "c"]), st.sampled_from(["create", "create", "pay", "other"]),
    st.sampled_from([None, None, None, 0, 150, 900, 5000]),  # a restart after it, with this downtime
)


@settings(max_examples=300, deadline=None)
@given(idle=st.sampled_from([50, 300, 1000]), within=st.sampled_from([100, 700, 3000]),
       steps=st.lists(PRODUCER_STEP, min_size=1, max_size=40))
def test_restarts_of_any_length_make_no_live_line_late_and_change_no_result(idle, within, steps):
    """A live producer (each line's time at most --idle behind the wall clock when it is
    written, times in order), runs stopped and restarted after downtimes of any length:
    no line is ever late, and the results are those of one run over all of it in plain
    event time (as the events, not the cuts, decide)."""
    wall, time_, lines, downtimes = WALL, WALL - 10_000, [], {}
    for gap, behind, key, kind, downtime in steps:
        wall += gap
        time_ = max(time_, wall - behind * idle // 1000)
        lines.append((wall, ev(key, kind, time_)))
        if downtime is not None:
            downtimes[len(lines) - 1] = downtime
    current, results = pipeline(within, idle), []
    current.catch_up(WALL - 20_000)
    restart_at, backlog = None, []  # while the tool is down: when it starts again, what waits

    def restart():
        nonlocal current, restart_at, backlog, results
        current = restarted(current, within=within, idle=idle)
        for waiting in backlog:  # read at once, at the start: the backlog
            results += current.feed(waiting, restart_at)
        results += current.catch_up(restart_at)
        restart_at, backlog = None, []

    for index, (written, line) in enumerate(lines):
        if restart_at is not None and written >= restart_at:
            restart()
        if restart_at is not None:
            backlog.append(line)
            continue
        results += current.advance(written)  # the runtime's timers
        results += current.feed(line, written)
        if index in downtimes:  # stopped just after this line
            results += current.advance(written)
            restart_at = written + 1 + downtimes[index]
    if restart_at is not None:
        restart()
    results += current.finish()
    assert current.late == 0
    whole = pipeline(within, idle=None)
    expected = [result for _, line in lines for result in whole.feed(line, 0)] + whole.finish()
    assert sorted(map(repr, results)) == sorted(map(repr, expected))


# -- --max-future -------------------------------------------------------------------------


def test_an_event_from_the_future_is_rejected_and_never_moves_the_watermark():
    day = 86_400_000
    run = pipeline(within=1000, idle=500, max_future=300_000)
    run.catch_up(WALL)
    run.feed(ev("a", "create", WALL), WALL)
    with pytest.raises(FutureEvent) as rejected:
        run.feed(ev("bad-clock", "create", WALL + day), WALL + 10)
    assert rejected.value.reason.startswith("from the future: time ")
    assert "ahead of the wall clock" in rejected.value.reason and "--max-future 5m" in rejected.value.reason
    assert (run.rejected, run.events, run.late, run.frontier) == (1, 1, 0, WALL)
    # Real events go on: "a" is paid in time, a later create is not late.
    assert outcome(run.feed(ev("a", "pay", WALL + 200), WALL + 200)) == {"a": "success"}
    assert run.feed(ev("b", "create", WALL + 240), WALL + 250) == [] and run.late == 0
    # Exactly at the limit is not from the future.
    run.feed(ev("c", "create", WALL + 300_250), WALL + 250)
    assert run.rejected == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["create", "pay"]),
                          st.sampled_from([0, 10, 50, 400, 10_000])), min_size=1, max_size=30),
       st.sampled_from([0, 100, 1000]))
def test_the_batch_path_rejects_future_events_as_line_by_line(steps, max_future):
    lines, time_ = [], WALL
    for key, kind, ahead in steps:
        time_ += 7
        lines.append(ev(key, kind, time_ + ahead))
    now = WALL + 100
    one, batch = pipeline(max_future=max_future), pipeline(max_future=max_future)
    by_line, rejected = [], []
    for line in lines:
        try:
            by_line += one.feed(line, now)
        except RejectedLine as error:
            rejected.append(error.reason)
    by_batch, batch_rejected = [], []
    for results, stop in batch.feed_runs(lines, now):
        by_batch += results
        if stop < len(lines):
            try:
                by_batch += batch.feed(lines[stop], now)
            except RejectedLine as error:
                batch_rejected.append(error.reason)
    assert by_batch == by_line and batch_rejected == rejected
    assert batch.stats() == one.stats() and batch.frontier == one.frontier


# -- through the command: real processes, files and state ------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def append(path, *lines: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(b"".join(line + b"\n" for line in lines))


def watch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, "watch", "--json", *args], capture_output=True, timeout=timeout)


def test_the_issues_example_with_real_runs(tmp_path):
    events, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    args = [str(events), "--state", state, "--idle", "1s", "--within", "2s"]
    append(events, ev("o1", "create", now_ms()))
    first = watch(*args)
    assert (first.returncode, first.stdout) == (0, b"")
    written = now_ms()
    append(events, ev("o2", "create", written))
    time.sleep(0.5)
    append(events, ev("o2", "pay", now_ms()), ev("o3", "create", now_ms()))
    time.sleep(4)
    second = watch(*args, "--stats", str(tmp_path / "stats.json"))
    assert second.returncode == 0, second.stderr
    results = [orjson.loads(line) for line in second.stdout.splitlines()]
    assert {result["key"]: result["result"] for result in results} == {"o1": "timeout", "o2": "success", "o3": "timeout"}
    assert len(results) == 3 and b"late:" not in second.stderr
    stats = orjson.loads((tmp_path / "stats.json").read_bytes())
    assert (stats["late"], stats["rejected"], stats["pending"]) == (0, 0, 0)
    # The timeouts the downtime decided are marked as found at the restart.
    assert all(result.get("recovered") for result in results if result["result"] == "timeout")


def test_a_followed_service_stopped_longer_than_idle_reads_its_backlog_in_event_time(tmp_path):
    """The systemd way: ``--follow --state --idle``, stopped by SIGTERM, down 4 s while the
    shop writes, started again: the backlog is read in event time, then the wall clock
    times out what the downtime made due."""
    events, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    args = [*COMMAND, "watch", "--json", "-q", "--follow", str(events), "--state", state, "--idle", "1s", "--within", "2s"]
    append(events, ev("o1", "create", now_ms()))

    def run(stdout_path, until):
        with open(stdout_path, "wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.PIPE)
            try:
                wait_until_catching(process.pid, signal.SIGTERM)
                wait_for(lambda: until(stdout_path.read_bytes().splitlines()), what="the results", process=process)
            finally:
                process.send_signal(signal.SIGTERM)
                _, err = process.communicate(timeout=30)
        assert process.returncode == 143, err
        return [orjson.loads(line) for line in stdout_path.read_bytes().splitlines()], err

    # It reads o1 and stops (on a slow machine it may already time o1 out: then it says so).
    first, _ = run(tmp_path / "first.jsonl", lambda lines: time.sleep(0.3) or True)
    append(events, ev("o2", "create", now_ms()))
    time.sleep(0.5)
    append(events, ev("o2", "pay", now_ms()), ev("o3", "create", now_ms()))
    time.sleep(4)
    second, err = run(tmp_path / "second.jsonl", lambda lines: len(first) + len(lines) >= 3)
    results = first + second
    assert {result["key"]: result["result"] for result in results} == {"o1": "timeout", "o2": "success", "o3": "timeout"}
    assert len(results) == 3 and b"late:" not in err


def test_the_cron_recipe_scaled_down_loses_no_order(tmp_path):
    """docs/service.md's cron job (every 5 min, --idle 30s, --within 15m) scaled down:
    a shop writes orders in real time (each stamped when written), runs every second over
    the growing file, each continuing from --state. Every order gets exactly the result
    its pay decides; nothing is late. (The issue measured 351 of 512 orders without a
    result this way.)"""
    events, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    events.write_bytes(b"")
    within = 3000
    rng = random.Random(19)
    plan = []  # (key, pay after ms or None)
    for number in range(60):
        plan.append((f"o{number}", rng.choice([None, 100, 800, 2000, 4000])))  # 1 s or more from --within
    expected = {key: "success" if pay is not None and pay < within else "timeout" for key, pay in plan}
    stop = threading.Event()
    last_create = [0]  # when the last create was written (ms)

    def shop():
        """Creates spread over ~2.5 s, each pay its delay later (written by time)."""
        start = time.monotonic()
        schedule = sorted([(index * 0.04, key, "create") for index, (key, _) in enumerate(plan)]
                          + [(index * 0.04 + pay / 1000, key, "pay") for index, (key, pay) in enumerate(plan) if pay is not None])
        for at, key, kind in schedule:
            time.sleep(max(0.0, start + at - time.monotonic()))
            written = now_ms()
            append(events, ev(key, kind, written))
            if kind == "create":
                last_create[0] = written
        stop.set()

    writer = threading.Thread(target=shop, daemon=True)
    args = [str(events), "--key", "userId", "--within", f"{within}ms", "--idle", "300ms", "-q", "--state", state]
    outputs, runs = [], 0
    writer.start()
    while not stop.is_set() or runs < 3:
        done = watch(*args)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
        runs += 1
        time.sleep(1)
    writer.join()
    # The last deadline (plus --idle, plus a second) passes with nothing written.
    time.sleep(max(0.0, (last_create[0] + within + 300 + 1000 - now_ms()) / 1000))
    last = watch(*args, "--stats", str(tmp_path / "stats.json"))
    assert last.returncode == 0, last.stderr
    outputs.append(last.stdout)
    results = [orjson.loads(line) for output in outputs for line in output.splitlines()]
    assert sorted(result["id"] for result in results) == sorted({result["id"] for result in results})  # once each
    assert {result["key"]: result["result"] for result in results} == expected
    stats = orjson.loads((tmp_path / "stats.json").read_bytes())
    assert (stats["late"], stats["pending"]) == (0, 0)


def test_a_create_a_day_ahead_changes_nothing_also_across_restarts(tmp_path):
    """A client's clock a day ahead: its create is rejected "from the future"; open orders
    do not time out, real events are not late, in this run and the next (--state)."""
    events, state, stats, rejects = (tmp_path / name for name in ("events.jsonl", "state.db", "stats.json", "rejects.jsonl"))
    runner = CliRunner()
    args = ["watch", str(events), "--json", "--state", str(state), "--idle", "1m", "--within", "10m",
            "--stats", str(stats), "--rejects", str(rejects)]
    start = now_ms()
    append(events, ev("open", "create", start), ev("bad-clock", "create", start + 86_400_000), ev("soon", "create", start + 10))
    first = runner.invoke(main, args)
    assert (first.exit_code, first.stdout) == (0, "")  # nothing timed out: both real orders pending
    assert "line 2: from the future: time " in first.stderr
    counters = orjson.loads(stats.read_bytes())
    assert (counters["rejected"], counters["rejected_by_reason"], counters["pending"]) == (1, {"future": 1}, 2)
    assert orjson.loads(rejects.read_bytes().splitlines()[0])["reason"].startswith("from the future")
    append(events, ev("open", "pay", start + 20), ev("later", "create", start + 30))
    second = runner.invoke(main, args)
    assert second.exit_code == 0
    assert [orjson.loads(line)["key"] for line in second.stdout.splitlines()] == ["open"]  # a success, not late
    counters = orjson.loads(stats.read_bytes())
    assert (counters["late"], counters["pending"], counters["success"]) == (0, 2, 1)
    # --max-future off takes every stamp (for replays stamped ahead of this clock): here
    # that is the old trouble, the real events after it late.
    replay = runner.invoke(main, ["watch", str(events), "--json", "-q", "--max-future", "off"])
    assert '"key":"bad-clock"' in replay.stdout and "line 3: late: " in replay.stderr


def test_future_events_are_counted_on_metrics(tmp_path):
    port = free_port()
    process = start_monitored(["--within", "1s"], port)
    try:
        process.stdin.write(ev("a", "create", now_ms()) + b"\n" + ev("b", "create", now_ms() + 3_600_000) + b"\n")
        process.stdin.flush()
        key = 'ordertimeout_lines_rejected_total{reason="future"}'
        wait_for(lambda: scrape(port).get(key) == 1, what="the future event on /metrics", process=process)
    finally:
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def test_max_future_takes_off_durations_and_names_what_it_takes():
    outcome = CliRunner().invoke(main, ["watch", "--max-future", "soon"], input=b"")
    assert outcome.exit_code == 2 and "or off" in outcome.stderr
    env = dict(os.environ, ORDERTIMEOUT_MAX_FUTURE="off")
    verbose = CliRunner().invoke(main, ["watch", "-v"], input=ev("a", "create", 1) + b"\n", env=env)
    assert "--max-future off" in verbose.stderr and "(environment ORDERTIMEOUT_MAX_FUTURE)" in verbose.stderr

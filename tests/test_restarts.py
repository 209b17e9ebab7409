"""Cutting the input into runs never changes the results (issue 9's invariant).

One run over a whole input, or several runs over the same file while it grows, each
continuing from the last one's ``--state`` (ended at end of input, stopped by a signal,
or killed at a random moment), give the same set of results; each result exactly once,
except that after a kill the results decided since the last checkpoint may come again,
with the same id. Most cases run through the library on a virtual clock with real files
and real SQLite state files; a bounded number through real processes and real signals.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pathlib
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertimeout.rules.clocks import LoopClock
from ordertimeout.inputs.sources import END

from .helpers import COMMAND, wait_until_catching
from .restart_runs import BEHIND, CAUGHT_UP, ENDED, EPOCH, KEYS, KINDS, Options, Sink, build, one_run
from .virtual_time import run_virtual

async def append_all(path, clock, pieces, rotate_at=None):
    """Append each piece at its time to its file: 0 the one first named ``path``, 1 the
    one created at ``rotate_at`` under ``path`` when logrotate renamed the first (a logger
    that keeps its file open writes on to the renamed one)."""
    files = {0: path}

    async def rotate():
        await clock.sleep_until(rotate_at)
        files[0] = path.with_name(path.name + ".1")
        os.rename(path, files[0])
        path.write_bytes(b"")  # logrotate's `create`
        files[1] = path

    for at, target, piece in pieces:
        if rotate_at is not None and at >= rotate_at and 1 not in files:
            await rotate()
        await clock.sleep_until(at)
        with open(files[target], "ab") as handle:
            handle.write(piece)
    if rotate_at is not None and 1 not in files:  # after the last line
        await rotate()


async def scenario(tmp, options, pieces, runs, final_at, rotate_at=None):
    """The input ``pieces`` appended at their times while ``runs`` come and go (the file
    rotated at ``rotate_at``); then one ``--final`` run. Returns (stdout of all runs, what
    was fed, the last pipeline, all that was written: the renamed file, then the new)."""
    path, state = tmp / "events.jsonl", tmp / "state.db"
    path.write_bytes(b"")
    clock = LoopClock(EPOCH)
    clock.now_ms()  # anchor it at the loop's start
    writer = asyncio.ensure_future(append_all(path, clock, pieces, rotate_at))
    out, log = b"", []
    for start, stop, kind in runs:
        await clock.sleep_until(start)
        if kind == "eof":
            data, _ = await one_run(path, state, options, clock, log, follow=False, final=False)
        else:
            data, _ = await one_run(path, state, options, clock, log, follow=True, final=False,
                                    stop_at=stop, kill=kind == "kill")
        out += data
    await writer
    await clock.sleep_until(final_at)
    data, pipeline = await one_run(path, state, options, clock, log, follow=False, final=True)
    rotated = path.with_name(path.name + ".1")
    return out + data, log, pipeline, (rotated.read_bytes() if rotated.exists() else b"") + path.read_bytes()


class ReferenceReader:
    """The reference run's input: each line at the moment the cut runs fed it. Where a cut
    run ended, the reference's pipeline falls behind as a restored one is (``pipeline``:
    it is saved and restored); where a cut run caught up, the reference catches up."""

    def __init__(self, clock, script, end_at, pipeline=None):
        self.clock, self.script, self.end_at = clock, list(script), end_at
        self.pipeline = pipeline
        self.ready = False
        self.worked = False  # (the second look at a BEHIND or ENDED item: its moment was worked at)

    def caught_up(self):
        ready, self.ready = self.ready, False
        return ready

    def start(self, clock=None):
        pass

    def stop(self):
        pass

    def identity(self, name):
        return None

    async def get(self, timeout=None):
        at, item = self.script[0] if self.script else (self.end_at, END)
        if timeout is not None and at > self.clock.now_ms() + timeout * 1000:
            await asyncio.sleep(timeout)
            raise TimeoutError
        await self.clock.sleep_until(at)
        if self.script:
            self.script.pop(0)
        if item == CAUGHT_UP:  # the runtime asks caught_up() after a read that found nothing
            self.ready = True
            raise TimeoutError
        if item in (BEHIND, ENDED) and not self.worked:
            # The cut run worked at this moment first (timeouts due by the wall clock, as
            # the runtime does on its TimeoutError path), then bytes that were no whole
            # line made it wait (BEHIND; the lines, when whole, come as items) or it
            # stopped (ENDED).
            self.worked = True
            self.script.insert(0, (at, item))
            raise TimeoutError
        if item == BEHIND:
            self.worked = False
            self.pipeline.behind()
            return await self.get(timeout)
        if item == ENDED:
            self.worked = False
            self.pipeline.restore(self.pipeline.snapshot())
            raise TimeoutError  # (so the runtime sees it is behind before its next read)
        return item


async def reference_run(options, data=None, fed=None, end_at=None):
    """One run without state: over the whole file at once, or (when arrival times matter:
    processing time, --idle) fed each line at the moment the cut runs fed it."""
    clock = LoopClock(EPOCH)
    clock.now_ms()
    sink = Sink()
    runtime = build(options, clock, sink, [], final=True)
    if fed is None:
        reader = ReferenceReader(clock, [(EPOCH, ("whole", data, None)), (EPOCH, ("whole", b"", None))], EPOCH)
    else:
        script = [(at, raw if isinstance(raw, str) else ("whole", raw + b"\n", at)) for at, raw in fed]
        reader = ReferenceReader(clock, script, end_at, runtime.pipeline)
    await runtime.watch(reader)
    return bytes(sink.data), runtime.pipeline


def results(data: bytes) -> list[bytes]:
    """Result lines, without the "recovered" mark (a result found at a restart is the same result)."""
    return [line.replace(b',"recovered":true', b"") for line in data.splitlines()]


# -- the generated cases ----------------------------------------------------------------


@st.composite
def cases(draw, kills: bool):
    event_time = draw(st.booleans())
    within = draw(st.sampled_from([50, 120, 300]))
    lateness = draw(st.sampled_from([0, 0, 20, 80])) if event_time else 0
    # Where the wall clock decides (processing time, --idle), a kill -9 cannot promise the
    # same results: the lines read again after it arrive at a later moment, so they are
    # other events. Those options are cut by graceful stops only.
    idle = draw(st.sampled_from([None, None, 40, 200])) if event_time and not kills else None
    options = Options(
        mode=draw(st.sampled_from(["each", "next", "followed-by"])), event_time=event_time, within=within,
        lateness=lateness, idle=idle, paid_late=draw(st.sampled_from([None, None, 100])),
        checkpoint_every=draw(st.sampled_from([0, 10, 60])),
        chunk_bytes=draw(st.sampled_from([16, 64, 1 << 16])),
        windows=draw(st.sampled_from([(), (), (("x", 30), ("y", 400))])),
        remind=tuple(draw(st.lists(st.sampled_from([10, 40, 100]), max_size=2))),
        remind_before=tuple(draw(st.lists(st.sampled_from([5, 25, 60]), max_size=2))),
    )
    count = draw(st.integers(min_value=4, max_value=40))
    pieces, at, ts = [], EPOCH, EPOCH - 5000
    for number in range(count):
        key, kind = draw(st.sampled_from(KEYS)), draw(st.sampled_from(KINDS))
        at += draw(st.sampled_from([0, 0, 1, 10, 40, 150]))
        ts += draw(st.sampled_from([0, 0, 1, 10, 40, 150]))
        fields = {"userId": key, "type": kind}
        if options.windows:
            fields["m"] = draw(st.sampled_from(["x", "y", "z"]))  # z: the plain window
        if event_time:
            fields["ts"] = ts - draw(st.sampled_from([0, 0, 0, 15, 60, 200]))  # some disorder, some late
        line = orjson.dumps(fields) + b"\n"
        cut = draw(st.integers(min_value=0, max_value=len(line)))
        if 0 < cut < len(line) and draw(st.booleans()):  # a line written in two pieces
            pieces += [(at, number, line[:cut]), (at + draw(st.sampled_from([0, 5, 70])), number, line[cut:])]
        else:
            pieces.append((at, number, line))
    pieces.sort(key=lambda piece: piece[0])
    span = pieces[-1][0] - EPOCH + 100
    moments = sorted(draw(st.lists(st.integers(min_value=0, max_value=span), min_size=2, max_size=12, unique=True)))
    stops = ["eof", "signal"] + (["kill"] * 2 if kills else [])
    runs = []
    for start, stop in zip(moments[::2], moments[1::2]):
        kind = draw(st.sampled_from(stops))
        runs.append((EPOCH + start, EPOCH + stop, kind))
    final_at = max(pieces[-1][0], runs[-1][1]) + draw(st.sampled_from([0, 30, 1000]))
    rotate_at, targets = rotation(draw, kills, options, pieces, runs)
    pieces = [(at, targets.get(number, 0), piece) for at, number, piece in pieces]
    return options, pieces, runs, final_at, rotate_at


def rotation(draw, kills, options, pieces, runs):
    """Maybe a logrotate (rename, then a new file) at ``rotate_at``, and which file each
    line goes to (by line number): before it, the first; from it, for less than a second,
    the renamed one or the new one (the logger has not reopened yet, another writer has);
    after that, the new one. The renamed file is written to well within --rotate-wait.
    Often while a run follows the file, sometimes just before it is stopped (the new file
    still empty), sometimes between runs.

    Only where the invariant can hold: without kill -9, and once a run has known the first
    file (a file renamed before any run saw it is not one a run can find again)."""
    known = min((start for start, stop, kind in runs if kind == "eof" or stop - start >= 100), default=None)
    if kills or known is None or not draw(st.booleans()):
        return None, {}
    known += 100
    latest = max(pieces[-1][0], runs[-1][1])
    following = [(start + 100, stop) for start, stop, kind in runs if kind == "signal" and start + 100 >= known
                 and stop - start > 150]
    if following and draw(st.booleans()):
        begin, stop = draw(st.sampled_from(following))
        rotate_at = draw(st.one_of(st.integers(min_value=begin, max_value=stop), st.just(max(begin, stop - 10))))
    elif known <= latest:
        rotate_at = draw(st.integers(min_value=known, max_value=latest))
    else:
        return None, {}
    targets = {}
    for at, number, _ in pieces:
        if number not in targets and at >= rotate_at:  # (a line's first piece decides)
            targets[number] = draw(st.sampled_from([0, 1])) if at < rotate_at + options.rotate_wait - 500 else 1
        targets.setdefault(number, 0)
    return rotate_at, targets


def check(tmp, options, pieces, runs, final_at, rotate_at=None):
    cut_out, fed, cut_pipeline, data = run_virtual(scenario(tmp, options, pieces, runs, final_at, rotate_at))
    killed = any(kind == "kill" for _, _, kind in runs)
    if not killed:
        # Graceful stops: every line read exactly once, in order, whatever the cuts (with
        # a rotation, in the order the two files' lines arrived: the fed reference has it).
        read, written = [raw for _, raw in fed if isinstance(raw, bytes)], [line for line in data.split(b"\n") if line]
        assert read == written if rotate_at is None else sorted(read) == sorted(written)
    if options.event_time and options.idle is None and rotate_at is None:
        whole_out, whole_pipeline = run_virtual(reference_run(options, data=data))
    else:  # arrival times matter: feed the reference each line when the cut runs did
        whole_out, whole_pipeline = run_virtual(reference_run(options, fed=fed, end_at=final_at))
    whole, cut = results(whole_out), results(cut_out)
    assert len(set(whole)) == len(whole)  # ids are unique
    assert set(cut) == set(whole)
    if not killed:
        assert sorted(cut) == sorted(whole)  # each exactly once
    ids = collections.Counter(orjson.loads(line)["id"] for line in cut)
    assert all(count == 1 for count in ids.values()) or killed
    # The counters describe the whole history once, repeats after a kill included.
    assert cut_pipeline.stats() == whole_pipeline.stats()


@contextlib.contextmanager
def scratch(tmp_path_factory):
    """A fresh directory for one generated case: in memory (tmpfs) where there is one,
    since the case opens and checkpoints real SQLite files many times and each commit's
    fsync on a shared disk would dominate the run time; the files are the same."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        directory = tempfile.mkdtemp(prefix="ordertimeout-cuts-", dir="/dev/shm")
        try:
            yield pathlib.Path(directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("cuts")


PROFILE = settings(
    max_examples=int(os.environ.get("ORDERTIMEOUT_RESTART_EXAMPLES", "150")), deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROFILE
@given(cases(kills=False))
def test_graceful_cuts_give_each_result_exactly_once(tmp_path_factory, case):
    with scratch(tmp_path_factory) as directory:
        check(directory, *case)


@PROFILE
@given(cases(kills=True).filter(lambda case: case[0].event_time))
def test_kill_9_cuts_give_the_same_results_repeats_allowed(tmp_path_factory, case):
    with scratch(tmp_path_factory) as directory:
        check(directory, *case)


# -- the numbered defects of issue 9, one regression test each --------------------------


def cli(args, **kwargs):
    from click.testing import CliRunner

    from ordertimeout.cli import main

    return CliRunner().invoke(main, ["watch", "--json", *args], **kwargs)


def keys_of(outcome, kind=None):
    return [r["key"] for r in map(orjson.loads, outcome.stdout.splitlines()) if kind in (None, r["result"])]


def ev(key, kind, ts):
    return orjson.dumps({"userId": key, "type": kind, "ts": ts}) + b"\n"


def test_1_end_of_input_with_state_is_not_the_end_of_time(tmp_path):
    """A cron rerun over a growing file: the pay in the next lines makes it a success."""
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(ev("u1", "create", 1000))
    args = [str(source), "-q", "--state", state, "--within", "1s"]
    first = cli(args)
    assert (first.exit_code, first.stdout) == (0, "")  # pending, not a timeout
    with open(source, "ab") as handle:
        handle.write(ev("u1", "pay", 1500))
    assert keys_of(cli(args), "success") == ["u1"]
    # Without --state a run is final as before: the open order times out at the end.
    assert keys_of(cli([str(tmp_path / "events.jsonl"), "-q", "--within", "100ms"]), "timeout") == ["u1"]


def test_1_final_times_out_what_is_open_and_needs_state(tmp_path):
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(ev("u1", "create", 1000) + ev("u2", "create", 1200))
    assert cli([str(source), "-q", "--state", state]).stdout == ""
    final = cli([str(source), "-q", "--state", state, "--final"])
    assert keys_of(final, "timeout") == ["u1", "u2"]
    outcome = cli([str(source), "--final"])
    assert outcome.exit_code == 2 and "--final is for runs with --state" in outcome.stderr


@pytest.mark.parametrize("first_final", [False, True])
def test_2_the_watermark_survives_a_restart(tmp_path, first_final):
    """An event late before the restart is late after it, also after a --final run."""
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(ev("u1", "create", 5000))
    args = [str(source), "-q", "--state", state, "--within", "1s"]
    cli(args + (["--final"] if first_final else []))
    with open(source, "ab") as handle:
        handle.write(ev("u2", "create", 1000))  # behind the watermark 4999
    second = cli([*args, "--final", "--stats", str(tmp_path / "stats.json")])
    assert "late: time 1970-01-01T00:00:01.000Z is at or before the watermark 1970-01-01T00:00:04.999Z" in second.stderr
    assert "u2" not in keys_of(second)
    assert orjson.loads((tmp_path / "stats.json").read_bytes())["late"] == 1


def test_2_the_reorder_buffer_survives_a_restart(tmp_path):
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(ev("u1", "create", 1000) + ev("u2", "create", 1400))  # both still buffered
    args = [str(source), "-q", "--state", state, "--within", "1s", "--lateness", "500ms"]
    cli(args)
    with open(source, "ab") as handle:
        handle.write(ev("u1", "pay", 1200) + ev("u2", "pay", 1450))  # in time, out of order
    assert keys_of(cli([*args, "--final"]), "success") == ["u1", "u2"]


def test_3_a_file_is_the_same_file_however_it_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "events.jsonl").write_bytes(ev("u1", "create", 1000) + ev("u1", "pay", 1100))
    os.symlink("events.jsonl", tmp_path / "link.jsonl")
    state, stats = str(tmp_path / "state.db"), str(tmp_path / "stats.json")
    for name in ("events.jsonl", "./events.jsonl", str(tmp_path / "events.jsonl"), "link.jsonl"):
        outcome = cli([name, "-q", "--state", state, "--stats", stats])
        assert outcome.exit_code == 0 and outcome.stderr == ""
    counters = orjson.loads((tmp_path / "stats.json").read_bytes())
    assert (counters["events"], counters["success"]) == (2, 1)  # read once, under four names


def test_3_a_replaced_or_truncated_file_is_read_from_its_start_with_a_notice(tmp_path):
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(ev("u1", "create", 1000) + ev("u1", "pay", 1100))
    args = [str(source), "-q", "--state", state, "--stats", str(tmp_path / "stats.json")]
    cli(args)
    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(ev("u2", "create", 2000) + ev("u2", "pay", 2100) + ev("u3", "create", 2200))
    os.replace(replacement, source)  # rotated by a log shipper: a new file under the old name
    replaced = cli(args)
    assert f"{source} was replaced since the last run; reading it from the start" in replaced.stderr
    assert keys_of(replaced) == ["u2"]
    with open(source, "r+b") as handle:  # copytruncate: the same file, cut and written again
        handle.truncate(0)
        handle.write(ev("u3", "pay", 2300))
    truncated = cli(args)
    assert "was truncated (or rewritten) since the last run; reading it from the start" in truncated.stderr
    assert keys_of(truncated) == ["u3"]
    with open(source, "r+b") as handle:  # rewritten in place, longer than before: first bytes differ
        handle.write(ev("u4", "pay", 2400).replace(b"pay", b"PAY") + ev("u4", "create", 2500) * 3)
    assert "was truncated (or rewritten)" in cli(args).stderr


def test_4_restored_orders_time_out_on_a_quiet_stream_with_idle(tmp_path):
    """Orders restored from state time out with --idle though no line ever comes again."""
    state = str(tmp_path / "state.db")
    args = ["--state", state, "--idle", "200ms", "--within", "2s"]
    now = time.time_ns() // 1_000_000
    first = subprocess.run([*COMMAND, "watch", "--json", "-q", *args], input=ev("u1", "create", now),
                           capture_output=True, timeout=30)
    assert (first.returncode, first.stdout) == (0, b"")  # pending in the state file
    process = subprocess.Popen([*COMMAND, "watch", "--json", "-q", *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "the restored order never timed out"
        result = orjson.loads(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(timeout=20)
        process.stdout.close()
        process.stderr.close()
    assert (result["result"], result["key"], result["deadline"]) == ("timeout", "u1", now + 2000)


def test_a_growing_files_unfinished_last_line_waits_for_the_run_that_sees_it_whole(tmp_path):
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(ev("u1", "create", 1000) + b'{"userId":"u2","type":"cre')  # the writer is mid-line
    args = [str(source), "-q", "--state", state]
    first = cli(args)
    assert (first.stdout, first.stderr) == ("", "")  # not a broken line: a line not written yet
    with open(source, "ab") as handle:
        handle.write(b'ate","ts":1100}')  # complete, still without its newline
    assert cli(args).stderr == ""
    final = cli([*args, "--final"])  # the last run reads it as a line
    assert keys_of(final, "timeout") == ["u1", "u2"] and final.stderr == ""
    # Without --state every run is final: a last line without newline is a line.
    assert keys_of(cli([str(source), "-q"]), "timeout") == ["u1", "u2"]


# -- the same invariant through real processes and real signals (a bounded number) ------------


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGKILL)


def complete_lines(path):
    """What a consumer keeps of an output: its complete lines (kill -9 may tear the last)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].splitlines()


@pytest.mark.parametrize("seed", range(int(os.environ.get("ORDERTIMEOUT_PROCESS_CUTS", "4"))))
def test_real_processes_stopped_by_real_signals_give_the_same_results(tmp_path, seed):
    rng = random.Random(seed)
    whole, growing = tmp_path / "whole.jsonl", tmp_path / "events.jsonl"
    subprocess.run([*COMMAND, "generate", "--events", "600", "--users", "40", "--rate", "150", "--disorder", "20ms",
                    "--seed", str(seed), "-o", str(whole)], check=True)
    options = ["--within", "1s", "--lateness", "20ms", "--match", rng.choice(["each", "next", "followed-by"]), "--json", "-q"]
    data = whole.read_bytes()
    cuts = sorted(rng.sample(range(1, len(data)), 7))  # anywhere, mid-line too
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    growing.write_bytes(b"")
    # logrotate (rename, then a new file) in some scenarios, once a run has known the file:
    # the logger writes on to the renamed file up to the end of a line, then reopens.
    # Its own dice, so the other draws of a seed stay what they were.
    turn = random.Random(seed * 7919 + 1)
    rotate_from, rotated, rotation = turn.choice([None, 1, 2, 3]), tmp_path / "events.jsonl.1", ["before"]

    def append():
        if pieces:
            piece = pieces.pop(0)
            if rotation[0] == "logger":
                end = piece.rfind(b"\n") + 1
                with open(rotated, "ab") as handle:
                    handle.write(piece[:end] if end else piece)
                if not end:
                    return
                piece, rotation[0] = piece[end:], "reopened"
            with open(growing, "ab") as handle:
                handle.write(piece)

    def known():
        """Whether the last checkpoint knows the file now named ``growing`` (one renamed
        before any run saw it is not one a run can find again). Read between runs only."""
        if not os.path.exists(state):
            return False
        with contextlib.closing(sqlite3.connect(state)) as connection:
            inodes = {row[0] for row in connection.execute("SELECT inode FROM offsets")}
        return os.stat(growing).st_ino in inodes

    def logrotate(run):
        if rotation[0] == "before" and rotate_from is not None and run >= rotate_from and was_known:
            os.rename(growing, rotated)
            growing.write_bytes(b"")  # `create`
            rotation[0] = "logger"

    state = str(tmp_path / "state.db")
    args = [*COMMAND, "watch", str(growing), *options, "--state", state, "--checkpoint-every", "5ms"]
    seen, killed = [], False
    for run in range(rng.randint(3, 5)):
        was_known = known()
        append()
        output = tmp_path / f"run{run}.jsonl"
        with open(output, "wb") as out:
            if rng.random() < 0.3:  # a cron run: reads what is there, ends at its end
                logrotate(run)
                assert subprocess.run(args, stdout=out, stderr=subprocess.PIPE, timeout=60).returncode == 0
            else:  # a service: follows the file until a signal stops it at a random moment
                process = subprocess.Popen([*args, "--follow"], stdout=out, stderr=subprocess.PIPE)
                wait_until_catching(process.pid, signal.SIGHUP)
                time.sleep(rng.uniform(0.0, 0.4))
                logrotate(run)  # while it follows the file
                append()
                time.sleep(rng.uniform(0.0, 0.4))
                signum = rng.choice(STOP_SIGNALS)
                process.send_signal(signum)
                _, err = process.communicate(timeout=60)
                assert b"Traceback" not in err
                expected = -signum if signum == signal.SIGKILL else 128 + signum  # stopped in order
                assert process.returncode == expected, err
                killed |= signum == signal.SIGKILL
        seen += complete_lines(output)
    while pieces:
        append()
    final = subprocess.run([*args, "--final"], capture_output=True, timeout=60)
    assert final.returncode == 0, final.stderr
    seen += final.stdout.splitlines()
    clean = subprocess.run([*COMMAND, "watch", str(whole), *options], capture_output=True, check=True).stdout.splitlines()
    assert set(seen) == set(clean)
    if not killed:
        assert sorted(seen) == sorted(clean)  # each exactly once
    else:
        ids = {orjson.loads(line)["id"] for line in seen}
        assert len(ids) == len(set(seen))  # a repeat is the same result, with the same id


def test_3_lines_written_before_a_rotation_between_runs_are_read(tmp_path):
    """A cron run, then lines appended, then logrotate (rename + new file), then the next
    cron run: the appended lines used to be lost (only the new file was read, from its
    start). The rest of the renamed file is read first, then the new one."""
    source, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    source.write_bytes(ev("u1", "create", 1000))
    args = [str(source), "-q", "--state", state, "--within", "1s"]
    assert cli(args).stdout == ""
    with open(source, "ab") as handle:
        handle.write(ev("u1", "pay", 1500) + ev("u2", "create", 1600))  # after the run, before rotation
    os.rename(source, tmp_path / "events.jsonl.1")
    source.write_bytes(ev("u2", "pay", 1700) + ev("u3", "create", 1800))
    rotated = cli([*args, "--final"])
    assert f"{source} was rotated to {tmp_path / 'events.jsonl.1'}" in rotated.stderr
    assert keys_of(rotated, "success") == ["u1", "u2"] and keys_of(rotated, "timeout") == ["u3"]

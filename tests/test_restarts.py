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
import io
import os
import pathlib
import random
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline
from ordertimeout.rules.clocks import LoopClock
from ordertimeout.hosts.runtime import Runtime
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from ordertimeout.inputs.sources import END, ChunkReader, Input, resume_inputs
from ordertimeout.state.store import StateStore

from .helpers import COMMAND
from .virtual_time import run_virtual

EPOCH = 1_700_000_000_000
KEYS = ("a", "b", "c")
KINDS = ("create", "create", "create", "pay", "pay", "other", "cancel")


@dataclass(frozen=True)
class Options:
    """The options of one scenario (what ``watch`` would be given)."""

    mode: str
    event_time: bool
    within: int
    lateness: int = 0
    idle: int | None = None
    paid_late: int | None = None
    checkpoint_every: int = 0
    chunk_bytes: int = 64
    #: Issue 21: windows by the field "m" ((value, ms) pairs) and reminders.
    windows: tuple = ()
    remind: tuple = ()
    remind_before: tuple = ()

    @property
    def schema(self) -> EventSchema:
        return EventSchema(cancel_type="cancel" if self.mode == "each" else None, within=self.within,
                           within_by="m" if self.windows else None, windows=self.windows)

    @property
    def config(self) -> dict:
        return {"within_ms": self.within, "match": self.mode, "lateness_ms": self.lateness,
                "paid_late_ms": self.paid_late, "windows": [[value, ms] for value, ms in self.windows]}

    def matcher(self) -> Matcher:
        return Matcher(self.within, self.mode, self.paid_late, tuple(ms for _, ms in self.windows),
                       self.remind, self.remind_before)


class RecordingPipeline(Pipeline):
    """A pipeline that notes every line it is fed with the moment it was fed."""

    def __init__(self, *args, log, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def feed(self, raw, now):
        self.log.append((now, bytes(raw)))
        return super().feed(raw, now)

    def feed_lines(self, lines, now, start=0):  # the runtime's batch path
        results, stop = super().feed_lines(lines, now, start)
        self.log.extend((now, bytes(raw)) for raw in lines[start:stop])
        return results, stop


class Sink(io.RawIOBase):
    """A stdout that keeps what reached it; once ``dead`` (kill -9) nothing more does."""

    def __init__(self):
        self.data = bytearray()
        self.dead = False

    def writable(self):
        return True

    def write(self, data):
        if not self.dead:
            self.data += data
        return len(data)


def build(options: Options, clock, sink: Sink, log: list, *, final: bool, checkpointer=None):
    pipeline = RecordingPipeline(
        EventParser(options.schema), options.matcher(), log=log,
        time_mode=None, lateness=options.lateness, idle=options.idle,
    )
    writer = ResultWriter(OutputBuffer(sink), JsonFormatter())
    return Runtime(pipeline, clock, writer, RejectReporter(io.StringIO()), checkpointer=checkpointer,
                   checkpoint_every=options.checkpoint_every, final=final)


async def one_run(path, state_path, options, clock, log, *, follow, final, stop_at=None, kill=False):
    """One ``watch PATH --state STATE`` on the shared virtual clock; returns its stdout.

    ``stop_at``: the moment a signal stops it (``kill``: SIGKILL, so nothing it would
    write or save from then on gets out)."""
    sink = Sink()
    store = StateStore(str(state_path), options.config)
    checkpoint = store.open()

    def checkpointer(pipeline, offsets):
        if not sink.dead:
            store.save(pipeline, offsets)

    runtime = build(options, clock, sink, log, final=final, checkpointer=checkpointer)
    inputs = [Input(str(path), path=str(path), follow=follow)]
    if checkpoint is not None:
        runtime.pipeline.restore(checkpoint["pipeline"])
        inputs, positions, notices = resume_inputs(checkpoint["offsets"], inputs)
        assert notices == []  # the file only grew
        runtime.positions.update(positions)
    task = asyncio.ensure_future(runtime.watch(ChunkReader(inputs, chunk_bytes=options.chunk_bytes)))
    if stop_at is not None:
        done, _ = await asyncio.wait({task}, timeout=clock.seconds_until(stop_at))
        assert not done, "a followed file never ends by itself"
        sink.dead = kill
        task.cancel()  # what the CLI's signal handler does
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        store.close()
    return bytes(sink.data), runtime.pipeline


async def append_all(path, clock, pieces):
    for at, piece in pieces:
        await clock.sleep_until(at)
        with open(path, "ab") as handle:
            handle.write(piece)


async def scenario(tmp, options, pieces, runs, final_at):
    """The input ``pieces`` appended at their times while ``runs`` come and go; then one
    ``--final`` run. Returns (stdout of all runs, what was fed, the last pipeline)."""
    path, state = tmp / "events.jsonl", tmp / "state.db"
    path.write_bytes(b"")
    clock = LoopClock(EPOCH)
    clock.now_ms()  # anchor it at the loop's start
    writer = asyncio.ensure_future(append_all(path, clock, pieces))
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
    return out + data, log, pipeline, path.read_bytes()


class ScriptedReader:
    """The reference run's input: each line at the moment the cut runs fed it."""

    def __init__(self, clock, script, end_at):
        self.clock, self.script, self.end_at = clock, list(script), end_at

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
        return item


async def reference_run(options, data=None, fed=None, end_at=None):
    """One run without state: over the whole file at once, or (when arrival times matter:
    processing time, --idle) fed each line at the moment the cut runs fed it."""
    clock = LoopClock(EPOCH)
    clock.now_ms()
    sink = Sink()
    runtime = build(options, clock, sink, [], final=True)
    if fed is None:
        reader = ScriptedReader(clock, [(EPOCH, ("whole", data, None)), (EPOCH, ("whole", b"", None))], EPOCH)
    else:
        reader = ScriptedReader(clock, [(at, ("whole", raw + b"\n", at)) for at, raw in fed], end_at)
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
    for _ in range(count):
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
            pieces += [(at, line[:cut]), (at + draw(st.sampled_from([0, 5, 70])), line[cut:])]
        else:
            pieces.append((at, line))
    pieces.sort(key=lambda piece: piece[0])
    span = pieces[-1][0] - EPOCH + 100
    moments = sorted(draw(st.lists(st.integers(min_value=0, max_value=span), min_size=2, max_size=12, unique=True)))
    stops = ["eof", "signal"] + (["kill"] * 2 if kills else [])
    runs = []
    for start, stop in zip(moments[::2], moments[1::2]):
        kind = draw(st.sampled_from(stops))
        runs.append((EPOCH + start, EPOCH + stop, kind))
    final_at = max(pieces[-1][0], runs[-1][1]) + draw(st.sampled_from([0, 30, 1000]))
    return options, pieces, runs, final_at


def check(tmp, options, pieces, runs, final_at):
    cut_out, fed, cut_pipeline, data = run_virtual(scenario(tmp, options, pieces, runs, final_at))
    killed = any(kind == "kill" for _, _, kind in runs)
    if not killed:
        # Graceful stops: every line read exactly once, in order, whatever the cuts.
        assert [raw for _, raw in fed] == [line for line in data.split(b"\n") if line]
    if options.event_time and options.idle is None:
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
    assert "late: time 1000 is at or before the watermark 4999" in second.stderr
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


def wait_until_catching(pid, signum, timeout=30):
    """Wait until process ``pid`` has its own handler for ``signum`` (Linux: SigCgt in
    /proc), so the signal finds the run going rather than Python starting up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/status") as status:
            caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
        if caught & (1 << (signum - 1)):
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} never set up its handler for signal {signum}")


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

    def append():
        if pieces:
            with open(growing, "ab") as handle:
                handle.write(pieces.pop(0))

    state = str(tmp_path / "state.db")
    args = [*COMMAND, "watch", str(growing), *options, "--state", state, "--checkpoint-every", "5ms"]
    seen, killed = [], False
    for run in range(rng.randint(3, 5)):
        append()
        output = tmp_path / f"run{run}.jsonl"
        with open(output, "wb") as out:
            if rng.random() < 0.3:  # a cron run: reads what is there, ends at its end
                assert subprocess.run(args, stdout=out, stderr=subprocess.PIPE, timeout=60).returncode == 0
            else:  # a service: follows the file until a signal stops it at a random moment
                process = subprocess.Popen([*args, "--follow"], stdout=out, stderr=subprocess.PIPE)
                wait_until_catching(process.pid, signal.SIGHUP)
                time.sleep(rng.uniform(0.0, 0.4))
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

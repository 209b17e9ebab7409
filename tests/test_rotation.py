"""logrotate without copytruncate (issue 19, items 3 and 5), with real files and processes.

The shop's logger keeps writing to the renamed file until it reopens its log (between
logrotate's rename and its postrotate signal): those lines must be read, beside the new
file's, until the old file has been quiet for --rotate-wait, also across a restart. A stop
right after a rotation (the new file still empty) must leave a checkpoint from which the
next run neither reads a line twice nor skips one. The timing of the rotate-wait itself is
tested on virtual time; the rest with real processes and real signals.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import time

import orjson
import pytest

from ordertimeout.inputs.sources import DRAINED, ChunkReader, HandedOver, Input, resume_inputs
from ordertimeout.rules.clocks import LoopClock

from .helpers import COMMAND
from .helpers import wait_until_catching
from .virtual_time import run_virtual

EPOCH = 1_700_000_000_000


def ev(key, kind, ts):
    return orjson.dumps({"userId": key, "type": kind, "ts": ts}) + b"\n"


def pair(key, ts):
    return ev(key, "create", ts) + ev(key, "pay", ts + 5)


class Watch:
    """A ``watch --json -q`` process; its results as they come (read unbuffered)."""

    def __init__(self, *args):
        self.process = subprocess.Popen([*COMMAND, "watch", "--json", "-q", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.results = []
        self._partial = b""
        wait_until_catching(self.process.pid, signal.SIGTERM)

    def _read(self, seconds):
        ready, _, _ = select.select([self.process.stdout], [], [], seconds)
        if ready:
            data = os.read(self.process.stdout.fileno(), 65536)
            *lines, self._partial = (self._partial + data).split(b"\n")
            self.results += [orjson.loads(line) for line in lines]
            return bool(data)
        return False

    def wait_for(self, *keys, timeout=30):
        """Wait until a result for each of ``keys`` came (tolerant of a loaded machine)."""
        deadline = time.monotonic() + timeout
        while not set(keys) <= {result["key"] for result in self.results}:
            assert time.monotonic() < deadline, f"no result for {set(keys) - {r['key'] for r in self.results}}"
            self._read(0.1)

    def linger(self, seconds):
        """Collect what comes for ``seconds`` more."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(max(0.0, deadline - time.monotonic()))

    def stop(self, signum=signal.SIGTERM):
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=30)
        *lines, _ = (self._partial + out).split(b"\n")
        self.results += [orjson.loads(line) for line in lines]
        assert self.process.returncode == 128 + signum, err
        assert b"Traceback" not in err
        return err


def wait_until_open(pid, path, timeout=30):
    """Wait until process ``pid`` has the file now at ``path`` open (it saw the rotation)."""
    inode = os.stat(path).st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.stat(f"/proc/{pid}/fd/{fd}").st_ino == inode:
                    return
            except OSError:
                continue
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never opened the new {path}")


def outcome(results):
    """``{key: result}``, checking that no order was decided twice."""
    keys = [result["key"] for result in results]
    assert len(keys) == len(set(keys)), f"decided twice: {sorted(keys)}"
    assert len({result["id"] for result in results}) == len(results)
    return {result["key"]: result["result"] for result in results}


# -- item 3: the renamed file is read on until quiet ------------------------------------------


def test_a_writer_that_keeps_the_renamed_file_open_loses_no_line(tmp_path):
    path, rotated = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    path.write_bytes(pair("k0", 1000) + ev("k1", "create", 1010))
    watch = Watch("--follow", str(path), "--within", "10s", "--rotate-wait", "3s")
    try:
        watch.wait_for("k0")
        logger = open(path, "ab", buffering=0)  # the shop's logger: it keeps its file open
        os.rename(path, rotated)  # logrotate's rename...
        path.write_bytes(pair("k2", 1100))  # ...its `create`, and another writer already on it
        watch.wait_for("k2")  # the run follows the new file now
        logger.write(ev("k1", "pay", 1200) + pair("k3", 1300) + b"oops\n")  # ...and the logger still writes the old one
        with open(path, "ab") as new:
            new.write(pair("k4", 1400))
        watch.wait_for("k1", "k3", "k4")
        logger.close()  # postrotate: the logger reopens its log
        with open(path, "ab") as new:
            new.write(pair("k5", 1500))
        watch.wait_for("k5")
    finally:
        err = watch.stop(signal.SIGINT)
    assert outcome(watch.results) == {f"k{i}": "success" for i in range(6)}, err
    # A warning names the file a line came from: line 7 of the renamed file, not of the new.
    assert f"{path} (rotated 1):7: not valid JSON".encode() in err


def test_rotate_wait_ends_when_the_renamed_file_is_quiet_on_virtual_time(tmp_path):
    """The old file is read until it was quiet for the wait, no longer; then its last
    line is finished and it is closed. Virtual time: the schedule itself is checked."""
    path, rotated = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    path.write_bytes(b"a\n")

    async def scenario():
        clock = LoopClock(EPOCH)
        clock.now_ms()
        reader = ChunkReader([Input("events", path=str(path), follow=True)], rotate_wait_ms=1000)
        reader.start(clock)
        items = []

        async def collect():
            while True:
                name, chunk, _ = await reader.get()
                kind = type(chunk).__name__
                rest = getattr(chunk, "rest", None)
                items.append((clock.now_ms() - EPOCH, name, bytes(chunk), kind, rest))

        task = asyncio.ensure_future(collect())
        await asyncio.sleep(0.2)
        logger = open(path, "ab", buffering=0)
        os.rename(path, rotated)
        path.write_bytes(b"n1\n")
        await asyncio.sleep(0.5)
        logger.write(b"o1\n")  # at 0.7 s
        await asyncio.sleep(0.95)
        logger.write(b"o2\n")  # at 1.65 s: 0.95 s after o1 was read, so still read
        await asyncio.sleep(0.2)
        logger.write(b"o3")  # at 1.85 s, a last line without its newline
        await asyncio.sleep(1.5)
        logger.write(b"o4\n")  # at 3.35 s: 1.5 s after the last line, the file is done
        await asyncio.sleep(0.5)
        task.cancel()
        reader.stop()
        logger.close()
        return items, reader

    items, reader = run_virtual(scenario())
    rest = "events (rotated 1)"
    assert [(name, data or kind) for _, name, data, kind, _ in items] == [
        ("events", "bytes"),  # an empty chunk first: the file counts for a checkpoint at once
        ("events", b"a\n"), ("events", "HandedOver"), ("events", b"n1\n"),
        (rest, b"o1\n"), (rest, b"o2\n"), (rest, b"o3"), (rest, "_Drained"),
    ]
    handover = [(at, name, rest_name) for at, name, _, kind, rest_name in items if kind == HandedOver.__name__]
    assert [(name, rest_name) for _, name, rest_name in handover] == [("events", rest)]
    assert 200 <= handover[0][0] <= 300  # noticed within a poll or two of the rename
    drained = [(at, name) for at, name, _, kind, _ in items if kind == type(DRAINED).__name__]
    assert [name for _, name in drained] == [rest]
    assert 2850 <= drained[0][0] <= 2950  # 1 s after o3 was read (1.85 s), not before
    assert not any(data == b"o4\n" for _, _, data, _, _ in items)
    assert reader.identity(rest).path == f"{os.path.realpath(path)} (rotated 1)"
    assert reader.identity("events").inode == os.stat(path).st_ino


# -- item 5 and restarts: a stop right after a rotation ----------------------------------------


def test_a_stop_right_after_a_rotation_reads_nothing_twice_in_event_time(tmp_path):
    path, state, rejects = tmp_path / "events.jsonl", str(tmp_path / "state.db"), tmp_path / "rejects.jsonl"
    path.write_bytes(b"".join(pair(f"k{i}", 1000 + 10 * i) for i in range(20)) + ev("late", "create", 1300))
    args = ["--follow", str(path), "--state", state, "--within", "1s", "--rejects", str(rejects)]
    first = Watch(*args)
    first.wait_for(*[f"k{i}" for i in range(20)])
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_bytes(b"")  # logrotate's `create`: the new file is still empty...
    wait_until_open(first.process.pid, path)
    first.stop(signal.SIGTERM)  # ...when the service is stopped
    second = Watch(*args, "--rotate-wait", "1s")
    with open(path, "ab") as new:
        new.write(ev("late", "pay", 1400) + pair("k20", 1500))
    second.wait_for("late", "k20")
    second.linger(0.5)
    second.stop(signal.SIGTERM)
    assert outcome(first.results + second.results) == {**{f"k{i}": "success" for i in range(21)}, "late": "success"}
    assert rejects.read_bytes() == b""  # nothing read again, so nothing "late"


def test_a_stop_right_after_a_rotation_decides_nothing_again_in_processing_time(tmp_path):
    path, state = tmp_path / "events.jsonl", str(tmp_path / "state.db")
    path.write_bytes(ev("t0", "create", 0) + pair("s0", 0) + ev("t1", "create", 0))
    args = ["--follow", str(path), "--state", state, "--within", "500ms", "--processing-time"]
    first = Watch(*args)
    first.wait_for("t0", "s0", "t1")  # two timeouts, 500 ms after they were read
    os.rename(path, tmp_path / "events.jsonl.1")
    path.write_bytes(b"")
    wait_until_open(first.process.pid, path)
    first.stop(signal.SIGTERM)
    second = Watch(*args, "--rotate-wait", "500ms")
    with open(path, "ab") as new:
        new.write(pair("s1", 0))
    second.wait_for("s1")
    second.linger(1.0)  # an order read again would time out (again, under a new id) by now
    second.stop(signal.SIGTERM)
    decided = outcome(first.results + second.results)
    assert decided == {"t0": "timeout", "s0": "success", "t1": "timeout", "s1": "success"}


@pytest.mark.parametrize("restart", ["follow", "cron"])
def test_a_restart_within_the_rotate_wait_reads_the_rest_of_the_old_file(tmp_path, restart):
    """Stopped after the rotation, while the logger still writes the old file: the next
    run finds that file by its identity and reads what came since, and (following) what
    still comes within the rotate-wait; a cron run reads it at each run."""
    path, rotated, state = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1", str(tmp_path / "state.db")
    path.write_bytes(pair("k0", 1000) + ev("k1", "create", 1010))
    args = [str(path), "--state", state, "--within", "10s"]
    first = Watch("--follow", *args)
    first.wait_for("k0")
    logger = open(path, "ab", buffering=0)
    os.rename(path, rotated)
    path.write_bytes(pair("k2", 1100))
    first.wait_for("k2")
    first.stop(signal.SIGTERM)
    logger.write(ev("k1", "pay", 1200) + pair("k3", 1300))  # while the service is down
    results = first.results
    if restart == "follow":
        second = Watch("--follow", *args, "--rotate-wait", "3s")
        second.wait_for("k1", "k3")
        logger.write(pair("k4", 1400))  # after the restart, within the rotate-wait
        with open(path, "ab") as new:
            new.write(pair("k5", 1500))
        second.wait_for("k4", "k5")
        second.stop(signal.SIGTERM)
        results += second.results
    else:
        runs = [subprocess.run([*COMMAND, "watch", "--json", "-q", *args], capture_output=True, timeout=60)]
        logger.write(pair("k4", 1400))  # after that run: the next one reads it
        with open(path, "ab") as new:
            new.write(pair("k5", 1500))
        runs.append(subprocess.run([*COMMAND, "watch", "--json", "-q", *args], capture_output=True, timeout=60))
        runs.append(subprocess.run([*COMMAND, "watch", "--json", "-q", *args], capture_output=True, timeout=60))
        for run in runs:
            assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr
            results += [orjson.loads(line) for line in run.stdout.splitlines()]
    logger.close()
    assert outcome(results) == {f"k{i}": "success" for i in range(6)}


@pytest.mark.parametrize("follow", [False, True])
def test_a_rotation_between_reading_the_checkpoint_and_opening_the_file_loses_nothing(tmp_path, follow):
    """logrotate may rename the file in the moment between a restart's reading of its
    checkpoint and its opening of the path: the offset saved for the old file must not be
    applied to the new one. The old file's rest is read, then the new file from 0."""
    from ordertimeout.state.store import StateStore

    from . import restart_runs as restarts

    path, rotated, state = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1", tmp_path / "state.db"
    lines = [ev("a", "create", 1000), ev("a", "pay", 1100), ev("b", "create", 1200), ev("c", "create", 1300),
             ev("c", "pay", 1400)]
    path.write_bytes(lines[0] + lines[1])
    options = restarts.Options(mode="each", event_time=True, within=1000)

    async def scenario():
        clock = LoopClock(EPOCH)
        clock.now_ms()
        log = []
        await restarts.one_run(path, state, options, clock, log, follow=False, final=False)
        with open(path, "ab") as handle:
            handle.write(lines[2])  # after that run: the next one reads it from the old file
        store = StateStore(str(state), options.config)
        checkpoint = store.open()
        runtime = restarts.build(options, clock, restarts.Sink(), log, final=False,
                                 checkpointer=lambda pipeline, offsets: store.save(pipeline, offsets))
        runtime.pipeline.restore(checkpoint["pipeline"])
        inputs, positions, _ = resume_inputs(checkpoint["offsets"], [Input(str(path), path=str(path), follow=follow)])
        runtime.positions.update(positions)
        os.rename(path, rotated)  # now, before the file is opened
        path.write_bytes(lines[3] + lines[4])
        task = asyncio.ensure_future(runtime.watch(ChunkReader(inputs)))
        if follow:
            await asyncio.sleep(1.0)
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        store.close()
        await restarts.one_run(path, state, options, clock, log, follow=False, final=True)
        return log

    fed = [raw + b"\n" for _, raw in run_virtual(scenario()) if isinstance(raw, bytes)]  # (not the catch-ups)
    assert sorted(fed) == sorted(lines)  # each line once: none skipped, none read twice

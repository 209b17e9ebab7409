"""Shared test helpers: running lines through the library and the command, reading probe
files, the runtime on virtual time, scripted senders, random inputs, a free port."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import io
import os
import pathlib
import re
import socket
import subprocess
import time
import sys
import termios

import orjson
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, RejectedLine, TimeMode
from ordertimeout.hosts.runtime import Runtime
from ordertimeout.inputs.sources import END
from ordertimeout.rules.matcher import Success, Timeout
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter, json_line

SEMANTICS = pathlib.Path(__file__).parent / "semantics"
PROBES = SEMANTICS / "probes"
EXPECTED = SEMANTICS / "expected"
_EXPECTED_NAME = re.compile(r"(?P<probe>.+)__(?P<mode>each|next|followed-by)__within(?P<within>\d+)(?:__lateness(?P<lateness>\d+))?")

#: The fields the probe files compare (the original objects are left out there).
RESULT_FIELDS = ("result", "key", "created", "paid", "deadline")


def expected_cases():
    """Every expected file as (id, probe path, mode, within, lateness, expected dicts)."""
    for path in sorted(EXPECTED.glob("*.jsonl")):
        match = _EXPECTED_NAME.fullmatch(path.stem)
        assert match, path
        expected = [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
        yield (
            path.stem,
            PROBES / f"{match['probe']}.jsonl",
            match["mode"],
            int(match["within"]),
            int(match["lateness"] or 0),
            expected,
        )


def brief(result: dict) -> dict:
    """A result reduced to the fields the probe files hold."""
    return {name: result[name] for name in RESULT_FIELDS if name in result}


def run_event_time(lines, within, mode="each", lateness=0, schema=None, paid_late=None):
    """Feed ``lines`` (bytes) through a fresh event-time pipeline; return result dicts."""
    pipeline = Pipeline(
        EventParser(schema or EventSchema()),
        Matcher(within, mode, paid_late),
        time_mode=TimeMode.EVENT,
        lateness=lateness,
    )
    results = []
    for line in lines:
        try:
            results += pipeline.feed(line, now=0)
        except RejectedLine:
            pass
    results += pipeline.finish()
    return [orjson.loads(json_line(result)) for result in results], pipeline


def event(key, kind, ts, **extra) -> bytes:
    """One input line."""
    return orjson.dumps({"userId": key, "type": kind, "ts": ts, **extra})


COMMAND = [sys.executable, "-m", "ordertimeout"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def live_watch(*args):
    """A `watch` process fed through a pipe that stays open until the block ends."""
    process = subprocess.Popen([*COMMAND, "watch", "--json", "-q", *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.stdin.close()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == 0


def small_pipe(size: int = 4096):
    """A pipe that holds only ``size`` bytes (F_SETPIPE_SZ; 4096, a page, is the least):
    ``(reader, writer)`` file objects, unbuffered. A test that needs a full pipe fills it
    with a few kilobytes instead of megabytes."""
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, F_SETPIPE_SZ, size)
    assert fcntl.fcntl(write_fd, F_GETPIPE_SZ) == size
    return os.fdopen(read_fd, "rb", buffering=0), os.fdopen(write_fd, "wb", buffering=0)


def pipe_bytes(reader) -> int:
    """How many bytes wait in the pipe of ``reader`` (FIONREAD)."""
    return int.from_bytes(fcntl.ioctl(reader, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)


# <linux/fcntl.h>; the fcntl module names them from Python 3.10 on, not on every build.
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def obeying_file_permissions() -> None:
    """For ``preexec_fn``: the child obeys file permissions even if the suite runs as root.

    Root reads a mode-000 file through two capabilities (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH); dropping them from the bounding set before exec leaves the new
    program without them, so it meets the permission error a user meets. It stays root,
    so it still reaches Python and the code under /root or wherever they are installed.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed: the suite needs CAP_SETPCAP as root")


# <linux/prctl.h> and <linux/capability.h>
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


# -- the runtime on virtual time -------------------------------------------------------


EPOCH = 1_700_000_000_000


class RecordingStream(io.RawIOBase):
    """A stdout that notes the clock time of every write."""

    def __init__(self, clock):
        self.clock = clock
        self.writes = []

    def writable(self):
        return True

    def write(self, data):
        self.writes.append((self.clock.now_ms(), bytes(data)))
        return len(data)

    def lines(self):
        return [(at, orjson.loads(line)) for at, data in self.writes for line in data.splitlines()]


class ScriptedReader:
    """Chunks that arrive at given clock times (and are stamped so); the input stays open
    until ``end_at``. ``files`` names the inputs that are files a later run could resume."""

    def __init__(self, clock, script, end_at, files=None):
        self.clock = clock
        self.script = [(at, item if item is None or len(item) == 3 else (*item, at)) for at, item in script]
        self.end_at = end_at
        self.files = files or {}

    def start(self, clock=None):
        pass

    def stop(self):
        pass

    def identity(self, name):
        return self.files.get(name)

    async def get(self, timeout=None):
        at, item = self.script[0] if self.script else (self.end_at, END)
        now = self.clock.now_ms()
        if timeout is not None and at > now + timeout * 1000:
            await asyncio.sleep(timeout)
            raise TimeoutError
        await self.clock.sleep_until(at)
        if self.script:
            self.script.pop(0)
        return item


def make_runtime(clock, time_mode=None, within=1000, mode="each"):
    """A runtime on ``clock`` writing JSON results to a :class:`RecordingStream`: (runtime, stream)."""
    stream = RecordingStream(clock)
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(within, mode), time_mode=time_mode)
    writer = ResultWriter(OutputBuffer(stream), JsonFormatter())
    runtime = Runtime(pipeline, clock, writer, RejectReporter(io.StringIO()))
    return runtime, stream


# -- a sender on virtual time ------------------------------------------------------------


class Scripted:
    """A sender answering from a script: ``outcome(entry, attempt_number) -> Outcome``."""

    name = "scripted"

    def __init__(self, outcome, seconds=0.01, clock=None):
        self.outcome = outcome
        self.seconds = seconds
        self.clock = clock
        self.calls = []
        self.outcomes = []
        self.running = 0
        self.most_running = 0

    async def open(self):
        pass

    async def close(self):
        pass

    async def send(self, item):
        number = sum(1 for _, rid in self.calls if rid == item.id)
        self.calls.append((self.clock.now_ms(), item.id))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        outcome = self.outcome(item, number)
        self.outcomes.append((item.id, outcome.ok))  # in the order attempts end
        return outcome


# -- the matcher alone -------------------------------------------------------------------


W = 1000


def run_matcher(events, mode="each", within=W, end=True):
    """Feed (key, kind, time) events; return results as short tuples and the matcher."""
    matcher = Matcher(within, mode)
    results = []
    for key, kind, time in events:
        results += matcher.on_event(key, kind, time, f"{key}/{time}".encode())
    if end:
        results += matcher.drain()
    return [short(result) for result in results], matcher


def short(result):
    """A result as a tuple: (kind, key, created, paid / deadline / cancelled)."""
    if isinstance(result, Success):
        return ("success", result.key, result.created, result.paid)
    if isinstance(result, Timeout):
        return ("timeout", result.key, result.created, result.deadline)
    return ("cancelled", result.key, result.created, result.cancelled)


# -- random lines for the batch paths ----------------------------------------------------


KEYS = ["a", "b", "u-1", 7, "k:é"]
TYPES = ["create", "pay", "other", "cancel"]
#: Lines that stop a batch or go through the full parser: every way the fast path must step aside.
ODD_LINES = [
    b"",
    b"   ",
    b"not json",
    b"[1, 2]",
    b'{"userId": "a"}',
    b'{"userId": ["a"], "type": "create", "ts": 5}',
    b'{"userId": "a", "type": "create", "ts": "1970-01-01T00:00:00.005Z"}',
    b'{"userId": "b", "type": "pay", "ts": 5.0}',
    b'{"userId": "a", "type": "create"}',
    b'{"userId": "b", "type": "create", "ts": 99999999999999999}',
    b'\xef\xbb\xbf{"userId": "a", "type": "create", "ts": 0}',
    b'{"userId": "a", "type": "pay", "ts": 3}\r',
    b'{"userId": "b", "type": "create", "ts": 4}  ',
]

lines_strategy = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(KEYS), st.sampled_from(TYPES), st.integers(0, 40), st.integers(0, 30)),
        st.sampled_from(ODD_LINES),
    ),
    max_size=60,
)


def as_lines(items):
    """Turn (key, type, gap, jitter) items into lines with times that mostly rise."""
    time, lines = 0, []
    for item in items:
        if isinstance(item, bytes):
            lines.append(item)
            continue
        key, kind, gap, jitter = item
        time += gap
        lines.append(orjson.dumps({"userId": key, "type": kind, "ts": max(0, time - jitter), "n": len(lines)}))
    return lines


# -- traffic for the sinks ---------------------------------------------------------------


USERS = 12


def traffic():
    """USERS orders, every third paid in time: 12 results with known ids."""
    lines = [event(f"u{user}", "create", 1000 + user) for user in range(USERS)]
    lines += [event(f"u{user}", "pay", 1500 + user) for user in range(0, USERS, 3)]
    results, _ = run_event_time(lines, 1000)
    assert len(results) == USERS
    return b"\n".join(lines) + b"\n", {result["id"]: result for result in results}


# -- an --exec command -------------------------------------------------------------------


# Appends "id result key" and the stdin object to files in $OUT; fails the first $FAILS
# attempts of each result (a counter file per id).
SCRIPT = r'''
count="$OUT/tries-$ORDERTIMEOUT_ID"
tries=$(cat "$count" 2>/dev/null || echo 0)
echo $((tries + 1)) > "$count"
if [ "$tries" -lt "${FAILS:-0}" ]; then exit 7; fi
body=$(cat)
echo "$ORDERTIMEOUT_ID $ORDERTIMEOUT_RESULT $ORDERTIMEOUT_KEY ${ORDERTIMEOUT_WEBHOOK_SECRET:-nosecret}" >> "$OUT/env"
echo "$body" >> "$OUT/bodies"
'''


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

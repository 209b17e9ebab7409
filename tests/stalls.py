"""A stdout reader that stalls: real pipes made small (F_SETPIPE_SZ), a run blocked in the
middle of a write, and the checks on what came out (tests/test_stops.py and
tests/test_kafka_stops.py share them)."""

import fcntl
import os
import signal
import subprocess
import time

import orjson

from .helpers import COMMAND

F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
FIONREAD = 0x541B


def small_pipe():
    """A pipe whose buffer holds one page: (read end, write end, its capacity)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    return read_end, write_end, fcntl.fcntl(write_end, F_GETPIPE_SZ)


def queued(fd) -> int:
    """Bytes waiting in the pipe of ``fd``."""
    return int.from_bytes(fcntl.ioctl(fd, FIONREAD, b"\0\0\0\0"), "little")


def wait_until_blocked(read_end, capacity, process) -> None:
    """Until the writer at the other end of the pipe is blocked: the pipe nearly full (a
    write of a whole line that does not fit waits) and not moving."""
    deadline, before = time.monotonic() + 60, -1
    while True:
        assert time.monotonic() < deadline and process.poll() is None, "the run never blocked on stdout"
        now = queued(read_end)
        if now == before and now > capacity // 2:
            return
        before = now
        time.sleep(0.1)


def start_stalled(args, command=("watch",)):
    """Start ``ordertimeout watch ARGS`` (or ``command``) with stdout on a small pipe; read
    64 KB and stop reading; return once the pipe is full again (the run is blocked
    writing) and the process catches its stop signals. Returns (process, read end, bytes
    read)."""
    read_end, write_end, capacity = small_pipe()
    process = subprocess.Popen([*COMMAND, *command, *args], stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    return process, read_end, stall(process, read_end, capacity)


def stall(process, read_end: int, capacity: int) -> bytearray:
    """Read 64 KB of ``process``'s stdout (the read end of a pipe of ``capacity``) and stop
    reading; return them once the pipe is full again (the process is blocked writing) and
    it catches its stop signals."""
    got = bytearray()
    while len(got) < 65536:
        chunk = os.read(read_end, 65536 - len(got))
        assert chunk, process.stderr.read()
        got += chunk
    wait_until_blocked(read_end, capacity, process)
    wait_until_catching(process)
    return got


def wait_until_catching(process) -> None:
    """Until the run's own stop handlers are in place (Linux: SigCgt in /proc)."""
    deadline, caught = time.monotonic() + 60, 0
    while caught & (1 << (signal.SIGHUP - 1)) == 0:
        assert time.monotonic() < deadline and process.poll() is None, "the run never caught its signals"
        with open(f"/proc/{process.pid}/status") as status:
            caught = next(int(line.split()[1], 16) for line in status if line.startswith("SigCgt:"))
        time.sleep(0.01)


def read_to_end(fd) -> bytes:
    data = bytearray()
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    os.close(fd)
    return bytes(data)


def assert_whole_lines(data: bytes) -> list[bytes]:
    """Every line is one whole JSON result: nothing cut, nothing glued."""
    assert data.endswith(b"\n")
    lines = data.splitlines()
    for line in lines:
        assert orjson.loads(line)["result"] in ("success", "timeout"), line[:200]
    return lines

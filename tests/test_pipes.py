"""The real process behind real pipes: prompt results, quiet `| head`, timers on time."""

import select
import subprocess
import time

import orjson
import pytest

from .helpers import COMMAND, live_watch


def read_line(stream, timeout):
    """One line from a pipe, or None if none comes within ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else None


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.jsonl"
    lines = []
    for i in range(200_000):
        kind = "create" if i % 2 == 0 else "other"
        lines.append(b'{"userId":"%d","type":"%b","ts":%d}' % (i % 1000, kind.encode(), i))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_head_ends_the_run_quietly_with_status_141(big_file):
    process = subprocess.Popen([*COMMAND, "watch", str(big_file), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()  # what `| head -1` does after its line
    _, err = process.communicate(timeout=30)
    assert orjson.loads(first)["result"] == "timeout"
    assert process.returncode == 141  # as `yes | head` would: the reader left, nothing more was written
    assert err == b""


def test_results_reach_a_pipe_before_the_input_ends():
    with live_watch() as process:
        process.stdin.write(b'{"userId":"1","type":"create","ts":1000}\n{"userId":"1","type":"pay","ts":1200}\n')
        process.stdin.flush()
        line = read_line(process.stdout, timeout=10)
        assert line is not None and orjson.loads(line)["result"] == "success"


def test_processing_time_timeout_prints_on_time_without_more_input():
    within_ms = 300
    with live_watch("--within", f"{within_ms}ms") as process:
        process.stdin.write(b'{"userId":"1","type":"create"}\n')
        process.stdin.flush()
        line = read_line(process.stdout, timeout=10)
        arrived_ms = time.time_ns() // 1_000_000
        assert line is not None
        result = orjson.loads(line)
        assert result["result"] == "timeout"
        assert result["deadline"] - result["created"] == within_ms
        # Printed within a few tens of ms of its deadline (wall clock of both processes).
        assert -5 <= arrived_ms - result["deadline"] <= 60


@pytest.mark.parametrize("signum,code", [(2, 130), (15, 143)])
def test_signal_stops_in_order_and_reports_pending(signum, code):
    process = subprocess.Popen([*COMMAND, "watch", "--json", "--within", "1h"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b'{"userId":"1","type":"create"}\n{"userId":"2","type":"create"}\n{"userId":"2","type":"pay"}\n')
    process.stdin.flush()
    line = read_line(process.stdout, timeout=10)  # the success is out: the lines were read
    assert orjson.loads(line)["result"] == "success"
    process.send_signal(signum)
    out, err = process.communicate(timeout=10)
    process.stdin.close()
    assert process.returncode == code
    assert out == b""
    assert b"1 pending" in err and b"Traceback" not in err

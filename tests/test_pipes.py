"""The real process behind real pipes: prompt results, quiet `| head`, timers on time."""

import os
import select
import signal
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


@pytest.mark.parametrize("signum,code", [(2, 130), (15, 143), (1, 129)])
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


def test_sighup_saves_the_checkpoint_like_sigterm(tmp_path):
    """SIGHUP (the terminal closed, or a service manager's reload) used to kill the run
    with no summary and no checkpoint."""
    state = str(tmp_path / "state.db")
    process = subprocess.Popen([*COMMAND, "watch", "--json", "--state", state, "--within", "1h"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b'{"userId":"1","type":"create","ts":1000}\n{"userId":"2","type":"create","ts":2000}\n'
                        b'{"userId":"2","type":"pay","ts":2500}\n')
    process.stdin.flush()
    assert orjson.loads(read_line(process.stdout, timeout=10))["result"] == "success"
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=10)
    process.stdin.close()
    assert process.returncode == 129 and b"1 pending" in err
    final = subprocess.run([*COMMAND, "watch", "--json", "-q", "--state", state, "--within", "1h", "--final"],
                           input=b"", capture_output=True, timeout=30)
    (result,) = [orjson.loads(line) for line in final.stdout.splitlines()]
    assert (result["result"], result["key"]) == ("timeout", "1")


def test_stdin_from_dev_null_ends_at_once():
    """`watch < /dev/null` used to hang for ever: /dev/null cannot be polled."""
    with open(os.devnull, "rb") as devnull:
        outcome = subprocess.run([*COMMAND, "watch", "--json"], stdin=devnull, capture_output=True, timeout=30)
    assert outcome.returncode == 0 and outcome.stdout == b""
    assert outcome.stderr.startswith(b"ordertimeout: 0 events")


def test_a_closed_stdout_with_state_never_records_an_unwritten_result(tmp_path):
    """The reader is gone before the first result: exit 141, and the next run prints them all."""
    state, big_file = str(tmp_path / "state.db"), tmp_path / "events.jsonl"
    subprocess.run([*COMMAND, "generate", "--events", "20000", "--users", "300", "-o", str(big_file)], check=True)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the consumer died before reading anything
    process = subprocess.run([*COMMAND, "watch", str(big_file), "--json", "--state", state],
                             stdout=write_end, stderr=subprocess.PIPE, timeout=60)
    os.close(write_end)
    assert process.returncode == 141 and b"Traceback" not in process.stderr
    again = subprocess.run([*COMMAND, "watch", str(big_file), "--json", "-q", "--state", state, "--final"],
                           capture_output=True, timeout=60)
    clean = subprocess.run([*COMMAND, "watch", str(big_file), "--json", "-q"], capture_output=True, timeout=60)
    assert again.stdout == clean.stdout and clean.stdout

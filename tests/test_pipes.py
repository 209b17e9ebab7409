"""The real process behind real pipes: prompt results, quiet `| head`, timers on time."""

import os
import select
import signal
import subprocess
import time

import orjson
import pytest

from .helpers import COMMAND, live_watch, small_pipe


def read_line(stream, timeout):
    """One line from a pipe, or None if none comes within ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else None


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "big.jsonl"
    lines = []
    for i in range(4000):  # ~130 kB of results: far more than the small pipe below holds
        kind = "create" if i % 2 == 0 else "other"
        lines.append(b'{"userId":"%d","type":"%b","ts":%d}' % (i % 1000, kind.encode(), i))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_head_ends_the_run_quietly_with_status_141(big_file):
    reader, writer = small_pipe()  # a page: the run cannot write all of its results ahead
    with writer:
        process = subprocess.Popen([*COMMAND, "watch", str(big_file), "--json"], stdout=writer, stderr=subprocess.PIPE)
    first = reader.readline()
    reader.close()  # what `| head -1` does after its line
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
        # Printed at its deadline with no further input (wall clock of both processes); the
        # bound is loose for a loaded machine: bench/run.py measures the lateness itself.
        assert -5 <= arrived_ms - result["deadline"] <= 250


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


def test_a_named_pipe_whose_writer_came_first_is_read_whole(tmp_path):
    """`watch FIFO` used to open the pipe once to check it and close it again: a writer
    already waiting wrote into that first opening, its lines were thrown away, and the
    run then waited for ever for a writer that had left."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    lines = b'{"userId":"1","type":"create","ts":1000}\n{"userId":"1","type":"pay","ts":1200}\n'
    writer = subprocess.Popen(["sh", "-c", f"printf '%s' '{lines.decode()}' > '{fifo}'"])
    try:
        process = subprocess.run([*COMMAND, "watch", str(fifo), "--json", "-q"], capture_output=True, timeout=30)
    finally:
        writer.kill()
        writer.wait()
    assert process.returncode == 0, process.stderr
    assert [orjson.loads(line)["result"] for line in process.stdout.splitlines()] == ["success"]


def test_follow_reads_a_named_pipe_writer_after_writer_without_blocking_timers(tmp_path):
    """`--follow FIFO` used to open the pipe in the event loop (blocking it until a writer
    came) and then fail with "Illegal seek". A pipe is read by the reader thread; each
    writer's lines are read in turn, and timeouts fire while no writer is there."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen([*COMMAND, "watch", "--follow", str(fifo), "--json", "-q", "--processing-time",
                                "--within", "300ms"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for key in ("first", "second"):  # two writers, one after the other
            with open(fifo, "wb") as writer:
                writer.write(b'{"userId":"%b","type":"create"}\n' % key.encode())
            line = read_line(process.stdout, timeout=20)  # its timeout, with no writer attached
            assert line is not None and orjson.loads(line)["key"] == key
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=20)
        finally:
            process.kill()  # never left behind by a failing test
    assert process.returncode == 143 and b"Traceback" not in err and b"Error" not in err, err


def test_ctrl_c_while_the_command_is_still_starting_ends_quietly_with_130():
    """A SIGINT before the run's own handlers are in place (while the installed script
    is still importing the command) used to print a KeyboardInterrupt traceback."""
    script = (
        "import os, signal, sys\n"
        "sys.argv[0] = '/usr/local/bin/ordertimeout'  # as the installed script is named\n"
        "import ordertimeout\n"
        "os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the command is being imported\n"
        "from ordertimeout.cli import main\n"
        "main(['watch', '--json'])\n"
    )
    assert_ends_quietly_with_130(script)


def test_ctrl_c_while_a_compiled_module_initializes_ends_quietly_with_130():
    """A SIGINT that lands while orjson's compiled module is initializing (it imports
    Python modules then) used to crash the process with a segfault (status -11): the
    SystemExit raised by the start-up handler cannot unwind through that init."""
    script = (
        "import os, signal, sys\n"
        "sys.argv = ['/usr/local/bin/ordertimeout', 'generate']  # as the installed script is named\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'json.decoder':  # imported by orjson's compiled module as it initializes\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "import ordertimeout\n"
        "import ordertimeout.rules.events  # (the package itself loads its parts on first use)\n"
    )
    assert_ends_quietly_with_130(script)


def assert_ends_quietly_with_130(script: str) -> None:
    """``python -c script`` ends with status 130 and prints nothing at all."""
    outcome = subprocess.run([COMMAND[0], "-c", script], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert (outcome.returncode, outcome.stdout, outcome.stderr) == (130, b"", b"")


def test_ctrl_c_while_options_are_read_ends_quietly_with_130(tmp_path):
    """A SIGINT while `python -m ordertimeout` reads its options (here a --config that is a
    named pipe nobody has written yet) used to end as click's "Aborted!" with status 1."""
    config = tmp_path / "config.fifo"
    os.mkfifo(config)
    process = subprocess.Popen([*COMMAND, "watch", "--config", str(config), "--json"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with open(config, "wb"):  # returns once the command has opened its config: it is starting
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert (process.returncode, out, err) == (130, b"", b"")


def test_ctrl_c_during_generate_ends_quietly_with_130(tmp_path):
    """generate has no run to stop in order: Ctrl-C used to end it as "Aborted!" with 1."""
    process = subprocess.Popen([*COMMAND, "generate", "--events", "100000000", "--users", "1000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"{")  # it is writing
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, err) == (130, b"")
    assert out.endswith(b"\n") or out == b""  # whole lines only


def test_a_run_under_nohup_keeps_running_when_the_terminal_closes():
    """A signal the run was started with ignored (nohup ignores SIGHUP) stays ignored: the
    run used to install its own handler and stop with 129 when the terminal closed."""
    process = subprocess.Popen([*COMMAND, "watch", "--json", "--within", "1h"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    try:
        process.stdin.write(b'{"userId":"1","type":"create","ts":1000}\n{"userId":"1","type":"pay","ts":1200}\n')
        process.stdin.flush()
        assert read_line(process.stdout, timeout=20) is not None  # the run is under way
        process.send_signal(signal.SIGHUP)
        process.stdin.write(b'{"userId":"2","type":"create","ts":2000}\n{"userId":"2","type":"pay","ts":2200}\n')
        process.stdin.flush()
        line = read_line(process.stdout, timeout=20)
        assert line, "the run stopped at SIGHUP"
        assert orjson.loads(line)["key"] == "2"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        process.stdin.close()
    assert process.returncode == 143, err

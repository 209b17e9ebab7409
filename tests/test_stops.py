"""A stop never cuts stdout, and every result shown is in the outbox first: real processes,
real pipes made small (F_SETPIPE_SZ), real signals, real state files, a real local
webhook receiver.

A reader that takes 64 KB and stalls fills the pipe, so the run blocks in the middle of a
write; a stop then must neither cut a line nor record an unwritten result as written.
"""

import os
import random
import signal
import subprocess
import threading
import time

import orjson
import pytest

from .helpers import COMMAND
from .stalls import assert_whole_lines, read_to_end, small_pipe, start_stalled, wait_until_catching
from .webhook_receiver import SECRET, Receiver

STOPS = [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """Events (three chunks of input) whose results (about 2.5 MB) are far more than the pipe and
    the 64 KB the reader takes first, and the results of one run without --state."""
    path = tmp_path_factory.mktemp("stops") / "events.jsonl"
    subprocess.run([*COMMAND, "generate", "--events", "16000", "--users", "1000", "--seed", "5", "-o", str(path)],
                   check=True)
    whole = subprocess.run([*COMMAND, "watch", str(path), "--json", "-q"], capture_output=True, check=True).stdout
    assert len(whole) > 2_000_000
    return path, whole.splitlines()


@pytest.mark.parametrize("signum,code", STOPS, ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_stop_while_the_reader_stalls_cuts_no_line_and_loses_no_result(tmp_path, events, signum, code):
    path, whole = events
    args = [str(path), "--json", "-q", "--state", str(tmp_path / "state.db")]
    process, read_end, got = start_stalled(args)
    process.send_signal(signum)
    time.sleep(0.3)  # the handler runs while the write is blocked
    assert process.poll() is None  # a first signal waits for the reader
    got += read_to_end(read_end)  # the reader resumes
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert b"Traceback" not in err
    first = assert_whole_lines(bytes(got))
    assert 0 < len(first) < len(whole)  # stopped mid-way: the next run has work left
    rest = subprocess.run([*COMMAND, "watch", *args, "--final"], capture_output=True, timeout=60)
    assert rest.returncode == 0, rest.stderr
    assert sorted(first + rest.stdout.splitlines()) == sorted(whole)  # each result exactly once


@pytest.mark.parametrize("signum,code", STOPS[:2], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_exits_at_once_and_the_next_run_writes_what_was_not_recorded(tmp_path, events,
                                                                                    signum, code):
    path, whole = events
    args = [str(path), "--json", "-q", "--state", str(tmp_path / "state.db")]
    process, read_end, got = start_stalled(args)
    process.send_signal(signum)
    time.sleep(0.2)
    process.send_signal(signum)
    process.wait(timeout=10)  # while the reader still stalls
    assert b"Traceback" not in process.stderr.read()
    process.stderr.close()
    assert process.returncode == code
    got += read_to_end(read_end)
    shown = got[: got.rfind(b"\n") + 1]  # the write in progress may end in a cut line
    rest = subprocess.run([*COMMAND, "watch", *args, "--final"], capture_output=True, timeout=60)
    assert rest.returncode == 0, rest.stderr
    seen = assert_whole_lines(bytes(shown)) + rest.stdout.splitlines()
    assert set(seen) == set(whole)  # nothing lost; what was not recorded comes again


def test_a_stop_of_simulate_while_the_reader_stalls_cuts_no_line(tmp_path):
    """simulate shares the run's end with watch: a stop while stdout is full waits for
    the reader, and no line is cut."""
    process, read_end, got = start_stalled(["--json", "-q", "--interval", "1ms"], command=("simulate",))
    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    got += read_to_end(read_end)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert_whole_lines(bytes(got))


# -- item 6: every result printed is in the outbox first --------------------------------


def outbox_ids(state) -> set:
    listing = subprocess.run([*COMMAND, "outbox", str(state), "--json"], capture_output=True, timeout=60)
    assert listing.returncode in (0, 1), listing.stderr  # 1: some rows are dead or pending
    return {orjson.loads(line)["id"] for line in listing.stdout.splitlines()}


@pytest.mark.parametrize("seed", range(int(os.environ.get("ORDERTIMEOUT_OUTBOX_KILLS", "3"))))
def test_every_result_shown_is_in_the_outbox_when_kill_9_comes(tmp_path, seed):
    """Processing time, so a result shown and then lost from the outbox would never be
    decided again (the restart reads the lines as new events, with other ids): the
    property holds only if the outbox has every result before stdout does."""
    rng = random.Random(seed)
    state, out_path = tmp_path / "state.db", tmp_path / "out.jsonl"
    receiver = Receiver().accept()
    env = dict(os.environ, ORDERTIMEOUT_WEBHOOK_SECRET=SECRET)
    args = [*COMMAND, "watch", "--json", "-q", "--processing-time", "--within", f"{rng.choice([20, 50, 200])}ms",
            "--state", str(state), "--checkpoint-every", "2s", "--webhook", receiver.url]
    try:
        with open(out_path, "wb") as out:
            process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE, env=env)
        wait_until_catching(process)
        kill_at = time.monotonic() + rng.uniform(0.2, 1.5)
        n = 0
        while time.monotonic() < kill_at:
            lines = b"".join(b'{"userId":"u%d","type":"%s"}\n' % (n + i, b"create" if rng.random() < 0.8 else b"pay")
                             for i in range(rng.randint(1, 40)))
            n += 40
            process.stdin.write(lines)
            process.stdin.flush()
            time.sleep(rng.uniform(0.0, 0.02))
        process.kill()
        process.wait(10)
        process.stdin.close()
        process.stderr.close()
        shown = {orjson.loads(line)["id"] for line in out_path.read_bytes().splitlines()
                 if line.endswith(b"}")}  # kill -9 may tear the last line
        assert shown, "nothing was shown before the kill"
        assert shown <= outbox_ids(state) | receiver.delivered_ids()
        # ...and the next run delivers them, though it decides other results from the input.
        restart = subprocess.run([*args, "--final"], stdin=subprocess.DEVNULL, capture_output=True, env=env,
                                 timeout=120)
        assert restart.returncode == 0, restart.stderr
        assert shown <= receiver.delivered_ids()
    finally:
        receiver.close()


def test_results_the_outbox_cannot_take_are_not_printed(tmp_path):
    """The state file's disk fills up (a file size limit for this process only): the run
    ends with one Error: line, and every result it printed is in the outbox."""
    import resource

    state = tmp_path / "state.db"
    pad = "x" * 5000
    lines = b"".join(orjson.dumps({"userId": f"u{n}", "type": "create", "ts": 2000 + n, "pad": pad}) + b"\n"
                     for n in range(200))

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))

    delivered = tmp_path / "delivered"
    run = subprocess.run([*COMMAND, "watch", "--json", "-q", "--within", "10ms", "--state", str(state), "--final",
                          "--exec", f'echo "$ORDERTIMEOUT_ID" >> {delivered}', "--drain-timeout", "0"],
                         input=lines, capture_output=True, preexec_fn=small_disk, timeout=60)
    assert run.returncode == 1
    assert run.stderr.decode().splitlines()[-1].startswith("Error: cannot write the outbox of the state file")
    assert b"Traceback" not in run.stderr
    shown = {orjson.loads(line)["id"] for line in assert_whole_lines(run.stdout)}
    assert 0 < len(shown) < 200
    assert shown <= outbox_ids(state) | set(delivered.read_text().split() if delivered.exists() else [])


# -- the restart property, with a reader that stalls and signals at random moments ----------


class StallingReader(threading.Thread):
    """Reads a pipe to its end, but only while ``go`` is set: a consumer that stalls."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd, self.go, self.data = fd, threading.Event(), bytearray()
        self.go.set()

    def run(self) -> None:
        while True:
            self.go.wait()
            chunk = os.read(self.fd, 4096)
            if not chunk:
                break
            self.data += chunk
        os.close(self.fd)


@pytest.mark.parametrize("seed", range(int(os.environ.get("ORDERTIMEOUT_STALL_CUTS", "3"))))
def test_runs_stopped_while_their_reader_stalls_give_the_results_of_one_run(tmp_path, seed):
    """tests/test_restarts.py's real-process property, with each run's stdout a one-page
    pipe whose reader stalls at random moments, and stops (one signal, two, or kill -9)
    at random moments, often while the run is blocked writing: no line is cut but by a
    second signal or kill -9 (and then only the last), and the runs together give the
    results of one run, each exactly once when every stop was a single signal."""
    rng = random.Random(seed)
    whole, growing = tmp_path / "whole.jsonl", tmp_path / "events.jsonl"
    subprocess.run([*COMMAND, "generate", "--events", "3000", "--users", "200", "--rate", "1000", "--disorder",
                    "20ms", "--seed", str(seed), "-o", str(whole)], check=True)
    options = ["--within", "1s", "--lateness", "20ms", "--match", rng.choice(["each", "next", "followed-by"]),
               "--json", "-q"]
    data = whole.read_bytes()
    cuts = sorted(rng.sample(range(1, len(data)), 5))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    growing.write_bytes(pieces.pop(0))
    args = [*COMMAND, "watch", str(growing), *options, "--state", str(tmp_path / "state.db"),
            "--checkpoint-every", "5ms", "--follow"]
    seen, exactly_once = [], True
    for _ in range(rng.randint(2, 4)):
        read_end, write_end, _ = small_pipe()
        process = subprocess.Popen(args, stdout=write_end, stderr=subprocess.PIPE)
        os.close(write_end)
        reader = StallingReader(read_end)
        reader.start()
        wait_until_catching(process)
        if pieces:
            with open(growing, "ab") as handle:
                handle.write(pieces.pop(0))
        time.sleep(rng.uniform(0.0, 0.3))
        reader.go.clear()  # the consumer stalls; the run soon blocks on the full pipe
        time.sleep(rng.uniform(0.0, 0.4))
        how = rng.choice(["one", "one", "one", "two", "kill"])
        signum = rng.choice([signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
        process.send_signal(signal.SIGKILL if how == "kill" else signum)
        if how == "two":
            time.sleep(rng.uniform(0.0, 0.1))
            process.send_signal(signum)
        if how != "one":
            process.wait(timeout=30)  # at once, though the reader still stalls
        time.sleep(rng.uniform(0.0, 0.2))
        reader.go.set()
        _, err = process.communicate(timeout=60)
        reader.join(30)
        assert b"Traceback" not in err
        assert process.returncode == (-signal.SIGKILL if how == "kill" else 128 + signum), err
        output = bytes(reader.data)
        complete = output[: output.rfind(b"\n") + 1]
        if how == "one":
            assert complete == output  # a single signal cuts nothing
        exactly_once &= how == "one"
        seen += assert_whole_lines(complete) if complete else []
    with open(growing, "ab") as handle:
        handle.write(b"".join(pieces))
    final = subprocess.run([arg for arg in args if arg != "--follow"] + ["--final"], capture_output=True, timeout=60)
    assert final.returncode == 0, final.stderr
    seen += final.stdout.splitlines()
    clean = subprocess.run([*COMMAND, "watch", str(whole), *options], capture_output=True, check=True).stdout
    if exactly_once:
        assert sorted(seen) == sorted(clean.splitlines())
    else:
        assert set(seen) == set(clean.splitlines())  # repeats allowed, with the same id

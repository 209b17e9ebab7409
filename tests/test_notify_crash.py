"""kill -9 during delivery, restart: every result arrives at least once, signed, with the
same webhook-id; repeats only for attempts in flight at the crash or ended in the event
loop's last turn before it (outcomes of one turn commit together): per worker, one of each."""

import itertools
import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from .helpers import COMMAND, SCRIPT, event, run_event_time
from .webhook_receiver import SECRET, Receiver

ORDERS = 300
CONCURRENCY = 4


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """ORDERS orders (a third paid in time) and the ids of their results."""
    lines = [event(f"u{n}", "create", 1000 + 10 * n) for n in range(ORDERS)]
    lines += [event(f"u{n}", "pay", 1000 + 10 * ORDERS + n) for n in range(0, ORDERS, 3)]
    lines.sort(key=lambda line: int(line.rsplit(b":", 1)[1].rstrip(b"}")))
    results, _ = run_event_time(lines, 10 * ORDERS)
    path = tmp_path_factory.mktemp("crash") / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path, {result["id"] for result in results}


def start(args, env_extra):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), **env_extra)
    return subprocess.Popen([*COMMAND, "watch", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("kill_after", [1, 120])
def test_webhook_deliveries_survive_kill_9(tmp_path, orders, kill_after):
    path, expected = orders
    receiver = Receiver()
    # Every fifth request (as they arrive) is a 503. (The request number the receiver hands
    # over counts answered requests, so concurrent requests would share it, and all fail.)
    arrivals = itertools.count()
    receiver.answer = lambda number, body: (503, {}, 0.01) if next(arrivals) % 5 == 4 else (200, {}, 0.01)
    receiver.accept()
    args = [str(path), "--within", f"{10 * ORDERS}ms", "--state", str(tmp_path / "state.db"), "--checkpoint-every",
            "50ms", "--final", "--webhook", receiver.url, "--deliver-concurrency", str(CONCURRENCY), "-q",
            "--probe-max", "500ms"]  # a refused result is retried within 0.5 s (not up to 5 s): the kill is tested
    env = {"ORDERTIMEOUT_WEBHOOK_SECRET": SECRET}
    try:
        first = start(args, env)
        wait_for(lambda: len(receiver.delivered_ids()) >= kill_after or first.poll() is not None)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        first.stderr.close()
        assert len(receiver.delivered_ids()) < len(expected)  # the kill came mid-delivery
        second = start(args, env)
        _, stderr = second.communicate(timeout=120)
        assert second.returncode == 0, stderr
        received = receiver.snapshot()
        assert receiver.delivered_ids() == expected
        assert all(r.verified and r.webhook_id == r.body["id"] for r in received)
        repeats = Counter(r.webhook_id for r in received if r.status == 200)
        assert sum(count - 1 for count in repeats.values()) <= 2 * CONCURRENCY
    finally:
        receiver.close()


def test_exec_deliveries_survive_kill_9_with_a_command_failing_first(tmp_path, orders):
    path, expected = orders
    script = tmp_path / "deliver.sh"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    log = out / "env"
    args = [str(path), "--within", f"{10 * ORDERS}ms", "--state", str(tmp_path / "state.db"), "--checkpoint-every",
            "50ms", "--final", "--exec", f"sh {script}", "--deliver-concurrency", str(CONCURRENCY), "-q",
            # Every first attempt fails, so the sink is down most of the time: probes every
            # 50 ms at most (not up to 5 s) keep the two runs short; what is tested is the kill.
            "--probe-max", "50ms"]
    env = {"OUT": str(out), "FAILS": "1"}

    def delivered():
        return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []

    first = start(args, env)
    wait_for(lambda: len(delivered()) >= 30 or first.poll() is not None)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    first.stderr.close()
    assert len(set(delivered())) < len(expected)
    second = start(args, env)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    assert set(delivered()) == expected
    repeats = Counter(delivered())
    assert sum(count - 1 for count in repeats.values()) <= 2 * CONCURRENCY

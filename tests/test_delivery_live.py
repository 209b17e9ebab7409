"""Delivery as an operator meets it: a real `watch` process holding its --state file, a
real HTTP receiver on 127.0.0.1 that goes down and comes back, real signals. The outbox
is readable while the run holds the file, --retry-dead is taken by the running service,
/healthz shows dead letters, and stopping says what is left and how to retry it."""

import itertools
import os
import signal
import subprocess
import time

import orjson

from .helpers import COMMAND, event
from .helpers import free_port
from .monitoring import get, scrape, start_monitored, wait_for
from .webhook_receiver import Receiver


def outbox(*args):
    """`ordertimeout outbox ...` as a separate process, as an operator runs it."""
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([*COMMAND, "outbox", *args], capture_output=True, env=env, timeout=60)


def feed(process, lines):
    process.stdin.write(b"".join(line + b"\n" for line in lines))
    process.stdin.flush()


def timeouts_of(keys, start=1000):
    """Creates of ``keys`` and a late create that times them all out (event time, 1s)."""
    return [event(key, "create", start + n) for n, key in enumerate(keys)] + [event("zz", "create", start + 60_000)]


def test_outbox_readable_and_dead_letters_retried_while_the_service_runs(tmp_path):
    receiver = Receiver(secret=None)
    gone = {"u0", "u1"}
    receiver.answer = lambda number, body: (410, {}, 0) if body["key"] in gone else (200, {}, 0)
    receiver.accept()
    state, port = tmp_path / "s.db", free_port()
    keys = [f"u{n}" for n in range(8)]
    process = start_monitored(["--within", "1s", "--state", str(state), "--checkpoint-every", "100ms",
                               "--webhook", receiver.url], port, cwd=os.getcwd(),
                              env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        feed(process, timeouts_of(keys))
        _, body = wait_for(lambda: (answer := get(port, "/healthz"))[0] == 503 and answer,
                           what="/healthz to show the dead letters", process=process)
        assert orjson.loads(body)["reasons"]["dead_letters"] == "2 dead letters"
        wait_for(lambda: len(receiver.delivered_ids()) == 6, what="the others delivered", process=process)
        assert scrape(port)["ordertimeout_dead_letters"] == 2

        listed = outbox(str(state), "--json")  # the run holds the file: read anyway
        assert listed.returncode == 0, listed.stderr
        rows = [orjson.loads(line) for line in listed.stdout.splitlines()]
        assert {(row["state"], row["key"], row["last_error"]) for row in rows} == {
            ("dead", "u0", "HTTP 410"), ("dead", "u1", "HTTP 410")}
        assert b"0 pending, 2 dead (as of the last checkpoint of the ordertimeout running on it)" in listed.stderr

        gone.clear()  # the receiver is fixed
        started = time.monotonic()
        retried = outbox(str(state), "--retry-dead")
        assert retried.returncode == 0, retried.stderr
        assert b"the running ordertimeout moved 2 dead letters back to pending" in retried.stderr
        assert time.monotonic() - started < 5  # taken within a second (the rest is start-up)
        wait_for(lambda: get(port, "/healthz")[0] == 200, what="/healthz to recover", process=process)
        assert receiver.delivered_ids() == {f"timeout:{key}:{1000 + n}:0" for n, key in enumerate(keys)}
        assert not (tmp_path / "s.db.retry-dead").exists() and not (tmp_path / "s.db.retry-dead.done").exists()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        receiver.close()
    assert process.returncode == 128 + signal.SIGTERM
    assert b"ordertimeout: 2 dead letters moved back to pending (ordertimeout outbox --retry-dead)" in err
    assert b"dead letters wait" not in err  # none left: nothing to say at the end
    assert outbox(str(state)).stderr.endswith(b"0 pending, 0 dead\n")


def test_stopped_by_a_signal_with_dead_letters_it_keeps_128_plus_n_and_says_how_to_retry(tmp_path):
    receiver = Receiver(secret=None)
    receiver.answer = lambda number, body: (410, {}, 0) if body["key"] == "u1" else (200, {}, 0)
    receiver.accept()
    state, port = tmp_path / "s.db", free_port()
    process = start_monitored(["--within", "1s", "--state", str(state), "--webhook", receiver.url], port,
                              env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        feed(process, timeouts_of(["u0", "u1", "u2"]))
        wait_for(lambda: get(port, "/healthz")[0] == 503, what="the dead letter", process=process)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        receiver.close()
    assert process.returncode == 143
    text = err.decode()
    path = str(state.resolve())
    assert f"1 dead letter wait in {path} (last: HTTP 410)" in text
    assert f"retry them with: ordertimeout outbox {path} --retry-dead" in text and "Traceback" not in text


def test_an_outage_under_steady_traffic_probes_gently_and_drains_at_once_in_key_order(tmp_path):
    # The scenario scaled to the suite: ~40 results a second, the endpoint answers
    # 503 for 4 s, then 200 at once. Two orders per key, so each key has two results.
    receiver = Receiver(secret=None)
    down = [False]
    down_attempts = []
    receiver.answer = lambda number, body: (
        (down_attempts.append(time.monotonic()) or (503, {}, 0)) if down[0] else (200, {}, 0))
    receiver.accept()
    port = free_port()
    process = start_monitored(["--within", "1s", "--processing-time", "--webhook", receiver.url,
                               "--probe-max", "1s", "--state", str(tmp_path / "s.db")], port,
                              env=dict(os.environ, PYTHONPATH=os.getcwd()))
    keys = itertools.count()
    sent = []
    try:
        def traffic(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                key = f"k{next(keys)}"
                feed(process, [event(key, "create", 0), event(key, "create", 0)])  # two timeouts a key
                sent.append(key)
                time.sleep(0.05)

        traffic(1.0)
        down[0] = True
        went_down = time.monotonic()
        traffic(4.0)
        down[0] = False
        came_back = time.monotonic()
        traffic(0.5)
        expected = 2 * len(sent)
        wait_for(lambda: len(receiver.delivered_ids()) == expected, what="every result delivered",
                 timeout=60, process=process)
        drained = time.monotonic() - came_back
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        receiver.close()
    assert process.returncode == 143, err
    while_down = [moment for moment in down_attempts if went_down + 1.5 <= moment]  # after the first failures
    # One probe per backoff step (uniform up to 0.5s, 1s, then 1s: about 2 a second at
    # most on average), where each result once kept its own timer; generous for a loaded machine.
    assert len(while_down) <= 2 * 4 + 6, len(while_down)
    assert drained < 10, drained
    ok = [r for r in receiver.snapshot() if r.status == 200]
    assert len(ok) == expected == len({r.webhook_id for r in ok})  # each once
    by_key = {}
    for r in ok:
        by_key.setdefault(r.body["key"], []).append(r.body["created"])
    assert all(len(times) == 2 for times in by_key.values())
    # one key's two results arrive in decision order (the first order's timeout first)
    ids = {}
    for r in ok:
        ids.setdefault(r.body["key"], []).append(r.webhook_id)
    assert all(seq == sorted(seq, key=lambda rid: int(rid.rsplit(":", 1)[1])) for seq in ids.values())


def test_ctrl_c_while_deliveries_drain_says_so_at_once_and_a_second_one_stops_now(tmp_path):
    receiver = Receiver(secret=None)
    receiver.answer = lambda number, body: (503, {}, 0)
    receiver.accept()
    port = free_port()
    process = start_monitored(["--within", "1s", "--webhook", receiver.url, "--state", str(tmp_path / "s.db"),
                               "--drain-timeout", "20s"], port, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        feed(process, timeouts_of([f"u{n}" for n in range(12)]))
        wait_for(lambda: receiver.snapshot(), what="the first attempt", process=process)
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        line = b""
        deadline = time.monotonic() + 10
        while b"delivering" not in line and time.monotonic() < deadline:
            line = process.stderr.readline()
        assert line == (b"ordertimeout: delivering 12 pending results, up to 20s; Ctrl-C again to stop now, "
                        b"they stay in the outbox\n")
        stopping = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        receiver.close()
    assert process.returncode == 130 and time.monotonic() - stopping < 5
    listed = outbox(str(tmp_path / "s.db"))
    assert b"12 pending, 0 dead" in listed.stderr  # they stay in the outbox


def test_a_backlog_of_a_thousand_drains_within_ten_seconds_of_the_recovery(tmp_path):
    # A real run and a real endpoint answering 200 at once once it is back (the schedule
    # itself is measured on virtual time in test_delivery; this is the short real run).
    receiver = Receiver(secret=None)
    down = [True]
    receiver.answer = lambda number, body: (503, {}, 0) if down[0] else (200, {}, 0)
    receiver.accept()
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(line + b"\n" for line in timeouts_of([f"u{n}" for n in range(1000)])))
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    process = subprocess.Popen([*COMMAND, "watch", str(events), "--json", "-q", "--within", "1s", "--webhook",
                                receiver.url, "--drain-timeout", "60s"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env)
    try:
        wait_for(lambda: receiver.snapshot(), what="the first attempts", process=process)
        time.sleep(2.0)  # down for a while: the thousand wait in the outbox
        down[0] = False
        came_back = time.monotonic()
        _, err = process.communicate(timeout=60)
        drained = time.monotonic() - came_back
    finally:
        if process.poll() is None:
            process.kill()
        receiver.close()
    assert process.returncode == 0, err
    assert len(receiver.delivered_ids()) == 1001  # (and the closing order, timed out at the end)
    assert drained < 10, drained  # within --probe-max (5s) of the recovery, then at full concurrency
    assert len([r for r in receiver.snapshot() if r.status == 503]) <= 20  # probes, not a storm

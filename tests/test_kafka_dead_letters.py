"""A kafka worker's dead letters live in the topic <group>-dead: `ordertimeout outbox
--kafka` lists them and re-queues them to the running worker, against the real broker."""

from __future__ import annotations

import os
import subprocess
import time

import orjson
import pytest

from .helpers import COMMAND, event
from .kafka_cluster import bootstrap, cluster  # noqa: F401 (fixtures)
from .kafka_cluster import outputs as _outputs
from .kafka_cluster import with_closing_events as _with_closing_events
from .webhook_receiver import Receiver



def outbox_kafka(cluster, *args):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([*COMMAND, "outbox", "--kafka", "--bootstrap", cluster.bootstrap, "--group", cluster.group,
                           *args], capture_output=True, env=env, timeout=120)


def listed(cluster):
    done = outbox_kafka(cluster, "--json")
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def wait_until(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_dead_letters_are_kept_in_the_group_topic_listed_and_requeued_to_the_running_worker(cluster):
    receiver = Receiver(secret=None)
    gone = {"u1"}
    receiver.answer = lambda number, body: (410, {}, 0) if body["key"] in gone else (200, {}, 0)
    receiver.accept()
    lines = _with_closing_events([event(f"u{n}", "create", 1000 + n) for n in range(4)])
    cluster.create()  # not the dead-letter topic: the worker makes it
    assert outbox_kafka(cluster).stderr.endswith(b"0 dead, 0 re-queued (in " + cluster.group.encode() + b"-dead)\n")
    cluster.produce(lines)
    worker = cluster.worker("--json", "-q", "--webhook", receiver.url, env=dict(os.environ))
    dead_id = "timeout:u1:1001:0"
    try:
        rows = wait_until(lambda: [row for row in listed(cluster) if row["state"] == "dead"], "the dead letter")
        assert [(row["id"], row["last_error"], row["result"]["key"]) for row in rows] == [(dead_id, "HTTP 410", "u1")]
        wait_until(lambda: len(receiver.delivered_ids()) == 3, "the other three delivered")
        gone.clear()  # the endpoint is fixed
        asked = outbox_kafka(cluster, "--retry-dead")
        assert asked.returncode == 0 and b"1 dead letter re-queued" in asked.stderr, asked.stderr
        wait_until(lambda: dead_id in receiver.delivered_ids(), "the re-queued letter delivered", timeout=30)
        wait_until(lambda: listed(cluster) == [], "the letter gone from the topic")
        worker.send_signal(15)
        worker.wait(60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        receiver.close()
    _, err = _outputs(worker)
    assert "1 dead letter re-queued from" in err and "Traceback" not in err
    assert sorted(r.status for r in receiver.snapshot() if r.webhook_id == dead_id) == [200, 410]


def test_outbox_needs_a_state_file_or_kafka_and_not_both(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    neither = subprocess.run([*COMMAND, "outbox"], capture_output=True, env=env)
    assert neither.returncode == 2 and b"give the --state file (STATE), or --kafka" in neither.stderr
    half = subprocess.run([*COMMAND, "outbox", "--kafka", "--group", "g"], capture_output=True, env=env)
    assert half.returncode == 2 and b"--kafka needs --bootstrap and --group" in half.stderr

"""`ordertimeout kafka` against a real Kafka-protocol broker (tansu), started by the tests.

Set ORDERTIMEOUT_TEST_BOOTSTRAP=host:port to run the same tests against a real Kafka or
Redpanda instead. Workers are real processes; a crash is a real SIGKILL.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

import orjson
import pytest

from ordertimeout.inputs.simulator import generate_traffic

from .helpers import COMMAND
from .helpers import free_port as _free_port
from .kafka_cluster import WITHIN, Cluster, bootstrap, cluster  # noqa: F401  (the broker and topics fixtures)
from .kafka_cluster import outputs as _outputs
from .kafka_cluster import with_closing_events as _with_closing_events
from .kafka_cluster import tansu as _tansu


def _stop(process: subprocess.Popen, signum=signal.SIGTERM) -> tuple[str, str]:
    process.send_signal(signum)
    process.wait(timeout=60)
    out, err = _outputs(process)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    return out, err


def _watch(lines, *args: str) -> list[dict]:
    done = subprocess.run([*COMMAND, "watch", "--json", "-q", "--within", WITHIN, *args],
                          input=b"\n".join(lines) + b"\n", capture_output=True, check=True)
    return [orjson.loads(line) for line in done.stdout.splitlines()]


def _traffic(events: int, seed: int = 1, users: int = 40, disorder: int = 0) -> list[bytes]:
    return list(generate_traffic(random.Random(seed), events=events, users=users, pay_ratio=0.7, within_ms=1000,
                                 rate_per_s=2000, disorder_ms=disorder))


def _by_id(results: list[dict]) -> dict[str, dict]:
    """Results by id; a repeat must be the same result (``recovered`` aside)."""
    seen: dict[str, dict] = {}
    for result in results:
        plain = {name: value for name, value in result.items() if name != "recovered"}
        assert seen.setdefault(result["id"], plain) == plain, f"two different results with id {result['id']}"
    return seen


def _per_key(results: list[dict]) -> dict[str, list[str]]:
    """The ids of each key in the order they were produced, repeats dropped."""
    order: dict[str, list[str]] = {}
    for result in results:
        ids = order.setdefault(result["key"], [])
        if result["id"] not in ids:
            ids.append(result["id"])
    return order


def _summary(err: str) -> dict[str, int]:
    """The counters of a worker's plain-text summary line."""
    line = next(line for line in err.splitlines() if " events, " in line)
    return {name: int(value) for value, name in re.findall(r"(\d+) ([a-z ]+?)(?:,| \()", line)}


# -- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers, disorder, options", [
    (2, 0, ()),
    # Out of order within the lateness, and pays after the deadline: per-partition
    # watermarks and reorder buffers decide as watch's single one does.
    (3, 200, ("--lateness", "200ms", "--paid-late", "2s")),
])
def test_workers_give_the_results_of_watch(cluster, workers, disorder, options):
    lines = _traffic(1200, seed=workers, disorder=disorder)
    expected = _watch(lines, *options)
    assert not disorder or any(result["result"] == "paid_late" for result in expected)
    cluster.create()
    cluster.produce(lines)
    processes = [cluster.worker("--idle", "500ms", *options) for _ in range(workers)]
    try:
        results = cluster.wait_for(lambda results: len(_by_id(results)) >= len(expected))
    finally:
        outcomes = [_stop(process) for process in processes]
    assert _by_id(results) == _by_id(expected)
    assert _per_key(results) == _per_key(expected)
    # Rows on stdout (no --json); each summary counts what that worker decided.
    assert sum(len(out.splitlines()) for out, _ in outcomes) >= len(expected)
    shares = [_summary(err)["events"] for _, err in outcomes]
    assert sum(shares) >= len(lines)
    assert sum(1 for share in shares if share) >= 2, f"the partitions were not spread: {shares}"


def test_a_killed_worker_loses_nothing_and_repeats_only_same_ids(cluster):
    lines = _with_closing_events(_traffic(2400, seed=7))
    expected = _watch(lines)
    half = len(lines) // 2
    cluster.create()
    cluster.produce(lines[:half])
    first, second, third = (cluster.worker("--json", "-q") for _ in range(3))
    fourth = None
    try:
        cluster.wait_for(lambda results: len(results) >= 100, what="first results")
        first.send_signal(signal.SIGKILL)  # mid-stream, no chance to save anything
        first.wait()
        _outputs(first)
        cluster.produce(lines[half:])
        fourth = cluster.worker("--json", "-q")  # joins while the others take over
        results = cluster.wait_for(lambda results: len(_by_id(results)) >= len(expected))
    finally:
        for process in (second, third, fourth):
            if process is not None:
                _stop(process)
    assert _by_id(results) == _by_id(expected)  # none lost, and a repeat is the same result
    assert _per_key(results) == _per_key(expected)


def test_a_restarted_group_resumes_from_its_state_and_sends_nothing_twice(cluster):
    lines = _with_closing_events(_traffic(2400, seed=11))
    expected = _watch(lines)
    half = len(lines) // 2
    cluster.create()
    cluster.produce(lines[:half])
    workers = [cluster.worker("--json", "-q") for _ in range(2)]
    try:
        cluster.wait_for(lambda results: len(results) >= 100, what="first results")
    finally:
        first_out = [_stop(process, signal.SIGHUP if index else signal.SIGTERM)[0]
                     for index, process in enumerate(workers)]
    cluster.produce(lines[half:])
    workers = [cluster.worker("--json", "-q") for _ in range(2)]
    try:
        results = cluster.wait_for(lambda results: len(_by_id(results)) >= len(expected))
    finally:
        second_out = [_stop(process, signal.SIGINT)[0] for process in workers]
    ids = [result["id"] for result in results]
    assert len(ids) == len(set(ids)), "a graceful stop and restart sent a result twice"
    assert _by_id(results) == _by_id(expected)
    # --json on stdout printed what was produced, each result once.
    printed = [orjson.loads(line)["id"] for out in first_out + second_out for line in out.splitlines()]
    assert sorted(printed) == sorted(ids)


def test_a_poison_record_is_counted_rejected_and_skipped(cluster):
    cluster.create(partitions=1, topics=None)
    cluster.produce([
        orjson.dumps({"userId": "u1", "type": "create", "ts": 1000}),
        b"this is not json",
        orjson.dumps({"type": "pay", "ts": 1100}),  # no key
        orjson.dumps({"userId": "u1", "type": "pay", "ts": 1200}),
    ], partition=0)
    worker = cluster.worker("--json")
    try:
        results = cluster.wait_for(lambda results: len(results) >= 1)
    finally:
        out, err = _stop(worker)
    assert [(result["result"], result["key"]) for result in results] == [("success", "u1")]
    assert f"{cluster.topic}-0 offset:1: not valid JSON" in err
    assert f"{cluster.topic}-0 offset:2: " in err and "userId" in err
    assert _summary(err)["rejected"] == 2
    assert _summary(err)["success"] == 1


def test_an_idle_partition_does_not_hold_back_the_others(cluster):
    cluster.create(partitions=2)
    cluster.produce([orjson.dumps({"userId": "quiet", "type": "create", "ts": 1000})], partition=1)
    cluster.produce([
        orjson.dumps({"userId": "busy", "type": "create", "ts": 1000}),
        orjson.dumps({"userId": "busy", "type": "view", "ts": 5000}),
    ], partition=0)
    worker = cluster.worker("--json", "-q")
    try:
        # Partition 1 never moves on, yet partition 0's watermark alone times its order out.
        results = cluster.wait_for(lambda results: len(results) >= 1)
        time.sleep(1)
        results = cluster.results()
    finally:
        _stop(worker)
    assert [(result["result"], result["key"], result["deadline"]) for result in results] == [("timeout", "busy", 2000)]


def test_missing_topics_are_named_and_created_on_request(cluster):
    worker = cluster.worker("-q")
    worker.wait(timeout=60)
    _, message = _outputs(worker)
    assert worker.returncode == 1
    assert "Traceback" not in message
    assert message.startswith("Error: missing topics on ")
    for name in (cluster.topic, cluster.results_topic, f"{cluster.group}-state"):
        assert name in message
    assert "--create-topics" in message

    worker = cluster.worker("--create-topics", "3", "--json", "-q")
    try:
        deadline = time.monotonic() + 30
        while not {cluster.topic, cluster.results_topic, f"{cluster.group}-state"} <= cluster.topics():
            assert time.monotonic() < deadline, "the topics were not created"
            time.sleep(0.2)
        cluster.produce([orjson.dumps({"userId": "u", "type": "create", "ts": 1}),
                         orjson.dumps({"userId": "u", "type": "pay", "ts": 2})])
        results = cluster.wait_for(lambda results: len(results) >= 1)
    finally:
        _stop(worker)
    assert results[0]["result"] == "success"


def test_an_unreachable_broker_is_retried_then_given_up(tmp_path):
    port = _free_port()  # nothing listens there
    started = time.monotonic()
    done = subprocess.run(
        [*COMMAND, "kafka", "--bootstrap", f"127.0.0.1:{port}", "--topic", "t", "--group", "g",
         "--results-topic", "r", "--connect-timeout", "2s"],
        capture_output=True, timeout=60,
    )
    elapsed = time.monotonic() - started
    err = done.stderr.decode()
    assert done.returncode == 1
    assert "Traceback" not in err
    assert f"cannot reach the Kafka cluster at 127.0.0.1:{port}" in err
    assert "retrying" in err and "--connect-timeout" in err
    assert elapsed >= 2


def _worker_past_its_first_result(cluster, connect_timeout):
    """A worker over two partitions with one order paid, once its success is out."""
    cluster.create(partitions=2)
    cluster.produce([orjson.dumps({"userId": "u", "type": "create", "ts": 1}),
                     orjson.dumps({"userId": "u", "type": "pay", "ts": 2})])
    worker = cluster.worker("--connect-timeout", connect_timeout)
    cluster.wait_for(lambda results: len(results) >= 1)
    return worker


def test_a_worker_that_loses_its_cluster_retries_then_exits_naming_it():
    with _tansu() as (address, broker):
        cluster = Cluster(address)
        try:
            worker = _worker_past_its_first_result(cluster, "3s")
            broker.kill()  # SIGKILL: the cluster is gone, not leaving politely
            broker.wait()
            lost = time.monotonic()
            worker.wait(timeout=60)
            elapsed = time.monotonic() - lost
            out, err = _outputs(worker)
        finally:
            cluster.kill_leftovers()
    assert worker.returncode == 1, err
    assert "Traceback" not in err, err
    assert "lost mid-run" in err and "retrying" in err  # told while it kept trying
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"lost the Kafka cluster at {address}" in errors[0], err
    assert 3 <= elapsed < 3 + 30, elapsed
    # The result decided before the loss was written out (rows: time, kind, key, ...).
    assert [line.split()[1:3] for line in out.splitlines()] == [["success", "u"]], out


def test_a_worker_whose_cluster_comes_back_in_time_carries_on():
    with _tansu() as (address, broker):
        cluster = Cluster(address)
        try:
            worker = _worker_past_its_first_result(cluster, "30s")
            broker.send_signal(signal.SIGSTOP)  # unanswering, its data kept
            time.sleep(4)
            broker.send_signal(signal.SIGCONT)
            cluster.produce([orjson.dumps({"userId": "v", "type": "create", "ts": 3}),
                             orjson.dumps({"userId": "v", "type": "pay", "ts": 4})])
            results = cluster.wait_for(lambda results: any(result["key"] == "v" for result in results))
            assert worker.poll() is None
            _, err = _stop(worker)
        finally:
            cluster.kill_leftovers()
    assert "lost mid-run" in err and "Error:" not in err, err
    assert {result["key"] for result in results} == {"u", "v"}


def test_processing_time_timeouts_fire_without_further_input(cluster):
    cluster.create(partitions=2)
    worker = cluster.worker("--json", "-q", "--processing-time")
    try:
        cluster.produce([b'{"userId":"u1","type":"create"}', b'{"userId":"u2","type":"create"}',
                         b'{"userId":"u2","type":"pay"}'])
        # Nothing else arrives: u1's deadline, driven by the worker's own timer, decides it.
        results = cluster.wait_for(lambda results: len(results) >= 2)
    finally:
        out, _ = _stop(worker)
    assert sorted((result["result"], result["key"]) for result in results) == [("success", "u2"), ("timeout", "u1")]
    timeout = next(result for result in results if result["result"] == "timeout")
    assert timeout["deadline"] - timeout["created"] == 1000
    assert len(out.splitlines()) == 2


# -- notify sinks: a partition commits only after its results left the outbox -----------------


@pytest.fixture
def receiver():
    from .webhook_receiver import Receiver

    receiver = Receiver()
    yield receiver
    receiver.close()


def _hooked_env(receiver) -> dict:
    from .webhook_receiver import SECRET

    return {**os.environ, "ORDERTIMEOUT_WEBHOOK_SECRET": SECRET}


def _assert_well_formed(receiver, expected: dict[str, dict]) -> None:
    """Every request signed, its webhook-id the result's id, a repeat the same result."""
    for request in receiver.snapshot():
        assert request.verified, f"bad signature on {request.webhook_id}"
        assert request.webhook_id == request.body["id"]
        plain = {name: value for name, value in request.body.items() if name != "recovered"}
        assert plain == expected[request.webhook_id]


def test_two_workers_deliver_every_result_once_to_a_webhook(cluster, receiver):
    receiver.accept()
    lines = _with_closing_events(_traffic(800, seed=21))
    expected = _by_id(_watch(lines))
    cluster.create()
    cluster.produce(lines)
    hooked = ("--json", "-q", "--webhook", receiver.url)
    workers = [cluster.worker(*hooked, env=_hooked_env(receiver)) for _ in range(2)]
    try:
        assert receiver.wait_until(lambda r: r.delivered_ids() >= set(expected), timeout=60), \
            f"{len(receiver.delivered_ids())} of {len(expected)} delivered"
        time.sleep(1)  # a repeat would come now
    finally:
        for process in workers:
            _stop(process)
    _assert_well_formed(receiver, expected)
    attempts = receiver.attempts_per_id()
    assert set(attempts) == set(expected)
    assert max(attempts.values()) == 1, "a result was delivered twice"


def test_a_worker_killed_with_deliveries_pending_leaves_them_to_the_next(cluster, receiver):
    lines = _with_closing_events(_traffic(600, seed=23))
    expected = _by_id(_watch(lines))
    cluster.create()
    cluster.produce(lines)
    hooked = ("--json", "-q", "--webhook", receiver.url, "--session-timeout", "2s")
    # The endpoint refuses connections: every result is decided, none delivered.
    first = cluster.worker(*hooked, env=_hooked_env(receiver))
    cluster.wait_for(lambda results: len(_by_id(results)) >= len(expected), what="the decided results")
    time.sleep(1)  # several checkpoints' worth: each must still wait for its results
    # No partition's state covers its last records (closing events that decide results).
    ends: dict[int, int] = {}
    for record in cluster.read(cluster.topic):
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    metas = [record for record in cluster.read(f"{cluster.group}-state") if record.key.endswith(b":meta")]
    assert metas and all(orjson.loads(record.value)["offset"] < ends[record.partition] for record in metas)
    first.send_signal(signal.SIGKILL)
    first.wait()
    _outputs(first)
    assert not receiver.snapshot()
    receiver.accept()
    second = cluster.worker(*hooked, env=_hooked_env(receiver))
    try:
        assert receiver.wait_until(lambda r: r.delivered_ids() >= set(expected), timeout=60), \
            f"{len(receiver.delivered_ids())} of {len(expected)} delivered"
    finally:
        _stop(second)
    _assert_well_formed(receiver, expected)
    assert receiver.delivered_ids() == set(expected)


def test_a_takeover_with_idle_reads_its_backlog_in_event_time(cluster):
    """Issue 25 item 7 (issue 19 item 2 on the kafka path): what was written while no worker
    owned the partition is read in event time, none of it late; the idle clock of a
    partition moves only once it is caught up to its high watermark, and then by the
    downtime too: the order created last times out though no record comes after it."""
    cluster.create(partitions=1)

    def record(key: str, kind: str, ts: int) -> bytes:
        return orjson.dumps({"userId": key, "type": kind, "ts": ts})

    options = ("--json", "--idle", "1s", "--within", "8s")
    start = time.time_ns() // 1_000_000
    cluster.produce([record("o1", "create", start), record("m", "create", start), record("m", "pay", start + 1)],
                    partition=0)
    first = cluster.worker(*options)
    try:
        cluster.wait_for(lambda results: any(result["key"] == "m" for result in results), what="the first result")
    finally:
        _stop(first)
    written = time.time_ns() // 1_000_000
    cluster.produce([record("o2", "create", written), record("o2", "pay", written + 500),
                     record("o3", "create", written + 500)], partition=0)
    time.sleep(4)  # nobody owns the partition for longer than --idle
    second = cluster.worker(*options)
    try:
        results = cluster.wait_for(lambda results: {result["key"] for result in results} >= {"o1", "o2", "o3"},
                                   what="the backlog's results")
    finally:
        _, err = _stop(second)
    outcomes = {result["key"]: result["result"] for result in _by_id(results).values()}
    assert outcomes == {"m": "success", "o1": "timeout", "o2": "success", "o3": "timeout"}
    assert len(_by_id(results)) == 4
    assert _summary(err)["late"] == 0, err


def test_windows_of_their_own_and_reminders_survive_a_restarted_group(cluster):
    """Issue 21 through real workers: per-order windows and reminders give watch's results,
    and the changelog carries what a restored order needs (its deadline, its reminders to
    come), so a restart sends nothing twice and loses nothing."""
    options = ("--within", "a=700ms", "--within", "b=1500ms", "--within-by", "m",
               "--remind", "300ms", "--remind-before", "200ms")
    lines = []
    for index, line in enumerate(_with_closing_events(_traffic(1600, seed=21))):
        event = orjson.loads(line)
        if event["type"] == "create":
            event["m"] = "abc"[index % 3]
        lines.append(orjson.dumps(event))
    expected = _watch(lines, *options)
    assert {result["result"] for result in expected} >= {"reminder", "timeout", "success"}
    half = len(lines) // 2
    cluster.create()
    cluster.produce(lines[:half])
    workers = [cluster.worker("--json", "-q", *options) for _ in range(2)]
    try:
        cluster.wait_for(lambda results: len(results) >= 100, what="first results")
    finally:
        for process in workers:
            _stop(process)
    cluster.produce(lines[half:])
    workers = [cluster.worker("--json", "-q", *options) for _ in range(2)]
    try:
        results = cluster.wait_for(lambda results: len(_by_id(results)) >= len(expected))
    finally:
        for process in workers:
            _stop(process, signal.SIGINT)
    ids = [result["id"] for result in results]
    assert len(ids) == len(set(ids)), "a graceful stop and restart sent a result twice"
    assert _by_id(results) == _by_id(expected)
    assert _per_key(results) == _per_key(expected)

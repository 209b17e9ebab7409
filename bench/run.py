#!/usr/bin/env python3
"""Benchmark ordertimeout: replay throughput against a floor loop, peak RSS, bytes per open
order and processing-time timer lateness. Figures, not pass/fail; medians of several runs.

    python bench/run.py              # everything, 3 runs each (a few minutes on 2 cores)
    python bench/run.py --runs 1     # quicker look

Data is generated with `ordertimeout generate` (seeded) under bench/data/ and reused.
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time

import orjson

HERE = pathlib.Path(__file__).parent
DATA = HERE / "data"
COMMAND = [sys.executable, "-m", "ordertimeout"]
MODES = ("each", "next", "followed-by")


def generate(path: pathlib.Path, *args: str) -> pathlib.Path:
    """Generate the data once (the seed makes it the same on every machine)."""
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([*COMMAND, "generate", *args, "-o", str(path)], check=True)
    return path


def timed_child(argv: list[str], **kwargs) -> tuple[float, int]:
    """Run a child to completion; return (wall seconds, its peak RSS in bytes)."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, **kwargs)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return elapsed, usage.ru_maxrss * 1024


FLOOR = """
import orjson, sys
read, write = open(sys.argv[1], "rb"), open("/dev/null", "wb")
batch = []
for line in read:
    batch.append(orjson.dumps(orjson.loads(line)))
    if len(batch) == 1000:
        write.write(b"\\n".join(batch)); batch.clear()
write.write(b"\\n".join(batch))
"""


def replay(path: pathlib.Path, runs: int) -> dict:
    """Median times of the floor loop and of `watch FILE --json > /dev/null` per mode."""
    events = sum(1 for _ in open(path, "rb"))
    floor = statistics.median(
        timed_child([sys.executable, "-c", FLOOR, str(path)])[0] for _ in range(runs)
    )
    figures = {"events": events, "floor_s": floor, "modes": {}}
    with open(os.devnull, "wb") as devnull:
        for mode in MODES:
            samples = [
                timed_child([*COMMAND, "watch", str(path), "--json", "-q", "--match", mode], stdout=devnull)
                for _ in range(runs)
            ]
            seconds = statistics.median(s for s, _ in samples)
            figures["modes"][mode] = {
                "seconds": seconds,
                "events_per_s": events / seconds,
                "vs_floor": seconds / floor,
                "peak_rss_mb": max(rss for _, rss in samples) / 2**20,
            }
    return figures


MEMORY = """
import gc, sys
from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

pipeline = Pipeline(EventParser(EventSchema()), Matcher(10**12), time_mode=TimeMode.EVENT)
feed = pipeline.feed
gc.collect()
before = rss()
with open(sys.argv[1], "rb") as source:
    for line in source:
        feed(line.rstrip(b"\\n"), 0)
gc.collect()
after = rss()
print(pipeline.pending, after - before)
"""


def memory_per_order(path: pathlib.Path, runs: int) -> dict:
    """RSS growth divided by open orders, with a window nothing reaches."""
    samples = []
    for _ in range(runs):
        output = subprocess.run([sys.executable, "-c", MEMORY, str(path)], capture_output=True, check=True)
        pending, grown = map(int, output.stdout.split())
        samples.append(grown / pending)
    return {"open_orders": pending, "bytes_per_order": statistics.median(samples)}


def timer_lateness(runs: int, orders: int = 100_000, spread_s: float = 2.0, within_ms: int = 1000) -> dict:
    """Processing time: `orders` creates arrive evenly over `spread_s` (so their deadlines
    spread over as long), then other events keep arriving at the same steady rate while
    the deadlines pass. Lateness = (moment the timeout line is read) - its deadline."""
    per_run: list[dict] = []
    for _ in range(runs):
        lateness: list[float] = []
        process = subprocess.Popen(
            [*COMMAND, "watch", "--json", "-q", "--processing-time", "--within", f"{within_ms}ms"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )
        seen: list[tuple[float, bytes]] = []

        def read(process: subprocess.Popen, seen: list) -> None:
            buffer = b""
            while chunk := process.stdout.read(1 << 16):
                now_ms = time.time_ns() / 1e6
                buffer += chunk
                lines = buffer.split(b"\n")
                buffer = lines.pop()
                seen.extend((now_ms, line) for line in lines)

        batches = 1000  # one write per 2 ms
        per_batch = orders // batches
        total_batches = int(batches * (spread_s + within_ms / 1000 + 0.5) / spread_s)
        # Built before the clock starts, so the feeder spends no CPU while it is measured.
        payloads = [
            b"".join(
                b'{"userId":"u%d","type":"%b"}\n' % (batch * per_batch + i, b"create" if batch < batches else b"other")
                for i in range(per_batch)
            )
            for batch in range(total_batches)
        ]
        reader = threading.Thread(target=read, args=(process, seen))
        gc.disable()  # the bench's own collections would delay its timestamps
        reader.start()
        start = time.perf_counter()
        for batch, payload in enumerate(payloads):
            process.stdin.write(payload)
            delay = start + (batch + 1) * spread_s / batches - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        process.stdin.close()
        reader.join()
        process.wait()
        gc.enable()
        for read_ms, line in seen:
            result = orjson.loads(line)
            lateness.append(read_ms - result["deadline"])
        lateness.sort()
        per_run.append({
            "timeouts": len(lateness),
            "p50_ms": statistics.median(lateness),
            "p99_ms": lateness[int(len(lateness) * 0.99) - 1],
            "max_ms": lateness[-1],
        })
    return {name: statistics.median(run[name] for run in per_run) for name in per_run[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median is shown)")
    args = parser.parse_args()
    replay_file = generate(DATA / "replay-1M.jsonl", "--events", "1000000", "--users", "100000", "--seed", "1")
    open_file = generate(DATA / "open-1M.jsonl", "--events", "1000000", "--users", "100000", "--pay-ratio", "0", "--seed", "2")
    open_distinct = generate(DATA / "open-1M-distinct.jsonl", "--events", "1000000", "--users", "1000000000", "--pay-ratio", "0", "--seed", "3")

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    figures = replay(replay_file, args.runs)
    print(f"\nreplay: {figures['events']:,} events, 100k users, `watch FILE --json > /dev/null`")
    print(f"  floor loop (read + orjson.loads + orjson.dumps + write): {figures['floor_s']:.2f} s "
          f"({figures['events'] / figures['floor_s']:,.0f} events/s)")
    for mode, m in figures["modes"].items():
        print(f"  --match {mode:<12} {m['seconds']:.2f} s  {m['events_per_s']:>10,.0f} events/s  "
              f"{m['vs_floor']:.2f}x floor  peak RSS {m['peak_rss_mb']:.0f} MB")
    for label, path in (("100k users", open_file), ("1M distinct users", open_distinct)):
        memory = memory_per_order(path, args.runs)
        print(f"\nmemory: {memory['open_orders']:,} open orders ({label}): "
              f"{memory['bytes_per_order']:.0f} bytes per open order (stored event included)")
    lateness = timer_lateness(args.runs)
    print(f"\ntimer lateness: {lateness['timeouts']:,} processing-time timeouts over 2 s, steady input: "
          f"p50 {lateness['p50_ms']:.1f} ms, p99 {lateness['p99_ms']:.1f} ms, max {lateness['max_ms']:.1f} ms")


if __name__ == "__main__":
    main()

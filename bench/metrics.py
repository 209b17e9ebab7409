#!/usr/bin/env python3
"""Benchmark the cost of --metrics-addr: the replay of bench/run.py with the endpoint off,
and on while a scraper reads /metrics and /healthz every SCRAPE_EVERY seconds (far more
often than Prometheus would). Runs alternate off/on so a busy machine hurts both alike;
medians of several runs. Target: on within 5% of off.

    python bench/metrics.py              # 5 runs of each (about a minute on 2 cores)
    python bench/metrics.py --runs 3
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

HERE = pathlib.Path(__file__).parent
DATA = HERE / "data"
COMMAND = [sys.executable, "-m", "ordertimeout"]
#: How often the scraper reads the endpoint while the replay runs, in seconds.
SCRAPE_EVERY = 0.25


def generate(path: pathlib.Path, *args: str) -> pathlib.Path:
    """The same seeded data bench/run.py replays (generated once, reused)."""
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([*COMMAND, "generate", *args, "-o", str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scraper(port: int, stop: threading.Event, scrapes: list[int]) -> None:
    """Scrape until ``stop``; count the scrapes that answered."""
    while not stop.is_set():
        for path in ("/metrics", "/healthz"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    response.read()
                scrapes[0] += 1
            except OSError:
                pass  # not listening yet, or already gone
        stop.wait(SCRAPE_EVERY)


def replay(path: pathlib.Path, metrics: bool) -> tuple[float, int]:
    """Seconds of `watch FILE --json -q > /dev/null`, and the scrapes answered meanwhile."""
    argv = [*COMMAND, "watch", str(path), "--json", "-q"]
    stop, scrapes, thread = threading.Event(), [0], None
    if metrics:
        port = free_port()
        argv += ["--metrics-addr", f"127.0.0.1:{port}"]
        thread = threading.Thread(target=scraper, args=(port, stop, scrapes), daemon=True)
    with open(os.devnull, "wb") as devnull:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=devnull)
        if thread is not None:
            thread.start()
        if process.wait() != 0:
            raise SystemExit(f"failed: {' '.join(argv)}")
        elapsed = time.perf_counter() - start
    stop.set()
    if thread is not None:
        thread.join()
    return elapsed, scrapes[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    path = generate(DATA / "replay-1M.jsonl", "--events", "1000000", "--users", "100000", "--seed", "1")
    off, on, scrapes = [], [], []
    for _ in range(args.runs):
        off.append(replay(path, metrics=False)[0])
        seconds, answered = replay(path, metrics=True)
        on.append(seconds)
        scrapes.append(answered)
    off_s, on_s = statistics.median(off), statistics.median(on)
    print(f"replay of 1,000,000 events, median of {args.runs} runs each")
    print(f"  metrics off: {off_s:.2f} s")
    print(f"  metrics on : {on_s:.2f} s, scraped every {SCRAPE_EVERY} s ({statistics.median(scrapes):.0f} answers per run)")
    print(f"  on / off   : {on_s / off_s:.3f} (target: at most 1.05)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Differential check of `--match next` and `--match followed-by` against real Flink CEP.

A development tool, not part of the suite (Flink needs Java 17 and a 329 MB download):

    python tools/flink_diff.py ../shared/flink-oracle/run-oracle.sh --cases 20 --seed 1

Each case is a random event stream (few keys, many ties and exact-boundary times,
optionally out of order within a lateness bound) run through the oracle (a watermark
after every event) and through ordertimeout; the sorted result sets must be equal.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile

import orjson


def random_case(rng: random.Random, within: int, lateness: int) -> list[bytes]:
    time, lines = 1000, []
    for _ in range(rng.randint(1, 40)):
        time += rng.choice([0, 0, 1, within - 1, within, within + 1, rng.randint(1, 2 * within)])
        arrival = max(0, time - rng.randint(0, lateness)) if lateness else time
        kind = rng.choice(["create", "create", "pay", "pay", "cancel"])
        lines.append(orjson.dumps({"userId": rng.choice("123"), "type": kind, "ts": arrival}))
    return lines


def as_results(output: bytes, key: str, created: str, paid: str, deadline: str) -> list[tuple]:
    """JSON result lines, under either tool's field names, as sorted comparable tuples."""
    results = []
    for line in output.splitlines():
        r = orjson.loads(line)
        last = r[paid] if r["result"] == "success" else r[deadline]
        results.append((r["result"], r[key], r[created], last))
    return sorted(results)


def flink(oracle: str, path: str, within: int, lateness: int, mode: str) -> list[tuple]:
    contiguity = "strict" if mode == "next" else "relaxed"
    output = subprocess.run(
        [oracle, path, str(within), str(lateness), contiguity],
        capture_output=True, check=True, env={**os.environ, "ORACLE_WM": "per-event"},
    ).stdout
    return as_results(output, "userId", "create_ts", "pay_ts", "timeout_ts")


def ours(path: str, within: int, lateness: int, mode: str) -> list[tuple]:
    output = subprocess.run(
        [sys.executable, "-m", "ordertimeout", "watch", path, "--json", "-q", "--match", mode,
         "--within", f"{within}ms", "--lateness", f"{lateness}ms"],
        capture_output=True, check=True,
    ).stdout
    return as_results(output, "key", "created", "paid", "deadline")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("oracle", help="path to run-oracle.sh")
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    failures = 0
    for case in range(args.cases):
        within = rng.choice([100, 1000])
        lateness = rng.choice([0, 0, within // 2])
        lines = random_case(rng, within, lateness)
        with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as handle:
            handle.write(b"\n".join(lines) + b"\n")
        for mode in ("next", "followed-by"):
            expected, got = flink(args.oracle, handle.name, within, lateness, mode), ours(handle.name, within, lateness, mode)
            verdict = "same" if expected == got else "DIFFERENT"
            failures += expected != got
            print(f"case {case} {mode:<11} within {within} lateness {lateness}: {len(lines)} events, {verdict}")
            if expected != got:
                print(f"  input: {handle.name}\n  flink: {expected}\n  ours:  {got}")
    print(f"{failures} difference(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Benchmark ordertimeout against floors run beside it: replay throughput, peak RSS, bytes
per open order, human rows, disorder, processing-time timer lateness and start-up.
Figures, not pass/fail; medians of several runs, each ratio taken within the same round.

    python bench/run.py              # everything, 3 runs each (several minutes on 2 cores)
    python bench/run.py --runs 1     # quicker look
    python bench/run.py --only replay,startup   # some sections only
    python bench/run.py --only deadlines --baseline /tmp/base   # windows and reminders, beside
        # one window, and beside an older checkout (git archive REV ordertimeout | tar -x -C /tmp/base)

Data is generated with `ordertimeout generate` (seeded) under bench/data/ and reused.
"""

from __future__ import annotations

import argparse
import compileall
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
# The ordertimeout of this checkout, for the sections that import it here too (start-up).
sys.path.insert(1, str(HERE.parent))
DATA = HERE / "data"
COMMAND = [sys.executable, "-m", "ordertimeout"]
MODES = ("each", "next", "followed-by")
SECTIONS = ("replay", "human", "disorder", "memory", "timers", "startup", "deadlines")
#: Issue 21's side-by-side: the replay with one window, with 4 windows by payment method,
#: and with those and 3 reminder stages.
WINDOWS = ("--within", "1s", "--within", "card=500ms", "--within", "bank=2s", "--within", "shop=3s",
           "--within-by", "payment.method")
REMINDERS = ("--remind", "300ms", "--remind", "600ms", "--remind-before", "100ms")
#: Sections run only when named (--only scale,ten-million): minutes of building and
#: restarting state, and a 10M-order file (about 1 GB) held open.
EXTRA_SECTIONS = ("scale", "ten-million")


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


# The floor: the least any tool must do per event, written the fastest plain way (one
# buffered write per line). A batched `b"\n".join(...)` of orjson.dumps outputs looked
# natural but made glibc give its heap back and fault it in again after every batch, one
# page fault per event on this VM (1M faults, 3.5x slower), which flattered every ratio.
FLOOR = """
import orjson, sys
dumps, loads, newline = orjson.dumps, orjson.loads, orjson.OPT_APPEND_NEWLINE
with open(sys.argv[1], "rb") as read, open("/dev/null", "wb") as out:
    write = out.write
    for line in read:
        write(dumps(loads(line), option=newline))
"""


def watch_child(path: pathlib.Path, *options: str) -> tuple[float, int]:
    """`ordertimeout watch FILE -q OPTIONS > /dev/null`: (seconds, peak RSS)."""
    with open(os.devnull, "wb") as devnull:
        return timed_child([*COMMAND, "watch", str(path), "-q", *options], stdout=devnull)


def rounds(runs: int, contenders: dict[str, list[str] | tuple]) -> dict[str, list[tuple[float, int]]]:
    """Run every contender once per round, in turn, so load on a shared machine hits all
    of them alike; ``contenders`` maps a name to a watch option tuple or a full argv list."""
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, how in contenders.items():
            samples[name].append(timed_child(how) if isinstance(how, list) else watch_child(*how))
    return samples


def median_ratio(samples: dict, name: str, floor: str) -> float:
    """Median over rounds of (name / floor) in the same round."""
    return statistics.median(a[0] / b[0] for a, b in zip(samples[name], samples[floor]))


def best_ratio(samples: dict, name: str, floor: str) -> float:
    """Fastest round of ``name`` over fastest round of ``floor``. A shared VM's noise only
    ever slows a run (here the same loop took 0.83 to 1.42 s within an hour), so the
    fastest rounds are the steadiest estimate of each side's own cost; the verdicts keep
    the median, the stricter figure."""
    return min(s for s, _ in samples[name]) / min(s for s, _ in samples[floor])


def replay(path: pathlib.Path, runs: int) -> dict:
    """The floor loop and `watch FILE --json > /dev/null` per mode, round by round."""
    events = sum(1 for _ in open(path, "rb"))
    contenders = {"floor": [sys.executable, "-c", FLOOR, str(path)]}
    contenders.update({mode: (path, "--json", "--match", mode) for mode in MODES})
    samples = rounds(runs, contenders)
    floor = statistics.median(s for s, _ in samples["floor"])
    figures = {"events": events, "floor_s": floor, "modes": {}}
    for mode in MODES:
        seconds = statistics.median(s for s, _ in samples[mode])
        figures["modes"][mode] = {
            "seconds": seconds,
            "events_per_s": events / seconds,
            "vs_floor": median_ratio(samples, mode, "floor"),
            "best_vs_floor": best_ratio(samples, mode, "floor"),
            "peak_rss_mb": max(rss for _, rss in samples[mode]) / 2**20,
        }
    return figures


def with_payment_methods(source: pathlib.Path, path: pathlib.Path) -> pathlib.Path:
    """``source`` with a payment method in every create (card, bank, shop, cash in turn)."""
    if not path.exists():
        methods = (b"card", b"bank", b"shop", b"cash")
        with open(source, "rb") as read, open(path, "wb") as out:
            for index, line in enumerate(read):
                if b'"type":"create"' in line:
                    line = line.rstrip(b"\n")[:-1] + b',"payment":{"method":"%b"}}\n' % methods[index % 4]
                out.write(line)
    return path


def deadlines(path: pathlib.Path, runs: int, baseline: str | None) -> dict:
    """One window, 4 windows, 4 windows with 3 reminder stages (and with ``baseline``, one
    window by the package in that directory), round by round."""
    contenders: dict = {
        "one window": (path, "--json", "--within", "1s"),
        "4 windows": (path, "--json", *WINDOWS),
        "4 windows, 3 reminders": (path, "--json", *WINDOWS, *REMINDERS),
    }
    if baseline:
        # -P: not the current directory's package but the one on PYTHONPATH
        contenders["one window, baseline"] = [sys.executable, "-P", "-m", "ordertimeout", "watch", str(path), "-q",
                                              "--json", "--within", "1s"]
    samples: dict = {name: [] for name in contenders}
    environment = dict(os.environ, PYTHONPATH=baseline or "")
    with open(os.devnull, "wb") as devnull:
        for _ in range(runs):
            for name, how in contenders.items():
                if isinstance(how, list):
                    samples[name].append(timed_child(how, stdout=devnull, env=environment))
                else:
                    samples[name].append(watch_child(*how))
    figures = {name: statistics.median(s for s, _ in samples[name]) for name in contenders}
    ratios = {name: median_ratio(samples, name, "one window") for name in contenders}
    best = {name: best_ratio(samples, name, "one window") for name in contenders}
    return {"seconds": figures, "ratios": ratios, "best": best}


def human_rows(path: pathlib.Path, runs: int) -> dict:
    """Rows for people (no colour: stdout is not a terminal) against --json."""
    samples = rounds(runs, {"json": (path, "--json"), "rows": (path, "--color", "never")})
    return {
        "json_s": statistics.median(s for s, _ in samples["json"]),
        "rows_s": statistics.median(s for s, _ in samples["rows"]),
        "ratio": median_ratio(samples, "rows", "json"),
        "best_ratio": best_ratio(samples, "rows", "json"),
    }


def disorder(sorted_path: pathlib.Path, disordered_path: pathlib.Path, runs: int) -> dict:
    """The same events shuffled within 500 ms, watched with --lateness 500ms, against the
    sorted file watched as it is (no lateness) and with --lateness 500ms."""
    samples = rounds(runs, {
        "sorted": (sorted_path, "--json"),
        "sorted_lateness": (sorted_path, "--json", "--lateness", "500ms"),
        "disordered": (disordered_path, "--json", "--lateness", "500ms"),
    })
    return {
        "sorted_s": statistics.median(s for s, _ in samples["sorted"]),
        "disordered_s": statistics.median(s for s, _ in samples["disordered"]),
        "ratio": median_ratio(samples, "disordered", "sorted"),
        "best_ratio": best_ratio(samples, "disordered", "sorted"),
        "ratio_same_lateness": median_ratio(samples, "disordered", "sorted_lateness"),
    }


MEMORY = """
import gc, sys
from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

# "lanes": the timers of windows of their own and reminders (the long header, a lane
# slot per order), every order's first timer a reminder nothing reaches either.
lanes = dict(windows=(10**11,), remind=(10**10,), remind_before=(10**9,)) if sys.argv[2:] == ["lanes"] else {}
pipeline = Pipeline(EventParser(EventSchema()), Matcher(10**12, **lanes), time_mode=TimeMode.EVENT)
feed = pipeline.feed
gc.collect()
before = rss()
with open(sys.argv[1], "rb") as source:
    for line in source:
        feed(line.rstrip(b"\\n"), 0)
gc.collect()
after = rss()
print(pipeline.pending, after - before, after)
"""


def memory_per_order(path: pathlib.Path, runs: int, lanes: bool = False) -> dict:
    """RSS growth divided by open orders, with a window nothing reaches (``lanes``: also
    windows of their own and reminders); and the process's whole RSS at the end."""
    samples, totals = [], []
    for _ in range(runs):
        output = subprocess.run([sys.executable, "-c", MEMORY, str(path), *(["lanes"] if lanes else [])],
                                capture_output=True, check=True)
        pending, grown, total = map(int, output.stdout.split())
        samples.append(grown / pending)
        totals.append(total)
    return {"open_orders": pending, "bytes_per_order": statistics.median(samples),
            "rss_mb": statistics.median(totals) / 2**20}


def timer_lateness(runs: int, rate: int = 40_000, spread_s: float = 2.0, within_ms: int = 1000,
                   extra: tuple[str, ...] = ()) -> dict:
    """Processing time through a pipe: creates arrive at ``rate`` per second from the moment
    the process starts (so the first ones queue while it imports), evenly over ``spread_s``,
    then other events keep arriving at the same rate while the deadlines pass.
    Lateness = (moment the timeout line is read) - its deadline (a reminder's: its due);
    below 0 is early. ``extra``: more options (reminders)."""
    orders = int(rate * spread_s)
    per_run: list[dict] = []
    for _ in range(runs):
        lateness: list[float] = []
        process = subprocess.Popen(
            [*COMMAND, "watch", "--json", "-q", "--processing-time", "--within", f"{within_ms}ms", *extra],
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
            lateness.append(read_ms - result.get("due", result["deadline"]))
        lateness.sort()
        per_run.append({
            "timeouts": len(lateness),
            "p50_ms": statistics.median(lateness),
            "p99_ms": lateness[int(len(lateness) * 0.99) - 1],
            "max_ms": lateness[-1],
            "min_ms": lateness[0],
            "early": sum(1 for value in lateness if value < 0),
        })
    figures = {name: statistics.median(run[name] for run in per_run) for name in per_run[0]}
    figures.update(rate=rate, min_ms=min(run["min_ms"] for run in per_run), early=sum(run["early"] for run in per_run))
    return figures


def startup(runs: int) -> dict:
    """`watch --json < one-line-file` against `python -c "import click, orjson, asyncio"`,
    the floor of any asyncio click tool; many short rounds, medians."""
    one_line = DATA / "one-line.jsonl"
    if not one_line.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        one_line.write_bytes(b'{"userId":"u1","type":"create","ts":1767225600000}\n')
    # Byte-compiled first, as `pip install .` leaves a package: a run never writing its
    # .pyc files (PYTHONDONTWRITEBYTECODE) would otherwise compile every module each time.
    import ordertimeout
    compileall.compile_dir(pathlib.Path(ordertimeout.__file__).parent, quiet=1)
    floor_argv = [sys.executable, "-c", "import click, orjson, asyncio"]
    samples: dict[str, list[float]] = {"floor": [], "watch": []}
    with open(os.devnull, "wb") as devnull:
        for _ in range(max(10, 5 * runs)):
            samples["floor"].append(timed_child(floor_argv)[0])
            with open(one_line, "rb") as stdin:
                samples["watch"].append(timed_child([*COMMAND, "watch", "--json"], stdin=stdin, stdout=devnull, stderr=devnull)[0])
    return {
        "floor_ms": 1000 * statistics.median(samples["floor"]),
        "watch_ms": 1000 * statistics.median(samples["watch"]),
        "ratio": statistics.median(w / f for w, f in zip(samples["watch"], samples["floor"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median is shown)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections of {', '.join(SECTIONS + EXTRA_SECTIONS)} "
                             f"(default: all but {', '.join(EXTRA_SECTIONS)})")
    parser.add_argument("--baseline", default=None, help="deadlines: a directory holding an older ordertimeout package")
    args = parser.parse_args()
    only = set(args.only.split(","))
    replay_file = generate(DATA / "replay-1M.jsonl", "--events", "1000000", "--users", "100000", "--seed", "1")
    few_users = generate(DATA / "replay-1M-1k.jsonl", "--events", "1000000", "--users", "1000", "--seed", "1")
    disordered = generate(DATA / "replay-1M-disorder500.jsonl", "--events", "1000000", "--users", "100000", "--seed", "1", "--disorder", "500ms")
    open_file = generate(DATA / "open-1M.jsonl", "--events", "1000000", "--users", "100000", "--pay-ratio", "0", "--seed", "2")
    open_distinct = generate(DATA / "open-1M-distinct.jsonl", "--events", "1000000", "--users", "1000000000", "--pay-ratio", "0", "--seed", "3")

    verdicts: list[tuple[str, str, bool]] = []  # (figure, target, met)

    def verdict(figure: str, target: str, met: bool) -> None:
        verdicts.append((figure, target, met))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if "replay" in only:
        for label, path in (("100k users", replay_file), ("1k users", few_users)):
            figures = replay(path, args.runs)
            print(f"\nreplay: {figures['events']:,} events, {label}, `watch FILE --json -q > /dev/null`")
            print(f"  floor loop (read + orjson.loads + orjson.dumps + write): {figures['floor_s']:.2f} s "
                  f"({figures['events'] / figures['floor_s']:,.0f} events/s)")
            for mode, m in figures["modes"].items():
                print(f"  --match {mode:<12} {m['seconds']:.2f} s  {m['events_per_s']:>10,.0f} events/s  "
                      f"{m['vs_floor']:.2f}x floor (best rounds {m['best_vs_floor']:.2f}x)  peak RSS {m['peak_rss_mb']:.0f} MB")
                verdict(f"replay {label} {mode}: {m['vs_floor']:.2f}x floor", "<= 3.0x", m["vs_floor"] <= 3.0)
            top_rss = max(m["peak_rss_mb"] for m in figures["modes"].values())
            verdict(f"replay {label} peak RSS {top_rss:.0f} MB", "< 150 MB", top_rss < 150)
    if "human" in only:
        rows = human_rows(replay_file, args.runs)
        print(f"\nhuman rows (piped, no colour): {rows['rows_s']:.2f} s against --json {rows['json_s']:.2f} s: "
              f"{rows['ratio']:.2f}x (best rounds {rows['best_ratio']:.2f}x)")
        verdict(f"human rows {rows['ratio']:.2f}x --json", "<= 1.3x", rows["ratio"] <= 1.3)
    if "disorder" in only:
        shuffled = disorder(replay_file, disordered, args.runs)
        print(f"\ndisorder: the replay shuffled within 500 ms, --lateness 500ms: {shuffled['disordered_s']:.2f} s "
              f"against sorted {shuffled['sorted_s']:.2f} s: {shuffled['ratio']:.2f}x (best rounds {shuffled['best_ratio']:.2f}x) "
              f"({shuffled['ratio_same_lateness']:.2f}x against sorted with --lateness 500ms)")
        verdict(f"disorder {shuffled['ratio']:.2f}x sorted", "<= 1.3x", shuffled["ratio"] <= 1.3)
    if "memory" in only:
        for label, path in (("100k users", open_file), ("1M distinct users", open_distinct)):
            for lanes in (False, True):
                memory = memory_per_order(path, args.runs, lanes)
                label_here = label + (", windows and reminders" if lanes else "")
                print(f"\nmemory: {memory['open_orders']:,} open orders ({label_here}): "
                      f"{memory['bytes_per_order']:.0f} bytes per open order (stored event included)")
                verdict(f"memory {label_here} {memory['bytes_per_order']:.0f} B/order", "<= 300 B",
                        memory["bytes_per_order"] <= 300)
    if "ten-million" in only:
        path = generate(DATA / "open-10M-distinct.jsonl", "--events", "10000000", "--users", "1000000000",
                        "--pay-ratio", "0", "--seed", "4")
        memory = memory_per_order(path, 1, lanes=True)
        print(f"\nmemory: {memory['open_orders']:,} open orders (distinct users, windows and reminders): "
              f"{memory['bytes_per_order']:.0f} bytes per open order, the whole process {memory['rss_mb']:,.0f} MB")
        verdict(f"10M open orders with windows and reminders: {memory['rss_mb']:,.0f} MB", "< 3,584 MB (3.5 GB)",
                memory["rss_mb"] < 3584)
    if "timers" in only:
        lateness = timer_lateness(args.runs)
        print(f"\ntimer lateness: {lateness['timeouts']:,.0f} processing-time timeouts, {lateness['rate']:,} creates/s "
              f"through a pipe from process start: p50 {lateness['p50_ms']:.1f} ms, p99 {lateness['p99_ms']:.1f} ms, "
              f"max {lateness['max_ms']:.1f} ms, min {lateness['min_ms']:.1f} ms ({lateness['early']} early)")
        verdict(f"timer lateness p99 {lateness['p99_ms']:.1f} ms", "<= 5 ms", lateness["p99_ms"] <= 5)
        verdict(f"timer lateness max {lateness['max_ms']:.1f} ms", "<= 20 ms", lateness["max_ms"] <= 20)
        verdict(f"timeouts early: {lateness['early']}", "none", lateness["early"] == 0)
        reminded = timer_lateness(args.runs, extra=("--remind", "300ms", "--remind-before", "200ms"))
        print(f"  with --remind 300ms --remind-before 200ms: {reminded['timeouts']:,.0f} timers (reminders and "
              f"timeouts): p50 {reminded['p50_ms']:.1f} ms, p99 {reminded['p99_ms']:.1f} ms, max {reminded['max_ms']:.1f} ms "
              f"({reminded['early']} early)")
        verdict(f"timer lateness with reminders p99 {reminded['p99_ms']:.1f} ms", "<= 5 ms", reminded["p99_ms"] <= 5)
    if "startup" in only:
        start = startup(args.runs)
        print(f"\nstart-up: `watch --json < one-line-file` {start['watch_ms']:.0f} ms against "
              f"`python -c \"import click, orjson, asyncio\"` {start['floor_ms']:.0f} ms: {start['ratio']:.2f}x")
        verdict(f"start-up {start['watch_ms']:.0f} ms", "<= 150 ms", start["watch_ms"] <= 150)
        verdict(f"start-up {start['ratio']:.2f}x floor", "<= 1.3x", start["ratio"] <= 1.3)
    if "deadlines" in only:
        shop = with_payment_methods(replay_file, DATA / "replay-1M-methods.jsonl")
        figures = deadlines(shop, args.runs, args.baseline)
        print("\ndeadlines: the replay (100k users) with a payment method in each create, `--json`")
        for name, seconds in figures["seconds"].items():
            print(f"  {name:<24} {seconds:.2f} s  {figures['ratios'][name]:.2f}x one window "
                  f"(best rounds {figures['best'][name]:.2f}x)")
        ratio = figures["ratios"]["4 windows, 3 reminders"]
        verdict(f"4 windows and 3 reminders {ratio:.2f}x one window", "<= 1.15x", ratio <= 1.15)
        if args.baseline:
            ratio = 1 / figures["ratios"]["one window, baseline"]
            verdict(f"one window {ratio:.2f}x the baseline", "<= 1.0x (noise aside)", ratio <= 1.02)
    if "scale" in only:
        from scale import report, scale

        report(scale(args.runs), verdict)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if verdicts:
        print("\nagainst the targets:")
        width = max(len(figure) for figure, _, _ in verdicts)
        for figure, target, met in verdicts:
            print(f"  {'met   ' if met else 'MISSED'}  {figure:<{width}}  (target {target})")


if __name__ == "__main__":
    main()

"""Scale: what a million open orders cost, and that it is linear in what changes.

`bench/run.py --only scale` (or `python bench/scale.py`): for 1M and 4M open orders (one
create each of distinct users, `--within 3d`, event time) it measures, side by side:

- build: `watch FILE --state DB` from nothing (parse, match, first checkpoint);
- restart: the same command again, no new input (restore, one checkpoint);
- restart + 1,000: the same after 1,000 new events were appended (what a checkpoint writes
  must grow with the changes, not with what is open);
- settle: `watch FILE` without --state: every order times out at end of input.

Wall seconds, peak RSS, and bytes written to disk (the child's block outputs, 512 bytes
each, as the kernel counts them).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).parent
DATA = HERE / "data"
COMMAND = [sys.executable, "-m", "ordertimeout"]
OPTIONS = ["--within", "3d", "--json", "-q"]
EPOCH = 1_764_000_000_000


def open_orders_file(count: int) -> pathlib.Path:
    """``count`` creates of distinct users, one per millisecond (made once, reused)."""
    path = DATA / f"open-{count // 1_000_000}M-creates.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for start in range(0, count, 100_000):
                out.write(b"".join(
                    b'{"userId":"u%d","type":"create","orderId":"o-%d","amount":49.90,"ts":%d}\n' % (i, i, EPOCH + i)
                    for i in range(start, min(count, start + 100_000))))
    return path


def child(argv: list[str]) -> dict:
    """Run one child to completion with stdout to /dev/null: seconds, peak RSS, written."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        process = subprocess.Popen(argv, stdout=devnull)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return {"seconds": time.perf_counter() - start, "peak_mb": usage.ru_maxrss / 1024,
            "written_mb": usage.ru_oublock * 512 / 2**20}


def one_size(count: int, runs: int) -> dict:
    """Median figures of build, restart, restart after 1,000 new events, and settle."""
    source = open_orders_file(count)
    samples: dict[str, list[dict]] = {"build": [], "restart": [], "restart+1000": [], "settle": []}
    state_mb = 0.0
    with tempfile.TemporaryDirectory(dir=DATA) as scratch:
        events = pathlib.Path(scratch) / "events.jsonl"
        state = pathlib.Path(scratch) / "state.db"
        for _ in range(runs):
            for leftover in pathlib.Path(scratch).glob("state.db*"):
                leftover.unlink()
            shutil.copyfile(source, events)
            watch = [*COMMAND, "watch", str(events), "--state", str(state), *OPTIONS]
            samples["build"].append(child(watch))
            state_mb = state.stat().st_size / 2**20
            samples["restart"].append(child(watch))
            with open(events, "ab") as out:  # 1,000 more: 500 pays of open orders, 500 creates
                out.write(b"".join(b'{"userId":"u%d","type":"pay","ts":%d}\n' % (i, EPOCH + count + i)
                                   for i in range(500)))
                out.write(b"".join(b'{"userId":"n%d","type":"create","ts":%d}\n' % (i, EPOCH + count + 500 + i)
                                   for i in range(500)))
            samples["restart+1000"].append(child(watch))
            samples["settle"].append(child([*COMMAND, "watch", str(source), *OPTIONS]))
    figures = {name: {field: statistics.median(s[field] for s in runs_of) for field in runs_of[0]}
               for name, runs_of in samples.items()}
    figures["state_mb"] = state_mb
    figures["restart_vs_build"] = statistics.median(
        r["seconds"] / b["seconds"] for r, b in zip(samples["restart"], samples["build"]))
    figures["restart_rss_vs_build"] = statistics.median(
        r["peak_mb"] / b["peak_mb"] for r, b in zip(samples["restart"], samples["build"]))
    return figures


def scale(runs: int, sizes=(1_000_000, 4_000_000)) -> dict[int, dict]:
    """The figures of every size, smallest first."""
    return {count: one_size(count, runs) for count in sizes}


def report(figures: dict[int, dict], verdict) -> None:
    """Print the figures; ``verdict(figure, target, met)`` records those with a target."""
    for count, f in figures.items():
        print(f"\nscale: {count:,} open orders (distinct users, --within 3d, event time), state file {f['state_mb']:.0f} MB")
        for name in ("build", "restart", "restart+1000", "settle"):
            step = f[name]
            print(f"  {name:<13} {step['seconds']:6.2f} s  peak RSS {step['peak_mb']:5.0f} MB  "
                  f"written {step['written_mb']:7.1f} MB")
        print(f"  restart: {f['restart_vs_build']:.2f}x the build's time, {f['restart_rss_vs_build']:.2f}x its peak RSS, "
              f"{f['restart']['written_mb'] / f['state_mb'] * 100:.2f}% of the state written")
        if count == 1_000_000:
            verdict(f"scale 1M restart {f['restart_vs_build']:.2f}x build", "<= 0.25x", f["restart_vs_build"] <= 0.25)
            verdict(f"scale 1M restart peak RSS {f['restart_rss_vs_build']:.2f}x build", "<= 1.2x",
                    f["restart_rss_vs_build"] <= 1.2)
            share = f["restart"]["written_mb"] / f["state_mb"]
            verdict(f"scale 1M restart writes {share * 100:.2f}% of the state", "<= 5%", share <= 0.05)
            verdict(f"scale 1M settle peak RSS {f['settle']['peak_mb']:.0f} MB", "<= 450 MB", f["settle"]["peak_mb"] <= 450)
    if len(figures) > 1:
        (small, a), (large, b) = list(figures.items())[0], list(figures.items())[-1]
        print(f"\nshape, {large // small}x the open orders: restart+1000 writes {b['restart+1000']['written_mb']:.1f} MB "
              f"against {a['restart+1000']['written_mb']:.1f} MB (flat: it writes the changes); restore time "
              f"{b['restart']['seconds'] / a['restart']['seconds']:.1f}x (linear: it reads what is open)")


if __name__ == "__main__":
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    met = []
    report(scale(runs), lambda figure, target, ok: met.append((figure, target, ok)))
    for figure, target, ok in met:
        print(f"  {'met   ' if ok else 'MISSED'}  {figure}  (target {target})")

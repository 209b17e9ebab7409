#!/usr/bin/env python3
"""Benchmark delivery: webhooks per second to a local server, and matching with and without
delivery. Figures, not pass/fail; medians of several runs.

    python bench/deliveries.py              # 3 runs each (about a minute on 2 cores)
    python bench/deliveries.py --runs 1

Deliveries per second: `watch FILE --webhook URL` with every order timing out, to an aiohttp
server on 127.0.0.1 (in this process, answering 200 at once), timed from the first request
to the last; without and with --state (the outbox in SQLite). Then the same to a minimal
asyncio server, much cheaper than aiohttp's, which shows what the sender alone can do.
Target: at least 3,000/s.

Matching: the run's own elapsed time (`--stats` elapsed_s: reading and matching, not the
drain that follows) of the same file with and without --webhook; the ratio shows what
delivery costs matching, since both share one process and one event loop.

Outage (`--outage 90`, or `--outage-only`): a live `watch --state` fed about 20 events a
second, its endpoint answering 503 for that many seconds and then 200 at once: attempts
while down (in all and a second), how long the backlog took to drain after the recovery
(and its p90), results that arrived after a later one, every result delivered once, and
whether `ordertimeout outbox STATE` answered during the outage. Real time: the outage
plus about 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import orjson

HERE = pathlib.Path(__file__).parent
DATA = HERE / "data"
COMMAND = [sys.executable, "-m", "ordertimeout"]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Server:
    """An aiohttp server on 127.0.0.1 in a thread that counts POSTs and notes first and last."""

    def __init__(self) -> None:
        from aiohttp import web

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.count = 0
        self.first = self.last = 0.0
        self.delay = 0.0  # seconds before each answer: a slow endpoint
        self.loop = asyncio.new_event_loop()

        async def handle(request):
            await request.read()
            if self.delay:
                await asyncio.sleep(self.delay)
            now = time.perf_counter()
            if not self.count:
                self.first = now
            self.count += 1
            self.last = now
            return web.Response()

        async def start():
            app = web.Application()
            app.router.add_post("/hook", handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result()

    def reset(self) -> None:
        self.count, self.first, self.last = 0, 0.0, 0.0


class MinimalServer(Server):
    """The same counting, with a bare asyncio protocol answering each request with an empty
    200: about ten times cheaper than aiohttp's server, so the figure is the sender's own."""

    def __init__(self) -> None:  # noqa: D107 (no aiohttp here)
        self.count = 0
        self.first = self.last = 0.0
        self.loop = asyncio.new_event_loop()
        server = self

        class Answer(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport, self.buffer = transport, b""

            def data_received(self, data):
                self.buffer += data
                while True:
                    head, found, rest = self.buffer.partition(b"\r\n\r\n")
                    if not found:
                        return
                    length = next((int(line[15:]) for line in head.split(b"\r\n")
                                   if line[:15].lower() == b"content-length:"), 0)
                    if len(rest) < length:
                        return
                    self.buffer = rest[length:]
                    now = time.perf_counter()
                    if not server.count:
                        server.first = now
                    server.count += 1
                    server.last = now
                    self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        async def start():
            listening = await self.loop.create_server(Answer, "127.0.0.1", 0)
            self.port = listening.sockets[0].getsockname()[1]

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        self.url = f"http://127.0.0.1:{self.port}/hook"


def generate(orders: int) -> pathlib.Path:
    """`orders` creates a millisecond apart, never paid: one timeout each."""
    path = DATA / f"creates-{orders}.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as out:
            for n in range(orders):
                out.write(orjson.dumps({"userId": f"u{n}", "type": "create", "ts": 1_700_000_000_000 + n}) + b"\n")
    return path


def watch(path: pathlib.Path, *args: str, check: bool = True) -> dict:
    """Run watch to completion; return its --stats counters."""
    with tempfile.TemporaryDirectory() as scratch:
        stats = pathlib.Path(scratch) / "stats.json"
        extra = [a.replace("{scratch}", scratch) for a in args]
        env = dict(os.environ, ORDERTIMEOUT_WEBHOOK_SECRET=SECRET)
        subprocess.run([*COMMAND, "watch", str(path), "-q", "--json", "--stats", str(stats), *extra],
                       stdout=subprocess.DEVNULL, stderr=None if check else subprocess.DEVNULL, check=check, env=env)
        return orjson.loads(stats.read_bytes())


def deliveries(server: Server, path: pathlib.Path, runs: int, *args: str) -> dict:
    rates = []
    for _ in range(runs):
        server.reset()
        stats = watch(path, "--webhook", server.url, "--drain-timeout", "10m", *args)
        assert stats["deliveries"]["delivered"] == server.count, (stats["deliveries"], server.count)
        rates.append(server.count / (server.last - server.first))
    return {"delivered": server.count, "per_s": statistics.median(rates)}


def matching(server: Server, path: pathlib.Path, runs: int) -> dict:
    """Elapsed matching time alone, with a fast endpoint, and with one answering in 1 s."""
    plain = statistics.median(watch(path)["elapsed_s"] for _ in range(runs))
    fast = statistics.median(
        watch(path, "--webhook", server.url, "--drain-timeout", "10m")["elapsed_s"] for _ in range(runs))
    server.delay = 1.0
    slow = statistics.median(
        watch(path, "--webhook", server.url, "--drain-timeout", "0", check=False)["elapsed_s"] for _ in range(runs))
    server.delay = 0.0
    return {"plain_s": plain, "fast_s": fast, "slow_s": slow}


class OutageServer:
    """An aiohttp server that answers 503 while ``down``, noting every request's time and id."""

    def __init__(self) -> None:
        from aiohttp import web

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.down = False
        self.requests: list[tuple[float, str, int]] = []  # (time, webhook-id, status)
        self.loop = asyncio.new_event_loop()

        async def handle(request):
            await request.read()
            status = 503 if self.down else 200
            self.requests.append((time.monotonic(), request.headers.get("webhook-id", ""), status))
            return web.Response(status=status)

        async def start():
            app = web.Application()
            app.router.add_post("/hook", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()

        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(start(), self.loop).result()


def outage(seconds: float, rate: float = 20.0) -> dict:
    """The issue's scenario: a live watch, its endpoint down for ``seconds``."""
    server = OutageServer()
    with tempfile.TemporaryDirectory() as scratch:
        state = pathlib.Path(scratch) / "state.db"
        process = subprocess.Popen(
            [*COMMAND, "watch", "--processing-time", "--within", "1s", "--json", "-q", "--state", str(state),
             "--webhook", server.url], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sent = 0

        def feed(duration: float) -> None:
            nonlocal sent
            end = time.monotonic() + duration
            while time.monotonic() < end:
                process.stdin.write(orjson.dumps({"userId": f"k{sent}", "type": "create", "ts": 0}) + b"\n")
                process.stdin.flush()
                sent += 1
                time.sleep(1 / rate)

        feed(5)
        server.down, went_down = True, time.monotonic()
        outbox_answers = []
        while time.monotonic() - went_down < seconds:
            feed(min(5.0, seconds - (time.monotonic() - went_down)))
            listed = subprocess.run([*COMMAND, "outbox", str(state)], capture_output=True)
            outbox_answers.append(listed.returncode)
        server.down, came_back = False, time.monotonic()
        # the backlog: every result of a create sent before the recovery (the last second's
        # are decided just after it)
        decided_before_recovery = {f"timeout:k{n}:" for n in range(sent)}
        feed(5)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            delivered = {rid for _, rid, status in server.requests if status == 200}
            if len(delivered) >= sent:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    ok = [(moment, rid) for moment, rid, status in server.requests if status == 200]
    down_attempts = [moment for moment, _, status in server.requests if status == 503]
    backlog = [moment - came_back for moment, rid in ok
               if rid.rsplit(":", 2)[0] + ":" in decided_before_recovery and moment >= came_back]
    numbers = [int(rid.split(":")[1][1:]) for _, rid in sorted(ok)]
    highest, after_later = -1, 0
    for number in numbers:
        after_later += number < highest
        highest = max(highest, number)
    return {
        "results": sent, "delivered": len({rid for _, rid in ok}), "deliveries": len(ok),
        "attempts_down": len(down_attempts), "attempts_down_per_s": len(down_attempts) / seconds,
        "drain_s": max(backlog, default=0.0), "drain_p90_s": statistics.quantiles(backlog, n=10)[-1] if len(backlog) > 1 else 0.0,
        "backlog": len(backlog), "after_later": after_later,
        "outbox_polls": len(outbox_answers), "outbox_failed": sum(code != 0 for code in outbox_answers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--matching-orders", type=int, default=200_000,
                        help="orders of the matching comparison (enough that start-up does not count)")
    parser.add_argument("--outage", type=float, default=90.0, help="seconds the endpoint is down in the outage scenario")
    parser.add_argument("--outage-only", action="store_true", help="only the outage scenario")
    options = parser.parse_args()
    if options.outage_only:
        return report_outage(options.outage)
    server = Server()
    path = generate(options.orders)
    print(f"python {platform.python_version()}, {os.cpu_count()} cpus, {options.orders:,} results per run")
    for concurrency in ("8", "32"):
        memory = deliveries(server, path, options.runs, "--deliver-concurrency", concurrency)
        print(f"webhook, outbox in memory,  concurrency {concurrency:>2}: {memory['per_s']:8,.0f} deliveries/s")
        durable = deliveries(server, path, options.runs, "--deliver-concurrency", concurrency,
                             "--state", "{scratch}/state.db")
        print(f"webhook, outbox in --state, concurrency {concurrency:>2}: {durable['per_s']:8,.0f} deliveries/s")
    minimal = MinimalServer()
    for concurrency in ("8", "32"):
        alone = deliveries(minimal, path, options.runs, "--deliver-concurrency", concurrency)
        print(f"webhook to a minimal server,  concurrency {concurrency:>2}: {alone['per_s']:8,.0f} deliveries/s")
    figures = matching(server, generate(options.matching_orders), options.runs)
    print(f"matching {options.matching_orders:,} orders (elapsed_s): alone {figures['plain_s']:.2f}s, delivering to a fast endpoint "
          f"{figures['fast_s']:.2f}s (x{figures['fast_s'] / figures['plain_s']:.2f}), to one answering in 1 s "
          f"{figures['slow_s']:.2f}s (x{figures['slow_s'] / figures['plain_s']:.2f})")
    report_outage(options.outage)


def report_outage(seconds: float) -> None:
    figures = outage(seconds)
    print(f"outage of {seconds:g}s at 20 events/s: {figures['results']:,} results, {figures['delivered']:,} delivered "
          f"({figures['deliveries']:,} deliveries); {figures['attempts_down']} attempts while down "
          f"({figures['attempts_down_per_s']:.2f}/s); backlog of {figures['backlog']:,} drained "
          f"{figures['drain_s']:.1f}s after recovery (p90 {figures['drain_p90_s']:.1f}s); {figures['after_later']:,} "
          f"arrived after a later result; outbox answered {figures['outbox_polls'] - figures['outbox_failed']}"
          f"/{figures['outbox_polls']} polls during the outage")


if __name__ == "__main__":
    main()

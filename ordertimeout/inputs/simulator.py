"""Simulated input: the original demo's endless cycle, and synthetic shop traffic.

User "1" creates an order and never pays; user "2" creates one and pays one interval
later. Times are the scheduled emission times, so the same start and interval always
give the same events, byte for byte. ``generate_traffic`` takes its randomness as an
argument for the same reason.
"""

from __future__ import annotations

import heapq
import itertools
import random
from typing import Iterator

import orjson

__all__ = ["CYCLE", "cycle_events", "generate_traffic", "GENERATE_START_MS"]

#: One turn of the cycle: (userId, type).
CYCLE = (("1", "create"), ("2", "create"), ("2", "pay"))


def cycle_events(start_ms: int, interval_ms: int, count: int | None = None) -> Iterator[tuple[int, bytes]]:
    """``(time, raw JSON line)`` pairs: event ``i`` at ``start_ms + i * interval_ms``.

    Runs forever when ``count`` is None.
    """
    if interval_ms <= 0:
        raise ValueError("interval must be positive")
    steps = itertools.count() if count is None else range(count)
    for index in steps:
        user, kind = CYCLE[index % len(CYCLE)]
        time = start_ms + index * interval_ms
        yield time, orjson.dumps({"userId": user, "type": kind, "ts": time})


#: Start of generated traffic: 2026-01-01T00:00:00Z, fixed so the same seed gives the same bytes.
GENERATE_START_MS = 1_767_225_600_000


def generate_traffic(
    rng: random.Random,
    *,
    events: int,
    users: int,
    pay_ratio: float,
    within_ms: int,
    rate_per_s: float = 10_000.0,
    disorder_ms: int = 0,
    start_ms: int = GENERATE_START_MS,
) -> Iterator[bytes]:
    """Synthetic shop traffic as JSON lines (without newlines), deterministic for ``rng``.

    Orders arrive at ``rate_per_s`` events per second of event time, each for a random
    user; a share ``pay_ratio`` of them is paid after a delay spread around the window
    (from 5% to 150% of ``within_ms``, so about a third of the paid orders pay too late).
    Lines are in time order, or, with ``disorder_ms``, shuffled so that no event arrives
    more than ``disorder_ms`` after a later-stamped one.
    """
    if events < 0 or users <= 0 or not 0 <= pay_ratio <= 1 or within_ms <= 0 or rate_per_s <= 0:
        raise ValueError("events >= 0, users > 0, 0 <= pay_ratio <= 1, within > 0, rate > 0")
    gap_ms = 1000.0 * (1 + pay_ratio) / rate_per_s
    pending: list[tuple[int, int, bytes]] = []  # (time, sequence, line) heap of future pays
    sequence = 0
    emitted = 0
    clock = float(start_ms)

    def line(kind: str, user: str, order: int, amount: float, time: int) -> bytes:
        return orjson.dumps(
            {"userId": user, "type": kind, "orderId": f"o{order:08d}", "amount": amount, "ts": time}
        )

    def timed() -> Iterator[tuple[int, bytes]]:
        nonlocal sequence, emitted, clock
        for order in itertools.count():
            # New orders only while their events fit: the pays already scheduled still
            # come, so the share of paid orders holds up to the last event.
            budget = events - emitted - len(pending)
            if budget <= 0:
                break
            clock += rng.expovariate(1.0 / gap_ms)
            now = int(clock)
            while pending and pending[0][0] <= now:
                time, _, raw = heapq.heappop(pending)
                emitted += 1
                yield time, raw
            user = f"u{rng.randrange(users)}"
            amount = round(rng.uniform(1, 500), 2)
            emitted += 1
            yield now, line("create", user, order, amount, now)
            if budget > 1 and rng.random() < pay_ratio:
                paid = now + max(1, int(within_ms * rng.uniform(0.05, 1.5)))
                heapq.heappush(pending, (paid, sequence, line("pay", user, order, amount, paid)))
                sequence += 1
        while pending:
            time, _, raw = heapq.heappop(pending)
            emitted += 1
            yield time, raw

    if not disorder_ms:
        for _, raw in timed():
            yield raw
        return
    # Arrival = time + a random delay up to the bound; release in arrival order.
    held: list[tuple[float, int, bytes]] = []
    for index, (time, raw) in enumerate(timed()):
        while held and held[0][0] <= time:
            yield heapq.heappop(held)[2]
        heapq.heappush(held, (time + rng.uniform(0, disorder_ms), index, raw))
    while held:
        yield heapq.heappop(held)[2]

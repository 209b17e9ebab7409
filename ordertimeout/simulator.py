"""The simulator: the original demo's endless cycle of order events, as plain data.

User "1" creates an order and never pays; user "2" creates one and pays one interval
later. Times are the scheduled emission times, so the same start and interval always
give the same events, byte for byte.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import orjson

__all__ = ["CYCLE", "cycle_events"]

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

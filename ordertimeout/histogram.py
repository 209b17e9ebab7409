"""Fixed-bucket histograms of milliseconds: counted in O(1) where things happen, read by
``--stats`` and ``/metrics`` alike (plain data; prometheus-client only reads them)."""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable

__all__ = ["Buckets", "TIMER_LATENESS_BOUNDS_MS", "window_bounds"]

#: How long after its deadline a timer-driven timeout went out: a few ms is normal,
#: seconds mean the loop was starved.
TIMER_LATENESS_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2500, 5000, 10_000)

#: Pay latency is below the window by definition: buckets are shares of ``--within``.
WINDOW_SHARES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def window_bounds(within: int) -> tuple[int, ...]:
    """Bucket bounds (ms) for pay latencies under a window of ``within`` ms."""
    return tuple(sorted({max(1, round(within * share)) for share in WINDOW_SHARES}))


class Buckets:
    """Counts of observations (ms) per upper bound, plus their count, sum and maximum.

    An observation ``v`` falls in the first bucket whose bound is ``>= v`` (Prometheus's
    ``le``), or in the overflow bucket past the last bound.
    """

    def __init__(self, bounds_ms: Iterable[int]) -> None:
        self.bounds = tuple(sorted(bounds_ms))
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.sum = 0
        self.max: int | None = None

    def observe(self, value: int) -> None:
        """Count one observation of ``value`` ms."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value
        if self.max is None or value > self.max:
            self.max = value

    def observe_all(self, values: Iterable[int]) -> None:
        """Count many observations."""
        for value in values:
            self.observe(value)

    def cumulative(self) -> list[tuple[float, int]]:
        """``[(bound_ms, observations <= bound), ..., (inf, count)]``."""
        total, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            out.append((bound, total))
        return out

    def figures(self) -> dict | None:
        """Count, sum and maximum for ``--stats``; None before the first observation."""
        if not self.count:
            return None
        return {"count": self.count, "sum_ms": self.sum, "max_ms": self.max}

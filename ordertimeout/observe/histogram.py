"""Fixed-bucket histograms of milliseconds: counted in O(1) where things happen, read by
``--stats`` and ``/metrics`` alike (plain data; prometheus-client only reads them)."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import Iterable

__all__ = ["Buckets", "LatencyCounts", "TIMER_LATENESS_BOUNDS_MS", "window_bounds"]

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

    def observe(self, value: int, times: int = 1) -> None:
        """Count an observation of ``value`` ms (``times`` of them)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.count += times
        self.sum += value * times
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


class LatencyCounts:
    """Every pay latency (ms) of a run, kept as a count per value, for exact percentiles
    in memory that does not grow with the number of orders: a run of days keeps one entry
    per distinct value, not eight bytes per success.

    Exact to the millisecond while there are at most :attr:`MAX_EXACT` distinct values
    (always so for windows up to two minutes). Past that (a long window over a long run),
    values of :attr:`EXACT_BELOW` ms (about 65 s) and more keep their 16 leading bits
    (within 0.003%, under 30 ms at 15 minutes), which bounds the entries to a few hundred
    thousand whatever the window. Count, sum and maximum are always exact.
    """

    MAX_EXACT = 1 << 17
    EXACT_BELOW = 1 << 16

    def __init__(self) -> None:
        self._counts: Counter[int] = Counter()
        self.count = 0
        self.sum = 0
        self.max: int | None = None
        self.exact = True

    def extend(self, values: list[int]) -> None:
        """Count the latencies ``values``."""
        if not values:
            return
        top = max(values)
        self.count += len(values)
        self.sum += sum(values)
        if self.max is None or top > self.max:
            self.max = top
        if not self.exact and top >= self.EXACT_BELOW:
            values = [_leading_bits(value) for value in values]
        self._counts.update(values)  # counted in C
        if self.exact and len(self._counts) > self.MAX_EXACT:
            self.exact = False
            coarse: Counter[int] = Counter()
            for value, count in self._counts.items():
                coarse[_leading_bits(value)] += count
            self._counts = coarse

    def __len__(self) -> int:
        return self.count

    def items(self) -> list[tuple[int, int]]:
        """``(value, count)`` pairs in value order."""
        return sorted(self._counts.items())

    def percentile(self, share: float) -> int:
        """The value below which ``share`` of the latencies lie: the one at index
        ``int(share * count)`` of them all in order (the last one for share 1)."""
        if not self.count:
            raise ValueError("no latencies")
        index = min(self.count - 1, int(share * self.count))
        seen = 0
        for value, count in self.items():
            seen += count
            if seen > index:
                return value
        raise AssertionError("counts do not add up")  # pragma: no cover

    def buckets(self, bounds_ms: Iterable[int]) -> Buckets:
        """The latencies folded into fixed buckets (for /metrics)."""
        buckets = Buckets(bounds_ms)
        for value, count in self._counts.items():
            buckets.counts[bisect_left(buckets.bounds, value)] += count
        buckets.count, buckets.sum, buckets.max = self.count, self.sum, self.max
        return buckets


def _leading_bits(value: int, bits: int = 16) -> int:
    """``value`` with all but its ``bits`` leading binary digits cleared (a value below
    ``2**bits`` stays as it is)."""
    shift = value.bit_length() - bits
    return value if shift <= 0 else (value >> shift) << shift

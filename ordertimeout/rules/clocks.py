"""Clocks: where "now" comes from, injected so that nothing else reads the time.

Every clock speaks integer epoch milliseconds. :class:`LoopClock` follows the running
asyncio loop's monotonic time from a wall-clock anchor taken once, so it never goes
backwards when the system clock is stepped, and under a virtual-time loop (the tests'
``virtual_time``) hour-long waits take no real time at all. Once anchored inside the
loop, its ``now_ms`` may also be read from other threads (a reader thread stamping the
arrival of what it reads) on the same time base.
:class:`ManualClock` is set by hand, for the synchronous parts.
"""

from __future__ import annotations

import asyncio
import math
import time as _time
from typing import Protocol

__all__ = ["Clock", "LoopClock", "ManualClock", "elapsed_ms"]


class Clock(Protocol):
    """A source of "now" that can also wait for a moment to come."""

    def now_ms(self) -> int:
        """The current time in epoch milliseconds; never smaller than a previous answer."""
        ...

    def seconds_until(self, moment_ms: int | float) -> float:
        """Seconds from now until ``moment_ms`` (0 if it has passed), at full precision."""
        ...

    async def sleep_until(self, moment_ms: int | float) -> None:
        """Return once ``now_ms() >= moment_ms``."""
        ...


class LoopClock:
    """Wall-clock milliseconds that advance with the asyncio loop's monotonic time.

    ``epoch_ms`` anchors the clock (default: the system's wall clock at the first use);
    the tests give a fixed anchor so virtual runs are reproducible.
    """

    def __init__(self, epoch_ms: int | None = None) -> None:
        self._epoch_ms = epoch_ms
        self._loop_start: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _anchor(self) -> float:
        if self._loop_start is None:
            self._loop = asyncio.get_running_loop()
            self._loop_start = self._loop.time()
            if self._epoch_ms is None:
                self._epoch_ms = _time.time_ns() // 1_000_000
        return self._loop_start

    def now_ms(self) -> int:
        """Epoch milliseconds now (floored), from the loop's monotonic clock."""
        start = self._anchor() if self._loop is None else self._loop_start
        elapsed = self._loop.time() - start
        # The epsilon absorbs float error so a timer due at t does not read t - 1.
        return self._epoch_ms + math.floor(elapsed * 1000 + 1e-6)

    def from_monotonic(self, moment: float) -> int:
        """The epoch milliseconds of ``time.monotonic()`` reading ``moment``: this clock's
        reading then, for a moment noted before the loop ran (a default loop's time is
        ``time.monotonic``)."""
        start = self._anchor()
        return self._epoch_ms + math.floor((moment - start) * 1000 + 1e-6)

    def seconds_until(self, moment_ms: int | float) -> float:
        """Seconds until ``moment_ms`` from the loop's unrounded time, so a wait never
        overshoots by the fraction of a millisecond that ``now_ms`` floors away."""
        start = self._anchor()
        target = start + (moment_ms - self._epoch_ms) / 1000
        return max(0.0, target - self._loop.time())

    async def sleep_until(self, moment_ms: int | float) -> None:
        """Sleep until the loop's time reaches ``moment_ms``."""
        while self.now_ms() < moment_ms:
            await asyncio.sleep(self.seconds_until(moment_ms))


class ManualClock:
    """A clock moved by hand; ``sleep_until`` jumps straight to the moment."""

    def __init__(self, start_ms: int = 0) -> None:
        self.now = start_ms

    def now_ms(self) -> int:
        """The time last set."""
        return self.now

    def advance(self, milliseconds: int) -> int:
        """Move time forward and return the new time."""
        if milliseconds < 0:
            raise ValueError("time does not go backwards")
        self.now += milliseconds
        return self.now

    def seconds_until(self, moment_ms: int | float) -> float:
        """Seconds from the set time until ``moment_ms`` (0 if it has passed)."""
        return max(0.0, (moment_ms - self.now) / 1000)

    async def sleep_until(self, moment_ms: int | float) -> None:
        """Jump to ``moment_ms`` (if it is later) without waiting."""
        if moment_ms > self.now:
            self.now = int(math.ceil(moment_ms))


def elapsed_ms(clock: Clock, started_ms: int | None, finished_ms: int | None) -> int:
    """Milliseconds a run took: from ``started_ms`` to ``finished_ms``, or to now while it
    runs (0 before it started)."""
    if started_ms is None:
        return 0
    return (finished_ms if finished_ms is not None else clock.now_ms()) - started_ms

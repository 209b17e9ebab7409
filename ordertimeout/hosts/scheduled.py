"""The simulator's host loop: scheduled events fed at their times, timeouts between them.

A mixin of :class:`~.runtime.Runtime` (which holds the pipeline, the clock, ``_emit`` and
``_record_lateness``), used by ``ordertimeout simulate``: in, ``(time, raw)`` pairs on a
schedule; out, each result written the moment it is decided.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["ScheduledFeed"]


class ScheduledFeed:
    """``simulate()``: the runtime's second way to run, beside ``watch()``."""

    async def simulate(self, events: Iterable[tuple[int, bytes]], show_event=None) -> None:
        """Feed scheduled ``(time, raw)`` events at their times, firing timeouts between them.

        The watermark follows the schedule: at a deadline that comes before the next event,
        everything up to the deadline is settled, so each timeout prints when it is due.
        """
        self.started_ms = self.clock.now_ms()
        try:
            for time, raw in events:
                await self._fire_deadlines_until(time)
                await self.clock.sleep_until(time)
                if show_event is not None:
                    show_event(time, raw)
                self._emit(self.pipeline.feed(raw, self.clock.now_ms()))
            await self._fire_deadlines_until(float("inf"))
        finally:
            self.finished_ms = self.clock.now_ms()

    async def _fire_deadlines_until(self, limit: int | float) -> None:
        pipeline = self.pipeline
        while (deadline := pipeline.next_deadline()) is not None and deadline <= limit:
            await self.clock.sleep_until(deadline)
            results = pipeline.advance_frontier(deadline)
            self._emit(results)
            self._record_lateness(results)

"""Where the host's wall clock touches event time: ``--idle`` and ``--max-future``.

The rules never read a clock: the host hands every line over with the wall-clock moment
it was read (a reader thread's arrival stamp, or the host clock's now), and says when
every input has been read to its end (``Pipeline.catch_up``) and when lines came in
again (``Pipeline.behind``). From those alone:

- ``--idle``: while the inputs are caught up, the watermark also follows the wall clock,
  ``idle`` behind it: ``largest time - lateness + (now - when that time was known) -
  idle``. While anything may be unread (a restart or a Kafka takeover reading its
  backlog, a run that paused reading) time moves by the events only, so no line written
  meanwhile is late because of the wait; the catch-up then moves the watermark by the
  wall time since the newest event was known, the downtime included.
- ``--max-future``: an event more than ``max_future`` ahead of the wall clock is
  rejected (a client's bad clock); it never reaches the watermark.
"""

from __future__ import annotations

from .durations import format_duration
from .events import RejectedLine

__all__ = ["WallTime", "WallClockSteps", "FutureEvent"]


class FutureEvent(RejectedLine):
    """An event stamped more than ``--max-future`` ahead of the wall clock: counted as
    rejected and reported, never matched, and it never moves the watermark."""


class WallTime:
    """The wall-clock side of one pipeline's event time.

    ``arrival`` is the wall-clock moment the largest event time so far counts as known
    (saved with the state as ``max_arrival``). ``caught_up``: the host said every input
    was read to its end, and no line came since. ``live``: that happened at least once
    since the run began (or the state was restored); before, the run reads a backlog.
    """

    def __init__(self, idle: int | None = None, max_future: int | None = None) -> None:
        if idle is not None and idle <= 0:
            raise ValueError("idle must be positive")
        if max_future is not None and max_future < 0:
            raise ValueError("max_future must not be negative")
        self.idle = idle
        self.max_future = max_future
        self.arrival: int | None = None
        self.caught_up = False
        self.live = False

    def newest(self, previous: int | float, time: int, now: int) -> None:
        """``time`` (read at ``now``) is the new largest event time; ``previous`` was.

        Live, the line came just now: it is known from ``now`` (Bytewax's rule). In a
        backlog it may have been written long before it was read, so reading it tells only
        that it was known by ``now``; until then the line is taken to have come as the
        events before it did, as far ahead of ``arrival`` as its time is of ``previous``.
        So the wall time of a downtime still counts once the backlog is read (a quiet
        night times orders out at the next run), and never more than the events allow.
        """
        if self.live or self.arrival is None:
            self.arrival = now
        else:
            self.arrival = min(now, self.arrival + (time - previous))

    def frontier(self, max_time: int | float, lateness: int, now: int) -> int | None:
        """The frontier (watermark + 1) the wall clock gives at ``now``, or None (no
        ``idle``, nothing known yet, or the inputs not caught up)."""
        if self.idle is None or self.arrival is None or not self.caught_up:
            return None
        # A clock stepped back (or a restart on another host) must not pull time back.
        return max_time - lateness + max(0, now - self.arrival) - self.idle

    def timer(self, max_time: int | float, lateness: int, due: int | None) -> int | None:
        """The wall-clock moment :meth:`frontier` reaches ``due`` (None: never, by itself)."""
        if due is None or self.idle is None or self.arrival is None or not self.caught_up:
            return None
        # frontier(now) >= due  <=>  now >= this moment
        return self.arrival + max(0, due - (max_time - lateness) + self.idle)

    def check(self, time: int, now: int) -> None:
        """Raise :class:`FutureEvent` if ``time`` is more than ``max_future`` after ``now``."""
        if self.max_future is not None and time > now + self.max_future:
            raise FutureEvent(
                f"from the future: time {time} is {format_duration(time - now)} ahead of the wall clock "
                f"{now} (more than --max-future {format_duration(self.max_future)})"
            )

    def first_future(self, times: list[int], now: int) -> int | None:
        """The index of the first of ``times`` from the future at ``now``, or None."""
        if self.max_future is None:
            return None
        limit = now + self.max_future
        if max(times) <= limit:  # the usual case: one C-level pass
            return None
        return next(index for index, time in enumerate(times) if time > limit)


class WallClockSteps:
    """The steps a host takes to tell a pipeline about its inputs and the wall clock: a
    mixin of :class:`~.pipeline.Pipeline` (which holds ``wall``, a :class:`WallTime`, and
    ``advance``)."""

    def catch_up(self, now: int, limit: int | None = None) -> list:
        """Every input has been read to its end at wall-clock ``now`` (a read found nothing
        new): the wall clock moves event time too (``idle``) until :meth:`behind`; returns
        what that decides at once. Before the first call of a run (or after :meth:`restore`)
        a backlog is read in event time alone (see :mod:`.wallclock`)."""
        self.wall.caught_up = self.wall.live = True
        return self.advance(now, limit)

    def behind(self) -> None:
        """Lines came in, so more may be unread: the wall clock waits for the next
        :meth:`catch_up` (a run that paused reading does not make what came meanwhile late)."""
        self.wall.caught_up = False

    @property
    def caught_up(self) -> bool:
        """Whether the host said the inputs were read to their end (see :meth:`catch_up`)."""
        return self.wall.caught_up

    @property
    def idle(self) -> int | None:
        """``--idle`` in milliseconds (None: the wall clock never moves event time)."""
        return self.wall.idle

"""The operator: parsed lines in, matcher results out, with time handled as Flink's CepOperator does.

Still pure and synchronous (no I/O, no clock): the runtime hands it each line with the
moment it was read. It decides the time mode, keeps the event-time watermark, holds
out-of-order events in a reorder buffer until the watermark lets them through in
(time, input order), and turns late and malformed lines into counted rejections.

Event time bookkeeping uses the *frontier* ``F = watermark + 1``: every event and
timeout before ``F`` is settled. An event with time ``< F`` is late. Buffered events with
time ``<= F`` can be applied, because any event still to come has time ``>= F`` and comes
later in input order; for the same reason every timeout with deadline ``<= F`` is final.
So after every event the reorder buffer holds exactly the accepted events after ``F``.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterator
from operator import itemgetter

from .events import (
    TIME_IGNORED,
    TIME_OPTIONAL,
    TIME_REQUIRED,
    EventParser,
    RejectedLine,
    is_create,
)
from .durations import format_instant
from .matcher import Matcher, Result
from .reorder import ReorderBuffer, count_on_time
from .wallclock import FutureEvent, WallClockSteps, WallTime

__all__ = ["TimeMode", "Pipeline", "LateEvent", "FutureEvent"]

_TIME = itemgetter(2)  # of an event (key, kind, time, raw)
_TIME_SEQUENCE = itemgetter(0, 1)  # of a saved buffer entry (time, sequence, key, kind, raw)


class TimeMode(str, Enum):
    """Where an event's time comes from."""

    EVENT = "event"  #: the event's own time field, with watermarks
    PROCESSING = "processing"  #: the moment the line was read


class LateEvent(RejectedLine):
    """An event at or before the watermark: counted and reported, never matched."""


class Pipeline(WallClockSteps):
    """Parses lines, keeps event time in order and feeds the matcher.

    ``time_mode`` None means: decided by the first accepted line (event time if it has
    the time field). ``lateness`` is the bounded out-of-orderness in milliseconds;
    ``idle`` and ``max_future`` bring in the wall clock (see :mod:`.wallclock`).
    ``feed`` raises :class:`RejectedLine` (or :class:`LateEvent`, :class:`FutureEvent`)
    for a line that is not used, after counting it; the caller reports it and goes on.
    """

    def __init__(
        self,
        parser: EventParser,
        matcher: Matcher,
        *,
        time_mode: TimeMode | None = None,
        lateness: int = 0,
        idle: int | None = None,
        max_future: int | None = None,
    ) -> None:
        if lateness < 0:
            raise ValueError("lateness must not be negative")
        self.parser = parser
        self.matcher = matcher
        self.time_mode = time_mode
        self.lateness = lateness
        self.events = 0
        self.late = 0
        self.rejected = 0
        self.frontier: int | float = float("-inf")
        self._max_time: int | float = float("-inf")
        self._buffer = ReorderBuffer()
        # --idle and --max-future: the wall clock's part in event time (see .wallclock).
        self.wall = WallTime(idle, max_future)
        self._parsed: tuple | None = None  # a batch stopped at a late event (_parse_event_time)
        # For hints: the most a late event was behind (the --lateness keeping all), the line deciding the mode.
        self.late_by, self.first_event = 0, None

    # -- feeding -------------------------------------------------------------------

    def feed(self, raw: bytes, now: int) -> list[Result]:
        """Apply one line read at wall-clock ``now`` (epoch ms); return decided results."""
        mode = self.time_mode
        policy = (
            TIME_REQUIRED
            if mode is TimeMode.EVENT
            else TIME_IGNORED if mode is TimeMode.PROCESSING else TIME_OPTIONAL
        )
        try:
            key, kind, time, raw = self.parser.parse(raw, policy)
        except RejectedLine:
            self.rejected += 1
            raise
        if mode is None:
            mode = self.time_mode = TimeMode.PROCESSING if time is None else TimeMode.EVENT
            self.first_event = raw
        if mode is TimeMode.EVENT:
            try:
                self.wall.check(time, now)
            except FutureEvent:
                self.rejected += 1
                raise
        self.events += 1
        if mode is TimeMode.PROCESSING:
            return self.matcher.on_event(key, kind, now, raw)
        return self._feed_event_time(key, kind, time, raw, now)

    def refuse(self) -> None:
        """Count a line the host rejected unread (longer than it reads), as :meth:`feed`
        counts the lines it rejects."""
        self.rejected += 1

    def feed_lines(self, lines: list[bytes], now: int, start: int = 0) -> tuple[list[Result], int]:
        """Feed ``lines[start:]``, read at ``now``, as :meth:`feed` would one by one, up to
        the first line that :meth:`feed` must see itself (one to reject, a late event, the
        first line of a run, which decides the time mode); return the results and that
        line's index (``len(lines)`` when every line was fed).

        The fast path of a host: a chunk of lines costs one parser loop and one matcher
        batch instead of a call per line. A host feeds the stopped-at line with
        :meth:`feed` (reporting what it raises) and calls again from the next one.
        """
        mode = self.time_mode
        if mode is None:
            return [], start
        if mode is TimeMode.PROCESSING:
            events, stop = self.parser.parse_lines(lines, start, TIME_IGNORED, now)
            self.events += len(events)
            return self.matcher.on_events(events), stop
        events, stop = self._parse_event_time(lines, start)
        if not events:
            return [], stop
        times = list(map(_TIME, events))  # (one list for the checks below and _reorder's)
        future = self.wall.first_future(times, now)
        if future is not None:  # feed rejects it; the events after it are kept for the next call
            self._parsed = (lines, start, events, stop)
            if not future:
                return [], start
            events, stop, times = events[:future], start + future, times[:future]
        # Event time as in _feed_event_time and advance_frontier, for the whole batch:
        # events due in (time, input order) are collected, then applied in one matcher
        # batch. Leaving the matcher's advance to each frontier for the end of the batch
        # changes no result or its order: every later event is at or after that frontier,
        # and the matcher settles earlier deadlines before applying an event.
        if not self.lateness and not self._buffer:
            # Without lateness an event is late exactly when it is older than the one
            # before it (or than the frontier): a batch in time order is applied as it is.
            if times[0] >= self.frontier and times == sorted(times):
                self.events += len(events)
                if times[-1] > self._max_time:
                    self._new_max(times[-1], now)
                return self._apply(events, self._max_time), stop
        ready, used, frontier = self._reorder(events, now, times)
        self.events += used
        if used < len(events):  # stopped at a late event; kept only then, so as to hold nothing
            self._parsed = (lines, start, events, stop)
            stop = start + used
        return self._apply(ready, frontier), stop

    def feed_runs(self, lines: list[bytes], now: int) -> Iterator[tuple[list[Result], int]]:
        """Every line of ``lines`` (read at ``now``) through :meth:`feed_lines`: yields the
        results of each run of lines it takes and the index of the line it stopped at
        (``len(lines)`` after the last run). The host feeds that line itself with
        :meth:`feed`, reporting what it raises, before taking the next run: the one loop
        of every host's batch path."""
        index, count = 0, len(lines)
        while index < count:
            results, stop = self.feed_lines(lines, now, index)
            yield results, stop
            index = stop + 1

    def _parse_event_time(self, lines: list[bytes], start: int) -> tuple[list, int]:
        """``parse_lines`` in event time, each line of a batch once. After a late event the
        host feeds it alone and calls again from the next line: the lines after it were
        parsed when the batch stopped (each event is one line), and parsing them again at
        every late event made input with many late events cost a parse per line per late
        event (30k lines, 88% late: 4.9 s, now 0.8 s)."""
        parsed, self._parsed = self._parsed, None
        if parsed is not None and parsed[0] is lines and parsed[1] <= start <= parsed[3]:
            _, first, events, stop = parsed
            return events[start - first :], stop
        return self.parser.parse_lines(lines, start, TIME_REQUIRED)

    def _apply(self, ready: list, frontier: int | float) -> list[Result]:
        """Apply events due in order, then let time reach ``frontier``."""
        out = self.matcher.on_events(ready)
        if frontier > self.frontier:
            self.frontier = frontier
            out += self.matcher.advance_to(frontier)
        return out

    def _reorder(self, events: list, now: int, times: list[int]) -> tuple[list, int, int | float]:
        """What :meth:`_feed_event_time` does to each event, for a batch in a few C-level
        passes: (events due in order, how many of ``events`` were used, up to the first
        late one, the frontier they reach). ``times``: the events' times."""
        frontier, lateness = self.frontier, self.lateness
        used = len(times)
        top = max(times)
        # After each event the frontier is max(frontier, largest time - lateness), so no
        # event meets a frontier above the one the batch's largest time brings: if no time
        # is before that one, none is late.
        if min(times) < max(frontier, max(self._max_time, top) - lateness):
            used = count_on_time(times, frontier, self._max_time, lateness)
            if used < len(times):
                if not used:
                    return [], 0, frontier  # the first event is late: feed counts and reports it
                events = events[:used]
                top = max(times[:used])
        if top > self._max_time:
            self._new_max(top, now)
        frontier = max(frontier, self._max_time - lateness)
        # Holding the whole batch, then releasing what is at or before the final frontier,
        # gives what holding and releasing event by event gives, in the same order. The
        # frontier only rises, and each event arrives at or after the frontier it meets,
        # so an event released later than another one is never before it in (time, input
        # order): event by event, too, the release is in sorted order. And what has been
        # released by the end of the batch is what is at or before the final frontier.
        self._buffer.add(events)
        return self._buffer.release(frontier), used, frontier

    def _feed_event_time(self, key: str, kind: int, time: int, raw: bytes, now: int) -> list[Result]:
        if time < self.frontier:
            self.late += 1
            self.late_by = max(self.late_by, self._max_time - time)
            raise LateEvent(f"late: time {format_instant(time)} is at or before the watermark "
                            f"{format_instant(self.frontier - 1)}")
        if time > self._max_time:
            self._new_max(time, now)
        frontier = max(self.frontier, self._max_time - self.lateness)
        if not self._buffer and time <= frontier:
            # In-order input (always so with lateness 0): no need for the reorder buffer.
            self.frontier = frontier
            out = self.matcher.on_event(key, kind, time, raw)
            if frontier > time:
                out += self.matcher.advance_to(frontier)
            return out
        self._buffer.push((key, kind, time, raw))
        return self.advance_frontier(frontier)

    def advance_frontier(self, frontier: int | float, limit: int | None = None) -> list[Result]:
        """Event time: everything before ``frontier`` is settled (watermark = frontier - 1).

        Used by the feed itself and by hosts that know more about time than the events
        do: the simulator, whose watermark follows its schedule. With ``limit``, at most
        that many timeouts come after the released events' results; call again with the
        same frontier while a full slice comes back.
        """
        # An equal frontier still releases an event that came exactly at it (the buffer
        # holds only events after the frontier).
        if frontier < self.frontier:
            return []
        self.frontier = frontier
        due = self._buffer.release(frontier)
        out = self.matcher.on_events(due) if due else []
        out += self.matcher.advance_to(frontier, limit)
        return out

    def advance(self, now: int, limit: int | None = None) -> list[Result]:
        """The wall clock reached ``now``: time out what is due.

        In processing time that is every deadline up to ``now``. In event time it matters
        only with ``idle`` (Bytewax's wall-clock watermark), and only once the host said
        the inputs are caught up (:meth:`catch_up`): the watermark is also the largest
        event time (minus ``lateness``) plus the wall time elapsed since that time was
        known, minus ``idle``. So a quiet stream still times orders out, ``idle`` after
        their deadline, and an event whose time is no more than ``idle`` behind the wall
        clock is never late. ``limit`` caps the timeouts of one call in processing time
        (call again while a full slice comes back), also in event time with ``idle``
        (a restart after a long stop may find every open order due at once).
        """
        if self.time_mode is TimeMode.PROCESSING:
            return self.matcher.advance_to(now, limit)
        frontier = self.wall.frontier(self._max_time, self.lateness, now)
        if frontier is None:
            return []
        return self.advance_frontier(frontier, limit)  # never backwards: advance_frontier ignores a lower one

    def _new_max(self, time: int, now: int) -> None:
        self.wall.newest(self._max_time, time, now)
        self._max_time = time

    def finish(self, limit: int | None = None) -> list[Result]:
        """End of input in event time: a final watermark of +infinity settles everything.

        Afterwards the watermark reads as it was before (what the events showed), so a
        checkpoint taken after a final run keeps a watermark a later run can go on from.
        With ``limit``, at most that many timeouts per call after the reorder buffer's
        results: call again while a full slice comes back, so a host settling a million
        open orders holds one slice of results at a time, not all of them.
        """
        if self.time_mode is TimeMode.PROCESSING:
            return []
        before = self.frontier
        out = self.advance_frontier(float("inf"), limit)
        self.frontier = before
        return out

    # -- inspecting ----------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """The earliest deadline of an open order (None when nothing is open)."""
        return self.matcher.next_deadline()

    def next_timer(self) -> int | None:
        """The wall-clock moment the host must call ``advance`` even without input, or None."""
        if self.time_mode is TimeMode.PROCESSING:
            return self.matcher.next_deadline()
        if self.wall.idle is None or not self.wall.caught_up:
            return None
        # Event time moving with the wall clock: when does it reach the next thing due?
        due = [time for time in (self._buffer.first_time(), self.matcher.next_deadline()) if time is not None]
        return self.wall.timer(self._max_time, self.lateness, min(due) if due else None)

    @property
    def pending(self) -> int:
        """Open orders, counting creates still held in the reorder buffer."""
        buffered = sum(1 for event in self._buffer if is_create(event[1]))
        return self.matcher.pending + buffered

    def stats(self) -> dict:
        """Counters of the whole run so far, as plain data."""
        counts = self.matcher.counts()
        counts["pending"] = self.pending
        stats = {
            "events": self.events,
            **counts,
            "late": self.late,
            "rejected": self.rejected,
            "time_mode": self.time_mode.value if self.time_mode else None,
        }
        if self.matcher.reminder_stages:
            stats["reminders_by_stage"] = {str(stage): count for stage, count in self.matcher.reminders_by_stage().items()}
        return stats

    # -- saving and restoring ------------------------------------------------------

    def snapshot(self, with_orders: bool = True) -> dict:
        """The whole state as plain data: matcher, watermark, reorder buffer, counters
        (``with_orders=False``: without the matcher's open orders)."""
        return {
            "time_mode": self.time_mode.value if self.time_mode else None,
            "frontier": _finite_or_none(self.frontier),
            "max_time": _finite_or_none(self._max_time),
            "sequence": len(self._buffer),  # the next one after the buffer's
            "events": self.events,
            "late": self.late,
            "rejected": self.rejected,
            # (time, sequence, key, kind, raw) in (time, input order), as state format 3 has it
            "buffer": [(time, sequence, key, kind, raw) for sequence, (key, kind, time, raw) in enumerate(self._buffer.events())],
            "max_arrival": self.wall.arrival,
            "matcher": self.matcher.snapshot(with_orders),
        }

    def restore(self, state: dict) -> None:
        """Continue from ``snapshot()``: the matcher and time are replaced by the saved ones."""
        if state["time_mode"] is not None and self.time_mode is None:
            self.time_mode = TimeMode(state["time_mode"])
        # The reminders (and windows) are this run's options: a restart may change the
        # reminders; what is saved of them only says what the saving run sent.
        matcher = self.matcher
        self.matcher = Matcher.restore({**state["matcher"], "windows": list(matcher.windows),
                                        "remind": list(matcher.remind), "remind_before": list(matcher.remind_before)})
        negative = float("-inf")
        self.frontier = negative if state["frontier"] is None else state["frontier"]
        self._max_time = negative if state["max_time"] is None else state["max_time"]
        self.events, self.late, self.rejected = state["events"], state["late"], state["rejected"]
        # In (time, sequence) order, which is input order at equal times.
        saved = sorted(state["buffer"], key=_TIME_SEQUENCE)
        self._buffer = ReorderBuffer((key, kind, time, raw) for time, _, key, kind, raw in saved)
        # When the largest event time was known: with --idle, restored orders time out on
        # a stream that stays quiet after the restart, once its backlog is read.
        self.wall.arrival = state.get("max_arrival")
        self.wall.caught_up = self.wall.live = False


def _finite_or_none(value: int | float) -> int | None:
    return None if value in (float("inf"), float("-inf")) else int(value)

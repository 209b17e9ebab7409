"""The matcher: the rules of SEMANTICS.md, pure and synchronous.

Events in, results out. No I/O, no asyncio, no clock: the host tells the matcher what
time it is by the times of the events it feeds (``on_event``) and by ``advance_to``.
The host must feed events in non-decreasing time order; in event time the pipeline's
reorder buffer guarantees that, in processing time the clock does.

Boundary rules, decided here once:

* A pay matches a create only if ``paid - created < within``; at exactly
  ``created + within`` the order has timed out (deadline is exclusive for pays).
* With ``paid_late`` (``--paid-late D``), a timed-out order is remembered until
  ``deadline + D`` (exclusive). A pay that finds no open order of its key, and would
  otherwise be an unmatched pay, closes the oldest remembered one of its key (every one
  in ``followed-by``) as ``paid_late``. So ``paid_late`` never changes another result:
  it only turns unmatched pays into results. Flink CEP cannot express this.
* ``advance_to(t)`` times out every open order with ``deadline <= t``, and
  ``on_event`` at time ``t`` does that first, so expired windows are settled before an
  event is applied and results come out in canonical order: by time (paid for a success,
  deadline for a timeout), timeouts first at equal times, then input order.

* Windows of their own (a create of kind ``-W`` has the window W; see
  :func:`~.events.create_kind`) and reminders (``remind``, ``remind_before``): the rules
  above hold per order with its own deadline; a reminder is due at ``created + D`` or
  ``deadline - D``, only strictly between the create and the deadline, equal ones once,
  and fires like a timeout (before events at its time) while its order is open. See
  :mod:`.reminders`; reminders never change another result.

State: the open orders of each key (oldest first) and one timeline of all open orders
in deadline order. With one window and time-ordered input, deadlines arrive in order, so
the timeline is a deque rather than a heap; orders resolved early stay in it and are
skipped when their deadline comes (lazy deletion), which keeps a pay O(1). With windows
of their own or reminders, timers go to a :class:`~.timeline.Timeline` of such deques
merged by a small heap instead (the first such create switches over).
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

from .events import CANCEL, CREATE, PAY
from .open_orders import OpenOrders
from .paid_late import PaidLateMemory
from .reminders import LaneRules
from .snapshot import COUNTER_NAMES, SavedState
from .orders import (  # noqa: F401  (the packing helpers are re-exported for the tests)
    _HEADER, _LONG, _LONG_RAW, _RAW, Cancelled, Mode, OpenOrder, PaidLate, Reminder, Result, Success, Timeout,
    _created_of, _created_raw_seq, _pack, _pack_long, _unpack, _unpack_long, result_id,
)

__all__ = [
    "Mode",
    "OpenOrder",
    "Success",
    "Timeout",
    "Cancelled",
    "PaidLate",
    "Reminder",
    "Result",
    "Matcher",
    "OutOfOrderError",
    "COUNTER_NAMES",
    "result_id",
]


# Results are built with tuple.__new__ on the hot paths: the same objects as calling the
# class, without the Python-level __new__ frame a NamedTuple adds (a third of the cost).
_new = tuple.__new__


class OutOfOrderError(ValueError):
    """The host fed an event older than the time the matcher has already reached."""


class Matcher(SavedState, PaidLateMemory, LaneRules, OpenOrders):
    """Keyed create/pay matching with a window of ``within`` milliseconds (the window of
    a plain create; a create of kind ``-W`` has the window W), and reminders ``remind``
    ms after the create and ``remind_before`` ms before the deadline.

    ``on_event`` and ``advance_to`` return the results they decide, in canonical order.
    Nothing is dropped silently: besides results, the counters (``counts()``) record
    unmatched pays and, in ``next`` mode, creates discarded the way Flink discards them.
    """

    def __init__(self, within: int, mode: Mode | str = Mode.EACH, paid_late: int | None = None,
                 windows: tuple[int, ...] = (), remind: tuple[int, ...] = (), remind_before: tuple[int, ...] = ()) -> None:
        if within <= 0 or any(window <= 0 for window in windows):
            raise ValueError("within must be a positive number of milliseconds")
        if paid_late is not None and paid_late <= 0:
            raise ValueError("paid_late must be a positive number of milliseconds")
        if any(duration <= 0 for duration in (*remind, *remind_before)):
            raise ValueError("reminders must be a positive number of milliseconds")
        self.within = within
        self.windows = tuple(sorted(set(windows) - {within}))
        self.remind, self.remind_before = tuple(sorted(set(remind))), tuple(sorted(set(remind_before)))
        # The timers when orders have windows of their own or reminders (see .reminders);
        # None while the one deque below does (the plain case, as fast as it ever was).
        self._lanes = None
        self._opened_log: list | None = None  # (key, order) created since take_changes, with lanes
        self.reminder_stages: dict[int, int] = {}  # reminders sent, by stage
        self.mode = Mode(mode)
        self.paid_late_ms = paid_late
        # --paid-late: timed-out orders still payable, per key (oldest first) and in one
        # deque in deadline order, which is the order they time out and are forgotten in.
        self._expired: dict[str, list[bytes]] = {}
        self._expired_line: deque[bytes] = deque()
        self._expired_keys: deque[str] = deque()  # the key of each, side by side
        self._forget_at: int | float = float("inf")  # when the oldest remembered is forgotten
        self.now: int | float = float("-inf")
        self._open: dict[str, bytes | list[bytes]] = {}  # packed orders, see _pack
        self._timeline: deque[bytes] = deque()
        # The key of each timeline entry, side by side: the very string object the open
        # orders are filed under, so a timeout finds its key without decoding the order
        # and the dictionary compares keys by identity (measured: ~7% of a replay).
        self._timeline_keys: deque[str] = deque()
        self._head_deadline: int | float = float("inf")  # deadline of timeline[0]
        self.pending = 0
        # For incremental checkpoints: every timeline entry has a position (appended so
        # far when it was added); entries before ``_popped`` are gone. ``_closed_early``
        # collects (key, order) of orders closed before their deadline, when a host asks
        # for changes.
        self._appended = 0
        self._popped = 0
        self._changes_mark = 0
        self._closed_early: list | None = None
        # Result ids: how many creates each key had at the millisecond ``_tick``. Input
        # comes in time order, so only the current millisecond's counts are ever needed.
        self._tick: int | float = float("-inf")
        self._tick_creates: dict[str, int] = {}
        for name in COUNTER_NAMES:
            setattr(self, name, 0)
        if self.windows or self.remind or self.remind_before:
            self._enable_lanes()

    # -- feeding -------------------------------------------------------------------

    def on_event(self, key: str, kind: int, time: int, raw: bytes) -> list[Result]:
        """Apply one event at ``time``; return the results it decides, timeouts first."""
        return self.on_events(((key, kind, time, raw),))

    def on_events(self, events: Iterable[tuple[str, int, int, bytes]]) -> list[Result]:
        """Apply ``(key, kind, time, raw)`` events in order; return the results they decide.

        The same as :meth:`on_event` for each in turn, results concatenated: this is the
        one implementation of the rules, written as one loop over a batch because a host
        feeds thousands of events at a time and per-call work would cost more than the
        rules themselves. Raises :class:`OutOfOrderError` at an event older than the time
        reached; the events before it stay applied.
        """
        out: list[Result] = []
        append = out.append
        mode = self.mode
        each, next_mode, followed_by = mode is Mode.EACH, mode is Mode.NEXT, mode is Mode.FOLLOWED_BY
        paid_late = self.paid_late_ms is not None
        within = self.within
        open_orders = self._open
        setdefault, pop = open_orders.setdefault, open_orders.pop
        timeline = self._timeline
        push, push_key = timeline.append, self._timeline_keys.append
        pack, unpack, size = _HEADER.pack, _HEADER.unpack_from, _RAW
        long_pack, long_unpack = _LONG.pack, _LONG.unpack_from
        tick_creates = self._tick_creates
        tick_get = tick_creates.get
        closed_early = self._closed_early
        tick = self._tick
        head_deadline = self._head_deadline
        now = self.now
        lanes = self._lanes
        lanes_first = lanes.first.get if lanes is not None else None
        if lanes is not None:
            size = _LONG_RAW
        # Counters are summed locally and added once: nothing reads them inside the batch.
        creates = pays = other = cancels = success = cancelled = unmatched_pays = 0
        unmatched_cancels = discarded = 0
        try:
            for key, kind, time, raw in events:
                if time < now:
                    raise OutOfOrderError(f"event at {time} after time {now}")
                now = time
                if head_deadline <= time:
                    # Settle expired windows first (rule 3).
                    out += self.advance_to(time)
                    head_deadline = self._head_deadline
                if paid_late and self._forget_at <= time:
                    self._forget_expired(time)
                if kind == PAY:  # first: the most common event
                    pays += 1
                    current = pop(key, None)  # one dict operation when the key had one order
                    if current is None:
                        if paid_late and key in self._expired:
                            out += self._pay_late(key, time, raw)
                        else:
                            unmatched_pays += 1
                        continue
                    if type(current) is list:
                        if followed_by:  # the pay closes every open order of the key
                            if closed_early is not None:
                                closed_early.extend([(key, order) for order in current])
                            for order in current:
                                if lanes is None:
                                    created, seq = unpack(order)
                                    deadline = created + within
                                else:
                                    created, seq, deadline, _ = long_unpack(order)
                                success += 1
                                append(_new(Success, (key, created, time, deadline, order[size:], raw, seq)))
                            continue
                        order = current.pop(0)  # each: the pay closes the key's oldest open order
                        open_orders[key] = current[0] if len(current) == 1 else current
                    else:  # the common case: the key's only open order
                        order = current
                    if closed_early is not None:
                        closed_early.append((key, order))
                    if lanes is None:
                        created, seq = unpack(order)
                        deadline = created + within
                    else:
                        created, seq, deadline, _ = long_unpack(order)
                    success += 1
                    append(_new(Success, (key, created, time, deadline, order[size:], raw, seq)))
                elif kind == CREATE or kind < 0:
                    creates += 1
                    if time != tick:
                        tick = time
                        tick_creates.clear()
                    seq = tick_get(key, 0)
                    tick_creates[key] = seq + 1
                    if lanes is None and kind == CREATE:
                        order = pack(time, seq) + raw
                    else:
                        if lanes is None:  # the first create with a window of its own
                            lanes = self._enable_lanes(creates - 1)
                            lanes_first, size = lanes.first.get, _LONG_RAW
                            # Renamed in the long header: the orders closed from here on
                            # go to the new list (the old one is no longer taken).
                            closed_early = self._closed_early
                        deadline = time + within if kind == CREATE else time - kind
                        order = long_pack(time, seq, deadline, self._appended + creates - 1) + raw
                    # One dict operation in the common case (the key had nothing open).
                    current = setdefault(key, order)
                    if current is not order:
                        if next_mode:
                            # Strict contiguity: a create after a create breaks the first one's match.
                            discarded += len(self._close_all(key))
                            open_orders[key] = order
                        elif type(current) is list:
                            current.append(order)
                        else:
                            open_orders[key] = [current, order]
                    if lanes is None:
                        if not timeline:
                            head_deadline = self._head_deadline = time + within
                        push(order)
                        push_key(key)
                    else:
                        # Its first timer at the end of its lane (a create comes after every
                        # order already there), else through the timeline.
                        first = lanes_first(deadline - time)
                        if first is not None and first[1] is not None and first[1][0]:
                            first[1][0].append(order)
                            first[1][1].append(key)
                        else:
                            lanes.add(key, order, time, deadline, self._appended + creates - 1)
                            head_deadline = self._head_deadline = lanes.heap[0][0]
                        if self._opened_log is not None:
                            self._opened_log.append((key, order))
                elif kind == CANCEL and each:
                    cancels += 1
                    if key in open_orders:
                        order = self._close_oldest(key)
                        if lanes is None:
                            created, seq = unpack(order)
                            deadline = created + within
                        else:
                            created, seq, deadline, _ = long_unpack(order)
                        cancelled += 1
                        append(_new(Cancelled, (key, created, time, deadline, order[size:], raw, seq)))
                    else:
                        unmatched_cancels += 1
                else:
                    other += 1
                    if next_mode and key in open_orders:
                        discarded += len(self._close_all(key))
        finally:
            self.now = now
            self._tick = tick
            # Each create opened an order and each success closed one (the other ways
            # of closing, discarding and cancelling, count pending themselves).
            self.pending += creates - success
            self._appended += creates
            self.creates += creates
            self.pays += pays
            self.other += other
            self.cancels += cancels
            self.success += success
            self.cancelled += cancelled
            self.unmatched_pays += unmatched_pays
            self.unmatched_cancels += unmatched_cancels
            self.discarded += discarded
        return out

    def advance_to(self, time: int | float, limit: int | None = None) -> list[Timeout]:
        """Declare that time has reached ``time``: time out every order with deadline <= time.

        With ``limit``, stop after that many timeouts (the rest stay due, and time stays
        where it was), so a host can write a large batch out in slices.
        """
        out: list[Timeout] = []
        if self._head_deadline > time:
            if time > self.now:
                self.now = time
            return out
        if self._lanes is not None:
            return self._advance_lanes(time, limit)
        # The hot loop of a burst of timeouts: helpers inlined, one header read per order.
        append = out.append
        timeline = self._timeline
        popleft, popleft_key = timeline.popleft, self._timeline_keys.popleft
        within = self.within
        open_orders = self._open
        pop = open_orders.pop
        unpack, size = _HEADER.unpack_from, _RAW
        remember = self.paid_late_ms is not None
        popped = 0
        closed = 0
        complete = True
        while timeline:
            order = timeline[0]
            created, seq = unpack(order)
            if created + within > time:
                break
            if limit is not None and closed >= limit:
                complete = False
                break
            popleft()
            key = popleft_key()
            popped += 1
            current = pop(key, None)  # one dict operation for the common case, put back if not
            # Lazy deletion: an order paid or discarded earlier is no longer first in line.
            if current is not order:
                if type(current) is list and current[0] is order:
                    del current[0]
                    open_orders[key] = current[0] if len(current) == 1 else current
                else:
                    if current is not None:
                        open_orders[key] = current
                    continue
            closed += 1
            append(_new(Timeout, (key, created, created + within, order[size:], False, seq)))
            if remember:
                self._remember_expired(key, order, created + within)
        self._popped += popped
        self.pending -= closed
        self.timeout += closed
        self._head_deadline = unpack(timeline[0])[0] + within if timeline else float("inf")
        if complete and time > self.now:
            self.now = time
        return out

    def drain(self) -> list[Timeout]:
        """End of input: every open order times out at its deadline; nothing stays pending."""
        return self.advance_to(float("inf"))

    # -- inspecting ----------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """The earliest deadline of an open order (or its earliest reminder, if sooner),
        or None when nothing is open: when time must next be advanced."""
        if self._lanes is not None:
            return self._next_lane_time()
        timeline = self._timeline
        while timeline:
            if self._is_oldest_open(self._timeline_keys[0], timeline[0]):
                return self._head_deadline
            self._pop_head()  # resolved earlier: drop it now rather than at its deadline
        return None

    def counts(self) -> dict[str, int]:
        """The counters and the number of pending (still open) orders."""
        counts = {name: getattr(self, name) for name in COUNTER_NAMES}
        counts["pending"] = self.pending
        return counts

    def reminders_by_stage(self) -> dict[int, int]:
        """Reminders sent so far, by stage (1, 2, ...)."""
        return dict(sorted(self.reminder_stages.items()))

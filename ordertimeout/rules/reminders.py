"""Deadlines that do not arrive in order: windows of their own and reminders.

A mixin of :class:`~.matcher.Matcher`, apart from its plain hot loop. Once orders have
windows of their own (``--within VALUE=D``, ``--deadline-field``) or reminders
(``--remind``, ``--remind-before``), their timers live in a :class:`~.timeline.Timeline`
and come due here, in time order:

* A timeout closes its order if it is still open (lazy deletion: an order paid,
  cancelled or discarded earlier is skipped), stamped with the order's own deadline.
  With windows of their own a key's orders no longer time out oldest first, so the one
  timing out may sit anywhere among its key's open orders.
* A reminder is emitted only while its order is open, and changes nothing: the order
  stays open, no counter but the reminders' own moves. Its stage is the rank of its due
  time among the order's (:func:`~.timeline.reminder_offsets`).

Timers at one time come out by the order's created time, then input order, all before
any event at that time (the matcher advances time before it applies an event).
"""

from __future__ import annotations

import heapq
from collections import deque

from .orders import _HEADER, _LONG, _LONG_RAW, _RAW, Reminder, Timeout, _pack_long

__all__ = ["LaneRules"]

_new = tuple.__new__
#: The bound of a run when no other heap entry is left.
_NONE = (float("inf"), 0, 0)


class LaneRules:
    """The timers half of the matcher when deadlines come out of order (the matcher keeps
    ``_lanes``, ``_open``, the counters and ``reminder_stages``)."""

    def _enable_lanes(self, batch_creates: int = 0) -> Timeline:
        """Move the timers from the one deque into lanes (once), every order re-packed with
        the long header (its deadline, and its position as its number). ``batch_creates``:
        creates of the matcher's current batch not yet counted in ``_appended``."""
        if self._lanes is not None:
            return self._lanes
        from .timeline import Timeline  # only for runs with windows of their own or reminders

        lanes = Timeline((self.within, *self.windows), self.remind, self.remind_before)
        within, unpack = self.within, _HEADER.unpack_from
        renamed: dict[int, bytes] = {}  # id of an order in the short header -> the long one

        def long(order: bytes, number: int) -> bytes:
            created, seq = unpack(order)
            renamed[id(order)] = new = _pack_long(created, order[_RAW:], seq, created + within, number)
            return new

        entries = [(key, long(order, self._popped + index))
                   for index, (key, order) in enumerate(zip(self._timeline_keys, self._timeline))]
        for key, current in list(self._open.items()):
            if type(current) is list:
                self._open[key] = [renamed[id(order)] for order in current]
            else:
                self._open[key] = renamed[id(current)]
        # Timed-out orders remembered for --paid-late, and orders closed since the last
        # take_changes, in the long header too (the one the matcher reads from now on).
        for key, remembered in self._expired.items():
            self._expired[key] = [renamed.get(id(order)) or long(order, -1) for order in remembered]
        # The line keeps orders already paid late (dropped from it lazily, as they reach
        # its head): renamed apart from the live ones, they stay dead.
        self._expired_line = deque(renamed.get(id(order)) or long(order, -1) for order in self._expired_line)
        if self._closed_early is not None:
            self._closed_early = [(key, renamed.get(id(order)) or long(order, -1)) for key, order in self._closed_early]
            # Change tracking goes on by the log: the orders not yet reported are in it.
            unreported = self._appended + batch_creates - self._changes_mark
            self._opened_log = entries[max(0, len(entries) - unreported):] if unreported else []
        self._lanes = lanes
        for key, order in entries:
            if self._is_open(key, order):
                created, _, deadline, number = _LONG.unpack_from(order)
                lanes.add(key, order, created, deadline, number, self.now)
        # Positions (the orders' numbers) stay; the head stays where the deque left it:
        # from here on timeouts are reported as closed orders.
        self._timeline.clear()
        self._timeline_keys.clear()
        self._head_deadline = lanes.next_time()
        return lanes

    def _next_lane_time(self) -> int | None:
        """The earliest timer of an open order, dropping those of orders closed earlier."""
        lanes = self._lanes
        while True:
            time = lanes.next_time()
            if time == float("inf"):
                self._head_deadline = time
                return None
            key, order = lanes.peek()
            if self._is_open(key, order):
                self._head_deadline = time
                return time
            lanes.pop()

    def _advance_lanes(self, time: int | float, limit: int | None) -> list:
        """``advance_to`` with lanes: every timer due at or before ``time``, in order."""
        out: list = []
        append = out.append
        lanes = self._lanes
        heap, step_of, schedule = lanes.heap, lanes.step, lanes.schedule
        heappop, heapreplace = heapq.heappop, heapq.heapreplace
        open_orders = self._open
        unpack = _LONG.unpack_from
        remember = self.paid_late_ms is not None
        tracking = self._closed_early
        counts = self.reminder_stages
        closed = reminded = 0
        complete = True
        run = None  # the lane whose timers are being taken in a run (its heap entry is heap[0])
        while True:
            if run is None:
                if not heap or heap[0][0] > time:
                    break
                if limit is not None and len(out) >= limit:
                    complete = False
                    break
                due, created, number, payload = heap[0]
                fields = None
                if type(payload) is tuple:  # a timer by itself
                    heappop(heap)
                    key, order, offset = payload
                    steps = None
                else:
                    # A run of this lane: its timers ahead of every other heap entry's,
                    # with one heap step at its end.
                    run = payload
                    orders, keys, offset, steps = run
                    # the next entry after this lane's: the run stops before it
                    bound = (heap[1] if len(heap) == 2 or heap[1] < heap[2] else heap[2]) if len(heap) > 1 else _NONE
                    bound_time = bound[0]
                    key, order = keys.popleft(), orders.popleft()
            else:
                if not orders:
                    heappop(heap)
                    run = None
                    continue
                fields = unpack(orders[0])  # (read once: its due here, the rest below)
                created, _, _, number = fields
                due = created + offset
                if (due > time or due > bound_time or (due == bound_time and (created, number) > bound[1:3])
                        or (limit is not None and len(out) >= limit)):
                    heapreplace(heap, (due, created, number, run))
                    run = None
                    continue
                key, order = keys.popleft(), orders.popleft()
            current = open_orders.get(key)
            index = -1
            if current is not order:
                if type(current) is not list:
                    continue  # closed earlier (lazy deletion)
                for index, candidate in enumerate(current):
                    if candidate is order:
                        break
                else:
                    continue
            created, seq, deadline, number = fields if fields is not None else unpack(order)
            window = deadline - created
            step = steps.get(window) if steps is not None else None
            if step is None:
                step = step_of(window, offset)
            stage = step[0]
            if stage:
                counts[stage] = counts.get(stage, 0) + 1
                reminded += 1
                append(_new(Reminder, (key, created, due, deadline, order[_LONG_RAW:], stage, seq)))
                # The order's next timer: at its lane's end when that keeps the lane in
                # order (the common case, inline), else by the timeline; a new heap entry
                # may come before the run's bound.
                lane = step[2]
                if lane is not None and lane[0]:
                    tail = unpack(lane[0][-1])
                    if tail[0] < created or (tail[0] == created and tail[3] < number):
                        lane[0].append(order)
                        lane[1].append(key)
                        continue
                if schedule(key, order, created, number, step[1], lane) and run is not None:
                    bound = heap[1] if len(heap) == 2 or heap[1] < heap[2] else heap[2]
                    bound_time = bound[0]
                continue
            if index < 0:
                del open_orders[key]
            else:
                del current[index]
                if len(current) == 1:
                    open_orders[key] = current[0]
            closed += 1
            append(_new(Timeout, (key, created, deadline, order[_LONG_RAW:], False, seq)))
            if remember:
                self._remember_expired(key, order, deadline)
            if tracking is not None:
                tracking.append((key, order))
        self.pending -= closed
        self.timeout += closed
        self.reminder += reminded
        self._head_deadline = heap[0][0] if heap else float("inf")
        if complete and time > self.now:
            self.now = time
        return out

"""The timers of open orders when deadlines do not arrive in order: timeouts of orders
with windows of their own, and reminders before them.

With one window and no reminders the matcher keeps one deque of orders in created order,
which is deadline order. Here every timer is ``created + offset`` for an offset fixed by
the order's window: its reminders at the offsets :func:`reminder_offsets` gives, then its
timeout at ``offset = window``. An open order has one timer waiting at a time, its next
one: when a reminder fires, the order's next timer is scheduled (so a paid order leaves
one stale timer behind, not all of them, and an open order takes one slot).

Timers of one offset mostly come due in created order, so each offset the options name
(every window, every reminder offset of every window) has a *lane*, a deque in created
order, and a small heap merges the lanes by their heads. A timer that would break its
lane's order (a next timer scheduled late), or whose offset has no lane (an order with a
``--deadline-field`` deadline of its own), goes into the same heap by itself.

Heap entries are ``(time, created, number, lane or (key, order, offset))``, the number
being the order's place among all creates: timers due at the same time come out by their
order's created time, then input order, and no two entries ever tie (an order has one
timer waiting). Like the matcher's deque, lanes use lazy deletion: the timer of an order
closed early stays where it is and is skipped when it comes due.

Pure data, no rules: the matcher (:mod:`.reminders`) decides what a timer due means.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Iterable

from .orders import _LONG

__all__ = ["Timeline", "reminder_offsets"]

#: Cached steps of irregular windows (``--deadline-field``) are dropped past this many.
_CACHE_LIMIT = 4096


def reminder_offsets(window: int, remind: Iterable[int], remind_before: Iterable[int]) -> tuple[int, ...]:
    """The reminder times of an order with ``window``, as offsets from its create, in order:
    ``D`` for each ``remind`` D and ``window - D`` for each ``remind_before`` D, only those
    strictly between the create and the deadline, equal ones once. A reminder's stage is
    its rank here (1, 2, ...)."""
    offsets = {offset for offset in remind if 0 < offset < window}
    offsets.update(window - before for before in remind_before if 0 < window - before < window)
    return tuple(sorted(offsets))


class Timeline:
    """Timeouts and reminders of open orders, in time order (see the module's words).

    ``windows`` are the windows the options name (each gets lanes); ``remind`` and
    ``remind_before`` the reminder durations (ms).

    A lane is ``[orders, keys, offset, steps]``: the orders (packed) and their keys in
    created order, the offset, and ``steps``, by window, what a timer at this offset is
    for an order of that window: ``(stage, next offset, next lane)``, stage 0 for the
    timeout (and no next), the next lane None where the next offset has none.
    """

    def __init__(self, windows: Iterable[int], remind: Iterable[int] = (), remind_before: Iterable[int] = ()) -> None:
        self.remind = tuple(sorted(set(remind)))
        self.remind_before = tuple(sorted(set(remind_before)))
        self.lanes: dict[int, list] = {}  # offset -> lane
        self.heap: list[tuple] = []
        # window -> its first (offset, lane), and (window, offset) -> each timer's step
        self.first: dict[int, tuple] = {}
        self._steps: dict[tuple[int, int], tuple] = {}
        self.windows = tuple(sorted(set(windows)))
        for window in self.windows:
            for offset in (*self.dues(window), window):
                if offset not in self.lanes:
                    self.lanes[offset] = [deque(), deque(), offset, {}]
        for window in self.windows:
            self._learn(window)
        self._fixed = len(self.first)

    def dues(self, window: int) -> tuple[int, ...]:
        """The reminder offsets of an order with ``window`` (see :func:`reminder_offsets`)."""
        return reminder_offsets(window, self.remind, self.remind_before)

    def _learn(self, window: int) -> tuple:
        """Work out the timers of ``window``: its first one, and each one's step."""
        if len(self.first) > _CACHE_LIMIT + getattr(self, "_fixed", 0):
            self.first = dict(itertools.islice(self.first.items(), self._fixed))
            self._steps.clear()
            for lane in self.lanes.values():
                lane[3] = {w: step for w, step in lane[3].items() if w in self.first}
        offsets = (*self.dues(window), window)
        for stage, offset in enumerate(offsets, 1):
            following = offsets[stage] if stage < len(offsets) else None
            step = (0 if offset == window else stage, following,
                    None if following is None else self.lanes.get(following))
            lane = self.lanes.get(offset)
            if lane is not None:
                lane[3][window] = step
            self._steps[window, offset] = step
        first = self.first[window] = (offsets[0], self.lanes.get(offsets[0]))
        return first

    def step(self, window: int, offset: int) -> tuple:
        """``(stage, next offset, next lane)`` of the timer at ``offset`` of an order with
        ``window`` (stage 0: its timeout)."""
        step = self._steps.get((window, offset))
        if step is None:
            self._learn(window)
            step = self._steps[window, offset]
        return step

    def stage(self, window: int, offset: int) -> int:
        """The stage (rank, from 1) of the reminder at ``offset`` of an order with ``window``,
        0 for its timeout."""
        return self.step(window, offset)[0]

    def add(self, key: str, order: bytes, created: int, deadline: int, number: int,
            after: int | float | None = None) -> None:
        """Schedule the first timer of the open order ``order`` of ``key`` (the ``number``-th
        create), or with ``after``, its first one due after that (a restored order's
        earlier reminders were sent before the restart)."""
        window = deadline - created
        offset, lane = self.first.get(window) or self._learn(window)
        if after is not None:
            while created + offset <= after and offset != window:
                _, offset, lane = self.step(window, offset)
        self.schedule(key, order, created, number, offset, lane)

    def schedule(self, key: str, order: bytes, created: int, number: int, offset: int, lane: list | None) -> bool:
        """Put the timer at ``created + offset`` of ``order`` in ``lane`` (at its end), or in
        the heap by itself when the lane would lose its order or there is none. Returns
        whether the heap got a new entry."""
        if lane is not None:
            orders = lane[0]
            if not orders:
                orders.append(order)
                lane[1].append(key)
                heapq.heappush(self.heap, (created + offset, created, number, lane))
                return True
            tail = _LONG.unpack_from(orders[-1])
            if tail[0] < created or (tail[0] == created and tail[3] < number):
                orders.append(order)
                lane[1].append(key)
                return False
        heapq.heappush(self.heap, (created + offset, created, number, (key, order, offset)))
        return True

    def next_time(self) -> int | float:
        """When the earliest timer is due (+infinity when none is left)."""
        heap = self.heap
        return heap[0][0] if heap else float("inf")

    def peek(self) -> tuple[str, bytes]:
        """``(key, order)`` of the earliest timer (the heap must not be empty)."""
        payload = self.heap[0][3]
        if type(payload) is tuple:
            return payload[0], payload[1]
        return payload[1][0], payload[0][0]

    def pop(self) -> tuple[int, str, bytes, int]:
        """Take the earliest timer: ``(time, key, order, offset)`` (the heap must not be empty)."""
        heap = self.heap
        time, _, _, payload = heap[0]
        if type(payload) is tuple:
            heapq.heappop(heap)
            key, order, offset = payload
            return time, key, order, offset
        orders, keys, offset, _ = payload
        order = orders.popleft()
        key = keys.popleft()
        if orders:
            created, _, _, number = _LONG.unpack_from(orders[0])
            heapq.heapreplace(heap, (created + offset, created, number, payload))
        else:
            heapq.heappop(heap)
        return time, key, order, offset

    def __len__(self) -> int:
        return sum(len(lane[0]) for lane in self.lanes.values()) + sum(
            1 for entry in self.heap if type(entry[3]) is tuple
        )

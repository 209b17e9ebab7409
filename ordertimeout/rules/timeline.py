"""The timers of open orders when deadlines do not arrive in order: timeouts of orders
with windows of their own, and reminders before them.

With one window and no reminders the matcher keeps one deque of orders in created order,
which is deadline order. Here every timer is ``created + offset`` for an offset fixed by
the order's window: its timeout at ``offset = window``, its reminders at the offsets
:meth:`Timeline.dues` gives. Timers of one offset come due in created order, so each
offset the options name (every window, every reminder offset of every window) has a
*lane*, a deque in created order, and a small heap merges the lanes by their heads. A
timer whose offset has no lane (an order with a ``--deadline-field`` deadline of its
own) goes into the same heap by itself.

Order among timers due at the same time: by the order's created time, then by input
order. Two lanes never hold timers with the same time and created time (their offsets
differ), and the orders of one lane are in input order; timers outside lanes carry a
counter of input order. Like the matcher's deque, lanes use lazy deletion: a timer of an
order closed early stays where it is and is skipped when it comes due.

Pure data, no rules: the matcher decides what a timer that comes due means.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Iterable

from .orders import _HEADER

__all__ = ["Timeline", "reminder_offsets", "IRREGULAR"]

#: Cached reminder plans of irregular windows (``--deadline-field``) are dropped past this.
_PLAN_CACHE_LIMIT = 4096
#: Lanes sort before timers outside lanes, whose tie-breaker (heap entries' third item) starts here.
IRREGULAR = 1 << 40


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
    """

    def __init__(self, windows: Iterable[int], remind: Iterable[int] = (), remind_before: Iterable[int] = ()) -> None:
        self.remind = tuple(sorted(set(remind)))
        self.remind_before = tuple(sorted(set(remind_before)))
        self._lanes: dict[int, list] = {}  # offset -> [orders, keys, offset, lane number, stages]
        self.heap: list[tuple] = []  # (time, created, lane number or IRREGULAR + n, lane or (key, order, offset))
        self._plans: dict[int, tuple] = {}  # window -> ((offset, lane or None), ...), the timeout last
        #: (window, offset) -> the stage of that reminder (see :meth:`stage`), filled as met.
        self.stages: dict[tuple[int, int], int] = {}
        self._fixed_plans = 0
        self._counter = itertools.count(IRREGULAR)
        self.windows = tuple(sorted(set(windows)))
        for window in self.windows:
            for offset in (*self.dues(window), window):
                if offset not in self._lanes:
                    # orders, their keys, the offset, the lane's number, and by window what a
                    # timer here is: 0 the timeout, else the reminder's stage (filled as met)
                    self._lanes[offset] = [deque(), deque(), offset, len(self._lanes), {}]
        for window in self.windows:
            self._plan(window)
        self._fixed_plans = len(self._plans)

    def dues(self, window: int) -> tuple[int, ...]:
        """The reminder offsets of an order with ``window`` (see :func:`reminder_offsets`)."""
        return reminder_offsets(window, self.remind, self.remind_before)

    def stage(self, window: int, offset: int) -> int:
        """The stage (rank, from 1) of the reminder at ``offset`` of an order with ``window``,
        0 for its timeout (``offset == window``)."""
        if offset == window:
            return 0
        stage = self.stages.get((window, offset))
        if stage is None:
            if len(self.stages) > _PLAN_CACHE_LIMIT * 4:
                self.stages.clear()
            stage = self.stages[window, offset] = self.dues(window).index(offset) + 1
        return stage

    def _plan(self, window: int) -> tuple:
        plan = self._plans.get(window)
        if plan is None:
            if len(self._plans) > _PLAN_CACHE_LIMIT + self._fixed_plans:
                self._plans = {w: p for w, p in itertools.islice(self._plans.items(), self._fixed_plans)}
            plan = self._plans[window] = tuple(
                (offset, self._lanes.get(offset)) for offset in (*self.dues(window), window)
            )
        return plan

    def add(self, key: str, order: bytes, created: int, deadline: int, after: int | float | None = None) -> None:
        """Schedule the timers of the open order ``order`` of ``key`` (its reminders and its
        timeout), with ``after`` only those due after it (a restored order's past reminders
        were sent before the restart). Orders must be added in created order."""
        heap = self.heap
        plan = self._plans.get(deadline - created) or self._plan(deadline - created)
        for offset, lane in plan:
            if after is not None and created + offset <= after:
                continue
            if lane is None:
                heapq.heappush(heap, (created + offset, created, next(self._counter), (key, order, offset)))
                continue
            orders = lane[0]
            if not orders:
                heapq.heappush(heap, (created + offset, created, lane[3], lane))
            orders.append(order)
            lane[1].append(key)

    def next_time(self) -> int | float:
        """When the earliest timer is due (+infinity when none is left)."""
        heap = self.heap
        return heap[0][0] if heap else float("inf")

    def peek(self) -> tuple[str, bytes]:
        """``(key, order)`` of the earliest timer (the heap must not be empty)."""
        _, _, number, lane = self.heap[0]
        if number >= IRREGULAR:
            return lane[0], lane[1]
        return lane[1][0], lane[0][0]

    def pop(self) -> tuple[int, str, bytes, int]:
        """Take the earliest timer: ``(time, key, order, offset)`` (the heap must not be empty)."""
        heap = self.heap
        time, _, number, lane = heap[0]
        if number >= IRREGULAR:
            heapq.heappop(heap)
            key, order, offset = lane
            return time, key, order, offset
        orders, keys, offset, _, _ = lane
        order = orders.popleft()
        key = keys.popleft()
        if orders:
            created = _HEADER.unpack_from(orders[0])[0]
            heapq.heapreplace(heap, (created + offset, created, number, lane))
        else:
            heapq.heappop(heap)
        return time, key, order, offset

    def entries(self) -> Iterable[tuple[str, bytes]]:
        """Every ``(key, order)`` with a timer still waiting (an order may come several times)."""
        for orders, keys, *_ in self._lanes.values():
            yield from zip(keys, orders)
        for _, _, number, lane in self.heap:
            if number >= IRREGULAR:
                yield lane[0], lane[1]

    def __len__(self) -> int:
        return sum(len(lane[0]) for lane in self._lanes.values()) + sum(
            1 for entry in self.heap if entry[2] >= IRREGULAR
        )

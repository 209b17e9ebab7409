"""The reorder buffer: event-time events waiting for the watermark, let out in order.

In: accepted events ``(key, kind, time, raw)`` in input order, one at a time
(:meth:`ReorderBuffer.push`) or a batch at a time (:meth:`ReorderBuffer.add`). Out: on
:meth:`ReorderBuffer.release`, every held event at or before a given time, in (time,
input order). The rules (what is late, how far the watermark goes) are the pipeline's;
this module only keeps the order.

Events come one at a time from a host that feeds records singly (the kafka worker) and a
batch at a time from the local runtime. Single events go into a heap of ``(time,
sequence, event)`` (O(log n) a push). A batch is sorted once, by time (a stable sort
keeps input order at equal times), and kept as a sorted *run*; a release takes each
run's due prefix with one bisect and one slice. So a batch costs its own sort, not a
pass over everything held (thousands of events with ``--lateness 500ms``), and no
Python-level step per event. Small batches go into the heap, so runs stay few: each
holds at least a sixteenth of what was held when it came, and all of it leaves within
the lateness.

Input order is kept without numbering run events: runs are in the order they came, and
every heap entry came after every run event (the heap becomes a run of its own before a
batch is added as a run).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from itertools import chain
from operator import itemgetter
from typing import Iterable, Iterator

__all__ = ["ReorderBuffer", "count_on_time"]

_TIME = itemgetter(2)  # of an event (key, kind, time, raw)
_ENTRY_EVENT = itemgetter(2)  # of a heap entry (time, sequence, event)
#: A batch is kept as a run when it holds at least this share of what is buffered.
RUN_SHARE = 1 / 16


class ReorderBuffer:
    """Events held until :meth:`release` hands out those at or before a time, in (time,
    input order)."""

    def __init__(self, events: Iterable[tuple] = ()) -> None:
        """Start holding ``events``, given in input order."""
        self._heap = [(event[2], sequence, event) for sequence, event in enumerate(events)]
        heapq.heapify(self._heap)
        self._sequence = len(self._heap)
        self._runs: list[list[tuple]] = []  # each sorted by time, never empty, oldest first

    def __len__(self) -> int:
        return len(self._heap) + sum(map(len, self._runs))

    def push(self, event: tuple) -> None:
        """Hold one event, the newest."""
        heapq.heappush(self._heap, (event[2], self._sequence, event))
        self._sequence += 1

    def add(self, events: list[tuple]) -> None:
        """Hold a batch of events, given in input order, the newest."""
        heap = self._heap
        if len(events) < len(self) * RUN_SHARE:
            for sequence, event in enumerate(events, self._sequence):
                heapq.heappush(heap, (event[2], sequence, event))
            self._sequence += len(events)
            return
        if heap:  # older than the batch: a run before it
            self._runs.append(list(map(_ENTRY_EVENT, sorted(heap))))
            heap.clear()
        self._runs.append(sorted(events, key=_TIME))

    def release(self, time: int | float) -> list[tuple]:
        """Take out every event at or before ``time``, in (time, input order)."""
        due: list[tuple] = []
        pieces = 0
        runs = self._runs
        for run in runs:
            if run[0][2] <= time:
                pieces += 1
                cut = bisect_right(run, time, key=_TIME)
                due += run[:cut]
                del run[:cut]
        if pieces and not all(runs):
            self._runs = [run for run in runs if run]
        heap = self._heap
        if heap and heap[0][0] <= time:
            pieces += 1
            while heap and heap[0][0] <= time:
                due.append(heapq.heappop(heap)[2])
        if pieces > 1:
            # Sorted pieces, oldest first: timsort merges them, and being stable it keeps
            # input order at equal times.
            due.sort(key=_TIME)
        return due

    def first_time(self) -> int | None:
        """The earliest time held, or None when empty."""
        firsts = [run[0][2] for run in self._runs]
        if self._heap:
            firsts.append(self._heap[0][0])
        return min(firsts) if firsts else None

    def __iter__(self) -> Iterator[tuple]:
        """The events held, in no particular order."""
        return chain(*self._runs, map(_ENTRY_EVENT, self._heap))

    def events(self) -> list[tuple]:
        """Every event held, in (time, input order): what :meth:`release` would hand out."""
        held = list(chain(*self._runs, map(_ENTRY_EVENT, sorted(self._heap))))
        held.sort(key=_TIME)
        return held


#: Events checked for lateness together (see count_on_time).
LATENESS_BLOCK = 16


def count_on_time(times: list[int], frontier: int | float, highest: int | float, lateness: int) -> int:
    """How many of ``times`` come before the first late one. Event time ``t`` is late
    before the frontier it meets, max(frontier, largest time before it - lateness); the
    first only has to reach ``frontier`` (``highest`` is the largest time before them).

    By blocks: a block is on time as a whole when its smallest time reaches the frontier
    its largest time brings; only a block that does not is checked event by event.
    """
    for start in range(0, len(times), LATENESS_BLOCK):
        block = times[start : start + LATENESS_BLOCK]
        top = max(block)
        if min(block) >= max(frontier, highest - lateness, top - lateness):
            highest = max(highest, top)
            continue
        for index, time in enumerate(block, start):
            if time < frontier or (index and time < highest - lateness):
                return index
            if time > highest:
                highest = time
    return len(times)

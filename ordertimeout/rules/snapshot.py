"""How a matcher is inspected, saved and restored: its state as plain data.

A mixin of :class:`~.matcher.Matcher`, apart from the rules: hosts read the open orders,
take incremental changes for the state store, and rebuild a matcher from a snapshot.
Nothing here decides a result; a restored matcher goes on exactly where the saved one was.
"""

from __future__ import annotations

import itertools
import operator
from typing import Iterable, Iterator, Self

from .orders import _HEADER, _LONG, PACKED_RAW, OpenOrder

__all__ = ["COUNTER_NAMES", "RESTORE_CHUNK", "SavedState", "timeline_order"]

#: Open orders a source hands :meth:`SavedState.restore` at a time, as column chunks: big
#: enough that the per-chunk work is C loops, small enough that a chunk costs a few MB.
RESTORE_CHUNK = 65_536

#: The matcher's counters, in the order the statistics show them.
COUNTER_NAMES = (
    "creates",
    "pays",
    "other",
    "cancels",
    "success",
    "timeout",
    "cancelled",
    "unmatched_pays",
    "unmatched_cancels",
    "discarded",
    "paid_late",
    "reminder",
)


def timeline_order(created: list[int]) -> list[int] | None:
    """Where open orders created at ``created`` (ms, one each, in the order a source gives
    them) go in a restored matcher's timeline: the indices in creation order, ties kept
    in the order given (the order their timeouts go out in); None when it is the order
    given, as a source that keeps them in timeline order has them."""
    if all(map(operator.le, created, itertools.islice(created, 1, None))):
        return None
    return sorted(range(len(created)), key=created.__getitem__)


class SavedState:
    """The saving and inspecting half of :class:`~.matcher.Matcher` (see there for the
    state it reads: ``_open``, ``_timeline``, ``_expired``...)."""

    def expired_orders(self) -> list[OpenOrder]:
        """Timed-out orders still payable under ``paid_late``, in deadline order."""
        live = {id(order) for orders in self._expired.values() for order in orders}
        return [self._open_order(key, order) for key, order in zip(self._expired_keys, self._expired_line)
                if id(order) in live]

    def open_orders(self) -> list[OpenOrder]:
        """Every open order: in deadline order (the order they would time out in), or with
        windows of their own or reminders, in created order."""
        return [order for _, order in self.numbered_open_orders()[1]]

    def numbered_open_orders(self) -> tuple[int, Iterator[tuple[int, OpenOrder]]]:
        """``(head, (position, order), ...)``: every open order with its timeline
        position, as :meth:`take_changes` numbers them, made as they are taken (a store
        writing a million of them holds one at a time). Take them before the matcher
        goes on."""
        if self._lanes is not None:  # every open order, by its number (its place among creates)
            numbered = sorted((_LONG.unpack_from(order)[3], key, order)
                              for key in self._open for order in self._orders_of(key))
            return self._popped, ((number, self._open_order(key, order)) for number, key, order in numbered)
        # (Each one checked against its key's open orders: no set of a million ids.)
        is_open = self._is_open
        numbered = (
            (self._popped + index, self._open_order(key, order))
            for index, (key, order) in enumerate(zip(self._timeline_keys, self._timeline))
            if is_open(key, order)
        )
        return self._popped, numbered

    def open_by_window(self, bounds: tuple[int, ...]) -> dict[int | None, list[int]]:
        """Open orders by window (ms; None for a deadline of its own, from a deadline
        field), each as counts with at most each of ``bounds`` ms left to its deadline
        from ``now`` (cumulative), then all of them. O(open orders): for a scrape."""
        known = {self.within, *self.windows}
        now = self.now if self.now != float("-inf") else None
        counts: dict[int | None, list[int]] = {}
        fields = self._fields
        for key in self._open:
            for order in self._orders_of(key):
                created, _, deadline, _ = fields(order)
                window = deadline - created
                row = counts.get(window if window in known else None)
                if row is None:
                    row = counts[window if window in known else None] = [0] * (len(bounds) + 1)
                left = deadline - now if now is not None else deadline - created
                for index, bound in enumerate(bounds):
                    if left <= bound:
                        row[index] += 1
                row[-1] += 1
        return counts

    def take_changes(self) -> tuple[int, Iterable[tuple[int, OpenOrder]], list[OpenOrder]]:
        """What changed since the previous call, for a host that saves state incrementally.

        Returns ``(head, opened, closed)``: every order at a position before ``head`` is
        gone (timed out); ``opened`` are the (position, order) pairs added since and still
        open, oldest first, made as they are taken (take them before the matcher goes on:
        a backlog read between two checkpoints can open a million); ``closed`` are orders
        closed since before their deadline (paid, cancelled, discarded) that the previous
        call may have reported open: those added before it, and possibly some added since
        and already gone, which a store has never seen and skips. The first call starts
        the tracking and reports every open order as opened. Costs O(changes), not
        O(open orders).
        """
        closed_early, self._closed_early = self._closed_early or [], []
        just_closed = {id(order) for _, order in closed_early}
        if self._lanes is not None:
            # With lanes the orders opened since come from a log, each numbered in its
            # header, and timeouts are among the closed ones (no longer in position order).
            logged, self._opened_log = self._opened_log or [], []
            new_orders = [order for _, order in logged]
            number_of = _LONG.unpack_from
            new = ((number_of(order)[3], key, order) for key, order in logged)
        else:
            new_count = min(self._appended - self._changes_mark, len(self._timeline))
            # The new tail, newest first, as references only (walked from the deque's end).
            new_orders = list(itertools.islice(reversed(self._timeline), new_count))
            new_keys = list(itertools.islice(reversed(self._timeline_keys), new_count))
            end = self._popped + len(self._timeline)  # the position after the newest
            new = ((end - 1 - index, new_keys[index], new_orders[index]) for index in range(new_count - 1, -1, -1))
        # Closed orders opened since are not reported (a store never saw them).
        closed_new = {id(order) for order in new_orders if id(order) in just_closed} if just_closed else ()
        closed = [self._open_order(key, order) for key, order in closed_early if id(order) not in closed_new]
        self._changes_mark = self._appended
        return self._popped, self._still_open(new, just_closed), closed

    def _still_open(self, new: Iterable[tuple[int, str, bytes]], just_closed: set[int]) -> Iterator[tuple[int, OpenOrder]]:
        """``(position, order)`` of the ``(position, key, order)`` opened since that are
        still open, in the order given (see :meth:`take_changes`)."""
        is_open, open_order = self._is_open, self._open_order
        for position, key, order in new:
            if id(order) not in just_closed and is_open(key, order):
                yield position, open_order(key, order)

    def forget_changes(self) -> None:
        """Start change tracking from the present picture without listing it, as a first
        :meth:`take_changes` would (a host that has just restored the open orders knows
        them already): O(1) where that call is O(open orders)."""
        self._closed_early = []
        self._changes_mark = self._appended
        if self._lanes is not None:
            self._opened_log = []  # with lanes, the orders opened from now on are logged

    def snapshot(self, with_orders: bool = True) -> dict:
        """The whole state as plain data (ints, strings, bytes, lists).

        ``with_orders=False`` leaves the open orders out, for a host that keeps them
        itself through :meth:`take_changes`.
        """
        state = {
            "within": self.within,
            "mode": self.mode.value,
            "paid_late": self.paid_late_ms,
            "windows": list(self.windows),
            "remind": list(self.remind),
            "remind_before": list(self.remind_before),
            "reminder_stages": {str(stage): count for stage, count in self.reminder_stages.items()},
            "expired": [tuple(order) for order in self.expired_orders()],
            "now": self.now if self.now not in (float("-inf"), float("inf")) else None,
            "counts": self.counts(),
            "tick": [self._tick, dict(self._tick_creates)] if self._tick_creates else None,
        }
        if with_orders:
            state["open"] = [tuple(order) for order in self.open_orders()]
        return state

    @classmethod
    def restore(cls, state: dict) -> Self:
        """A matcher continuing exactly where ``snapshot()`` left off."""
        matcher = cls(state["within"], state["mode"], state.get("paid_late"), tuple(state.get("windows") or ()),
                      tuple(state.get("remind") or ()), tuple(state.get("remind_before") or ()))
        matcher.reminder_stages = {int(stage): count for stage, count in (state.get("reminder_stages") or {}).items()}
        if state["now"] is not None:
            matcher.now = state["now"]
        for name in COUNTER_NAMES:
            setattr(matcher, name, state["counts"].get(name, 0))
        for created, key, raw, seq, *deadline in state.get("expired") or ():
            deadline = deadline[0] if deadline and deadline[0] is not None else created + matcher.within
            matcher._remember_expired(key, matcher._pack_order(created, raw, seq, deadline), deadline)
        if state.get("tick"):
            matcher._tick, matcher._tick_creates = state["tick"][0], dict(state["tick"][1])
        saved = state["open"]
        add = matcher._add
        chunks = getattr(saved, "chunks", None)
        if chunks is not None:
            # A store's own orders in its timeline order, as columns a chunk at a time (a
            # million of them: no list of them all, no sort, and no Python loop per order
            # in the common case of orders that all have the run's window).
            within, pack_order, unpack = matcher.within, matcher._pack_order, _HEADER.unpack_from
            for keys, orders, windows in chunks():
                if matcher._lanes is None and windows.count(None) == len(windows):
                    matcher._add_packed(keys, orders)
                    continue
                for key, order, window in zip(keys, orders, windows):
                    created, seq = unpack(order)
                    deadline = created + (within if window is None else window)
                    add(key, pack_order(created, order[PACKED_RAW:], seq, deadline), created, deadline)
            # The store holds them numbered as this matcher numbers them now (lanes too:
            # an order's number is its place among them): track changes from here, so its
            # next checkpoint writes changes, not all of them again.
            matcher.forget_changes()
            saved.in_sync()
            return matcher
        # In the order given (the saved timeline order: ties at a millisecond are in input
        # order, which is the order their timeouts go out in), only put back in time order
        # where a source gives them out of it.
        orders = [OpenOrder(*fields) for fields in saved]
        order = timeline_order([order.created for order in orders])
        if order is not None:
            orders = [orders[index] for index in order]
        for created, key, raw, seq, deadline in orders:
            deadline = created + matcher.within if deadline is None else deadline
            add(key, matcher._pack_order(created, raw, seq, deadline), created, deadline)
        return matcher

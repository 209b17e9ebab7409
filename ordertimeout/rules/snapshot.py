"""How a matcher is inspected, saved and restored: its state as plain data.

A mixin of :class:`~.matcher.Matcher`, apart from the rules: hosts read the open orders,
take incremental changes for the state store, and rebuild a matcher from a snapshot.
Nothing here decides a result; a restored matcher goes on exactly where the saved one was.
"""

from __future__ import annotations

import itertools
from typing import Self

from .orders import OpenOrder, _pack, _unpack

__all__ = ["COUNTER_NAMES", "SavedState"]

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
)


class SavedState:
    """The saving and inspecting half of :class:`~.matcher.Matcher` (see there for the
    state it reads: ``_open``, ``_timeline``, ``_expired``...)."""

    def expired_orders(self) -> list[OpenOrder]:
        """Timed-out orders still payable under ``paid_late``, in deadline order."""
        live = {id(order) for orders in self._expired.values() for order in orders}
        return [_unpack(key, order) for key, order in zip(self._expired_keys, self._expired_line) if id(order) in live]

    def open_orders(self) -> list[OpenOrder]:
        """Every open order, in deadline order (the order they would time out in)."""
        return [order for _, order in self.numbered_open_orders()[1]]

    def numbered_open_orders(self) -> tuple[int, list[tuple[int, OpenOrder]]]:
        """``(head, [(position, order), ...])``: every open order with its timeline
        position, as :meth:`take_changes` numbers them."""
        live = {id(order) for key in self._open for order in self._orders_of(key)}
        return self._popped, [
            (self._popped + index, _unpack(key, order))
            for index, (key, order) in enumerate(zip(self._timeline_keys, self._timeline))
            if id(order) in live
        ]

    def take_changes(self) -> tuple[int, list[tuple[int, OpenOrder]], list[OpenOrder]]:
        """What changed since the previous call, for a host that saves state incrementally.

        Returns ``(head, opened, closed)``: every order at a position before ``head`` is
        gone (timed out); ``opened`` are the (position, order) pairs added since and still
        open; ``closed`` are orders closed since before their deadline (paid, cancelled,
        discarded) that the previous call may have reported open: those added before it,
        and possibly some added since and already gone, which a store has never seen and
        skips. The first call starts the tracking and reports every open order as opened.
        Costs O(changes), not O(open orders).
        """
        closed_early, self._closed_early = self._closed_early or [], []
        just_closed = {id(order) for _, order in closed_early}
        new_count = min(self._appended - self._changes_mark, len(self._timeline))
        new = list(itertools.islice(zip(reversed(self._timeline_keys), reversed(self._timeline)), new_count))
        position = self._popped + len(self._timeline)
        opened = []
        for key, order in new:
            position -= 1
            if id(order) not in just_closed and self._is_open(key, order):
                opened.append((position, _unpack(key, order)))
        opened.reverse()
        new_ids = {id(order) for _, order in new}
        closed = [_unpack(key, order) for key, order in closed_early if id(order) not in new_ids]
        self._changes_mark = self._appended
        return self._popped, opened, closed

    def forget_changes(self) -> None:
        """Start change tracking from the present picture without listing it, as a first
        :meth:`take_changes` would (a host that has just restored the open orders knows
        them already): O(1) where that call is O(open orders)."""
        self._closed_early = []
        self._changes_mark = self._appended

    def snapshot(self, with_orders: bool = True) -> dict:
        """The whole state as plain data (ints, strings, bytes, lists).

        ``with_orders=False`` leaves the open orders out, for a host that keeps them
        itself through :meth:`take_changes`.
        """
        state = {
            "within": self.within,
            "mode": self.mode.value,
            "paid_late": self.paid_late_ms,
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
        matcher = cls(state["within"], state["mode"], state.get("paid_late"))
        if state["now"] is not None:
            matcher.now = state["now"]
        for name in COUNTER_NAMES:
            setattr(matcher, name, state["counts"].get(name, 0))
        for created, key, raw, seq in state.get("expired") or ():
            matcher._remember_expired(key, _pack(created, raw, seq), created + matcher.within)
        if state.get("tick"):
            matcher._tick, matcher._tick_creates = state["tick"][0], dict(state["tick"][1])
        # In the order given (the saved timeline order: ties at a millisecond are in input
        # order, which is the order their timeouts go out in), only put back in time order
        # where a source gives them out of it; a stable sort keeps the ties as given.
        orders = sorted((OpenOrder(*fields) for fields in state["open"]), key=lambda order: order.created)
        for created, key, raw, seq in orders:
            matcher._add(key, _pack(created, raw, seq), created)
        return matcher

    def _is_open(self, key: str, order: bytes) -> bool:
        current = self._open.get(key)
        if current is order:
            return True
        return type(current) is list and any(candidate is order for candidate in current)


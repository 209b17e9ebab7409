"""The matcher's open orders per key, and the helpers that open and close them.

A mixin of :class:`~.matcher.Matcher` (whose hot loop inlines the common cases).
``_open[key]`` is the key's only open order itself, or a list of its open orders, oldest
first, when it has several. Most keys have one open order at a time; a bare order costs
no list (memory), and lists stay tracked by the garbage collector.
"""

from __future__ import annotations

from .orders import _HEADER, _LONG, _LONG_RAW, _RAW, OpenOrder, _pack, _pack_long

__all__ = ["OpenOrders"]


class OpenOrders:
    """The per-key state half of :class:`~.matcher.Matcher` (which keeps ``_open``, the
    timeline and the counters these helpers update)."""

    def _orders_of(self, key: str) -> list[bytes]:
        current = self._open.get(key)
        if current is None:
            return []
        return current if type(current) is list else [current]

    def _is_oldest_open(self, key: str, order: bytes) -> bool:
        current = self._open.get(key)
        return current is order or (type(current) is list and current[0] is order)

    def _pack_order(self, created: int, raw: bytes, seq: int, deadline: int) -> bytes:
        """An order packed as this matcher keeps them (the long header once it has lanes,
        numbered as the next create); a deadline of its own switches to lanes."""
        if deadline != created + self.within and self._lanes is None:
            self._enable_lanes()
        if self._lanes is None:
            return _pack(created, raw, seq)
        return _pack_long(created, raw, seq, deadline, self._appended)

    def _fields(self, order: bytes) -> tuple[int, int, int, int]:
        """``(created, seq, deadline, number)`` of a packed order (number -1: not kept)."""
        if self._lanes is None:
            created, seq = _HEADER.unpack_from(order)
            return created, seq, created + self.within, -1
        return _LONG.unpack_from(order)

    def _open_order(self, key: str, order: bytes) -> OpenOrder:
        """The packed ``order`` of ``key`` as plain data."""
        created, seq, deadline, _ = self._fields(order)
        return OpenOrder(created, key, order[_RAW if self._lanes is None else _LONG_RAW:], seq, deadline)

    def _add(self, key: str, order: bytes, created: int, deadline: int) -> None:
        """Open ``order`` (packed by :meth:`_pack_order`) of ``key`` (a restored one: only
        reminders after ``now`` are due)."""
        self._file(key, order)
        self._appended += 1
        self.pending += 1
        if self._lanes is not None:
            self._lanes.add(key, order, created, deadline, _LONG.unpack_from(order)[3], self.now)
            self._head_deadline = self._lanes.next_time()
            if self._opened_log is not None:
                self._opened_log.append((key, order))
            return
        if not self._timeline:
            self._head_deadline = deadline
        self._timeline.append(order)
        self._timeline_keys.append(key)

    def _add_packed(self, keys: tuple[str, ...], orders: tuple[bytes, ...]) -> None:
        """Open many orders with the run's window at once, in timeline order, packed as
        :meth:`_pack_order` packs them on a matcher without lanes (a restore): :meth:`_add`
        for each, as C loops."""
        if not orders:
            return
        if not self._timeline:
            self._head_deadline = _HEADER.unpack_from(orders[0])[0] + self.within
        self._timeline.extend(orders)
        self._timeline_keys.extend(keys)
        self._appended += len(orders)
        self.pending += len(orders)
        open_orders = self._open
        if open_orders.keys().isdisjoint(keys):
            size = len(open_orders)
            open_orders.update(zip(keys, orders))  # one open order per key, as most keys have
            if len(open_orders) - size == len(orders):
                return
            for key in keys:  # a key twice in the chunk: its orders again, the slow way
                open_orders.pop(key, None)
        for key, order in zip(keys, orders):
            self._file(key, order)

    def _file(self, key: str, order: bytes) -> None:
        """File ``order`` under ``key``, after the key's older open orders."""
        current = self._open.get(key)
        if current is None:
            self._open[key] = order
        elif type(current) is list:
            current.append(order)
        else:
            self._open[key] = [current, order]

    def _pop_head(self) -> bytes:
        timeline = self._timeline
        order = timeline.popleft()
        self._timeline_keys.popleft()
        self._popped += 1
        self._head_deadline = _HEADER.unpack_from(timeline[0])[0] + self.within if timeline else float("inf")
        return order

    def _close_oldest(self, key: str, early: bool = True) -> bytes:
        current = self._open[key]
        self.pending -= 1
        if type(current) is not list:
            del self._open[key]
            order = current
        else:
            order = current.pop(0)
            if len(current) == 1:
                self._open[key] = current[0]
        if early and self._closed_early is not None:
            self._closed_early.append((key, order))
        return order

    def _is_open(self, key: str, order: bytes) -> bool:
        current = self._open.get(key)
        if current is order:
            return True
        return type(current) is list and any(candidate is order for candidate in current)

    def _close_all(self, key: str) -> list[bytes]:
        orders = self._orders_of(key)
        del self._open[key]
        self.pending -= len(orders)
        if self._closed_early is not None:
            self._closed_early.extend([(key, order) for order in orders])
        return orders

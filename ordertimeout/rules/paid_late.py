"""--paid-late: the memory of timed-out orders that a late pay may still close.

A mixin of :class:`~.matcher.Matcher`, apart from its hot loop. A timed-out order is
remembered until ``deadline + D`` (exclusive), per key (oldest first) and in one deque in
deadline order, which is the order they time out and are forgotten in. A pay that finds
no open order of its key closes the oldest remembered one (every one in ``followed-by``)
as ``paid_late``; so ``paid_late`` never changes another result, it only turns unmatched
pays into results.
"""

from __future__ import annotations

from .orders import Mode, PaidLate

__all__ = ["PaidLateMemory"]


class PaidLateMemory:
    """The remembering half of the matcher's ``--paid-late`` rule (the matcher keeps
    ``_expired``, ``_expired_line``, ``_expired_keys``, ``_forget_at`` and
    ``paid_late_ms``, and calls these when an order times out, a pay finds no open order,
    and time passes ``_forget_at``)."""

    def _remember_expired(self, key: str, order: bytes, deadline: int) -> None:
        self._expired.setdefault(key, []).append(order)
        if not self._expired_line:
            self._forget_at = deadline + self.paid_late_ms
        self._expired_line.append(order)
        self._expired_keys.append(key)

    def _pay_late(self, key: str, time: int, pay: bytes) -> list[PaidLate]:
        """A pay with no open order: it pays the oldest remembered timed-out order(s)."""
        remembered = self._expired[key]
        count = len(remembered) if self.mode is Mode.FOLLOWED_BY else 1
        paid, remembered[:count] = remembered[:count], []
        if not remembered:
            del self._expired[key]
        out = []
        for order in paid:
            created, _, raw, seq, deadline = self._open_order(key, order)
            self.paid_late += 1
            out.append(PaidLate(key, created, deadline, time, raw, pay, seq))
        return out

    def _forget_expired(self, time: int | float) -> None:
        """Forget timed-out orders whose pay can no longer count: ``deadline + D <= time``."""
        line, keys, expired = self._expired_line, self._expired_keys, self._expired
        later = self.paid_late_ms
        fields = self._fields
        while line:
            order = line[0]
            forget_at = fields(order)[2] + later
            if forget_at > time:
                self._forget_at = forget_at
                return
            line.popleft()
            key = keys.popleft()
            remembered = expired.get(key)
            if remembered and remembered[0] is order:  # not paid late in the meantime
                del remembered[0]
                if not remembered:
                    del expired[key]
        self._forget_at = float("inf")

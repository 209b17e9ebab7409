"""Health: whether a run is doing its job, for ``GET /healthz`` and for the end of a run.

Plain data, no I/O. The run reports what failed and what came back (``fail`` and
``recover`` per component: ``input``, ``state``); deliveries are judged from the notify
sink's own counters, read when health is checked: they are unhealthy once they have failed
without a single success for longer than ``unhealthy_after``, and while any dead letter
waits in the outbox (``dead_letters``: results given up on need a person, so systemd and
a load balancer must see them). A failing component makes the whole run unhealthy, with
the component's last error as the reason.
"""

from __future__ import annotations

from typing import Callable

__all__ = ["Health", "MonitorError"]


class MonitorError(Exception):
    """The metrics and health endpoint cannot be served (e.g. its address is taken)."""


class Health:
    """The run's health at a moment of the wall clock (epoch ms, given by the caller).

    ``deliveries``, when set, returns the notify sink's ``stats()`` dict; its
    ``failures_in_row`` (attempts failed since the last success) tells whether delivery
    is failing, and ``failing_since`` (epoch ms), when the sink keeps it, since when.
    """

    def __init__(self, unhealthy_after: int = 300_000) -> None:
        self.unhealthy_after = unhealthy_after
        self.deliveries: Callable[[], dict] | None = None
        #: Components judged when health is checked: name -> function returning the
        #: reason it fails, or None (e.g. a Kafka cluster that cannot be reached).
        self.probes: dict[str, Callable[[], str | None]] = {}
        #: Remarks on a healthy run (name -> function returning a remark, or None), e.g. a
        #: Kafka worker left without partitions: still 200, with a ``notes`` entry.
        self.notes: dict[str, Callable[[], str | None]] = {}
        self._failures: dict[str, str] = {}
        self._failing_since: int | None = None  # deliveries, as first seen failing

    def fail(self, component: str, reason: str) -> None:
        """``component`` does not work; ``reason`` says why, in one line."""
        self._failures[component] = reason

    def recover(self, component: str) -> None:
        """``component`` works again."""
        self._failures.pop(component, None)

    def failure(self, component: str) -> str | None:
        """The reason ``component`` is failing, or None."""
        return self._failures.get(component)

    def check(self, now: int) -> tuple[bool, dict]:
        """``(healthy, body)``: body is a small JSON-able dict saying why."""
        reasons = dict(self._failures)
        for component, probe in self.probes.items():
            reason = probe()
            if reason is not None:
                reasons[component] = reason
        deliveries = self._delivery_failure(now)
        if deliveries is not None:
            reasons["deliveries"] = deliveries
        dead = self._dead_letters()
        if dead is not None:
            reasons["dead_letters"] = dead
        if reasons:
            return False, {"status": "unhealthy", "reasons": reasons}
        notes = {name: note for name, note in ((name, remark()) for name, remark in self.notes.items()) if note}
        return True, {"status": "ok", "notes": notes} if notes else {"status": "ok"}

    def _dead_letters(self) -> str | None:
        if self.deliveries is None:
            return None
        dead = self.deliveries().get("dead_letters", 0)
        return f"{dead:,} dead letter{'s' * (dead != 1)}" if dead else None

    def _delivery_failure(self, now: int) -> str | None:
        if self.deliveries is None:
            return None
        stats = self.deliveries()
        in_row = stats.get("failures_in_row", 0)
        if not in_row:
            self._failing_since = None
            return None
        since = stats.get("failing_since")
        if since is None:
            # The sink does not say since when: count from the first check that saw it.
            if self._failing_since is None:
                self._failing_since = now
            since = self._failing_since
        failing_for = now - since
        if failing_for <= self.unhealthy_after:
            return None
        return f"deliveries failing for {failing_for // 1000} s ({in_row} failed attempts in a row)"

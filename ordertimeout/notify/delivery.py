"""The relay: delivers the outbox's entries to their sinks, at least once, in its own task.

In: pending entries from an outbox (:mod:`.outbox`). Out: attempts through senders (a
:mod:`.webhook` or :mod:`.exec_sink`), each answered by an :class:`Outcome`; the outcome
goes back to the outbox (delivered: removed; failed: kept for later; dead: kept with its
last error) and into the counters of :meth:`Relay.stats`.

Health is per sink (endpoint), not per result, as Svix's and Vector's senders do it.
A sink that works gets up to ``concurrency`` attempts at once, oldest entry first; an
entry waits while an earlier result of its key is in flight or waiting, so one key's
results arrive in decision order. Failures in a row (:data:`DOWN_AFTER`, or one answer
with ``Retry-After``) mark the sink *down*: then it gets
one *probe* (an attempt of its oldest waiting entry) per backoff step, a full-jitter
delay capped by ``probe_max_ms`` (or the sink's ``Retry-After``, honoured as given),
while every other entry waits in the outbox without a timer of its own. The probe that
succeeds marks the sink up again, and the backlog drains at once at full concurrency.

What is retried: every failure (network, timeout, 5xx, 4xx), until the entry is older
than ``max_age_ms`` (counted from when it was decided); an answer the sender marks
``permanent`` (``--dead-on``, 410 by default) makes that entry dead at once without
marking the sink down. A failed entry is not tried again before its own backoff step
(also capped by ``probe_max_ms``): one result the endpoint always refuses costs it a
short down spell now and then, not a standstill. Entries past their maximum age while
the sink is down go dead when a probe fails at or after that age.

The decisions after a failure are synchronous and pure (:func:`after_failure`,
:func:`backoff_ms`, with the random source and the time handed in), so backoff is tested
without any waiting.
"""

from __future__ import annotations

import asyncio
import random as _random
from typing import Callable, NamedTuple, Protocol

from ..rules.clocks import Clock
from .outbox import Entry

__all__ = ["Outcome", "Sender", "Relay", "after_failure", "backoff_ms", "DELIVERED", "PROBE_MAX_MS"]

#: Failed attempts in a row before the report hears that deliveries are failing: a sink
#: that fails now and then (a 503 among successes) is retried without a word each time.
FAILING_AFTER = 3

#: Attempts failing in a row (no success between) that mark a sink down; an answer with
#: ``Retry-After`` marks it down at once. A 503 now and then among successes only makes
#: that one result wait for its own backoff step.
DOWN_AFTER = 3

#: First backoff step's bound, in ms; steps double up to the cap (``--probe-max``).
BACKOFF_BASE_MS = 500
PROBE_MAX_MS = 5_000


class Outcome(NamedTuple):
    """The result of one attempt. ``retry_after_ms``: when the sink asked us to come back."""

    ok: bool
    error: str = ""
    permanent: bool = False
    retry_after_ms: int | None = None


DELIVERED = Outcome(True)


class Sender(Protocol):
    """Sends one entry to one sink (webhook, exec)."""

    name: str

    async def open(self) -> None: ...

    async def send(self, entry: Entry) -> Outcome: ...

    async def close(self) -> None: ...


def backoff_ms(step: int, rng: _random.Random, base_ms: int = BACKOFF_BASE_MS, cap_ms: int = PROBE_MAX_MS) -> int:
    """Full-jitter delay of backoff step ``step`` (1 after the first failure): uniform
    between 0 and ``min(cap_ms, base_ms * 2**(step-1))``."""
    bound = min(cap_ms, base_ms * 2 ** min(step - 1, 40))
    return int(rng.uniform(0, bound))


def after_failure(entry: Entry, outcome: Outcome, now: int, rng: _random.Random, max_age_ms: int,
                  base_ms: int = BACKOFF_BASE_MS, cap_ms: int = PROBE_MAX_MS) -> bool:
    """Record a failed attempt on ``entry``; True if it should be retried, False if dead.

    Sets ``attempts``, ``last_error`` and (when retried) ``next_attempt``, the earliest
    moment it may be tried again: its own backoff step, or the sink's ``Retry-After``. That
    moment is never beyond the entry's maximum age: it is tried then at the latest, and
    its failure makes it dead.
    """
    entry.attempts += 1
    entry.last_error = outcome.error
    if outcome.permanent:
        return False
    give_up_at = entry.enqueued + max_age_ms
    if now >= give_up_at:
        entry.last_error = f"{outcome.error} (gave up after {entry.attempts} attempts: older than the maximum age)"
        return False
    if outcome.retry_after_ms is not None:
        delay = max(0, outcome.retry_after_ms)
    else:
        delay = backoff_ms(entry.attempts, rng, base_ms, cap_ms)
    entry.next_attempt = min(now + delay, give_up_at)
    return True


class _Sink:
    """One sink's health and what it has in flight."""

    __slots__ = ("name", "down", "failures", "steps", "probe_at", "busy", "busy_keys", "wake")

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.failures = 0  # attempts failed since its last success
        self.steps = 0  # backoff steps taken since it went down
        self.probe_at = 0  # while down: when the next probe may start (epoch ms)
        self.busy: set = set()  # rows (positions) of the entries in flight
        self.busy_keys: set = set()  # their keys
        self.wake = asyncio.Event()


class Relay:
    """Delivers from ``outbox`` through ``senders`` (by sink name) until stopped.

    ``concurrency``: attempts in flight at once per sink while it works. ``probe_max_ms``:
    the cap of a down sink's backoff step. ``limit``: more pending entries than this and
    :meth:`wait_for_room` holds the reader back (backpressure; nothing is dropped).
    """

    def __init__(self, outbox, senders: dict[str, Sender], clock: Clock, *, rng: _random.Random | None = None,
                 concurrency: int = 8, timeout_ms: int = 10_000, max_age_ms: int = 86_400_000,
                 limit: int = 1_000_000, base_ms: int = BACKOFF_BASE_MS, probe_max_ms: int = PROBE_MAX_MS,
                 report: Callable[[str, str, dict], None] | None = None) -> None:
        self.outbox = outbox
        #: ``report(level, message, fields)`` (a :meth:`.logs.Log.write`): told when delivery
        #: has failed :data:`FAILING_AFTER` times in a row and when it works again, and of
        #: each dead letter, so a log shows an endpoint
        #: that is down without a terminal, metrics or a scrape.
        self.report = report
        self.senders = senders
        self.clock = clock
        self.rng = rng or _random.Random()
        self.concurrency = concurrency
        self.timeout_ms = timeout_ms
        self.max_age_ms = max_age_ms
        self.limit = limit
        self.base_ms, self.cap_ms = base_ms, probe_max_ms
        self.delivered = 0
        self.retried = 0
        self.died = 0
        self.failures_in_row = 0
        self.failing_since: int | None = None  # epoch ms of the first failure of the spell
        #: The last failure's text, for a warning; never holds a secret (senders see to it).
        self.last_error = ""
        self.last_dead_error = ""
        self.sinks = {name: _Sink(name) for name in senders}
        self._failure: BaseException | None = None  # the outbox could not record an outcome
        self._progress = asyncio.Event()

    # -- what others read ----------------------------------------------------------

    def stats(self) -> dict:
        """The delivery counters: this run's delivered, retried and dead, and the outbox now."""
        oldest = self.outbox.oldest_pending()
        return {
            "delivered": self.delivered,
            "retried": self.retried,
            "dead": self.died,
            "pending": self.outbox.pending_count(),
            "oldest_pending_age_ms": 0 if oldest is None else max(0, self.clock.now_ms() - oldest),
            "failures_in_row": self.failures_in_row,
            "dead_letters": self.outbox.dead_count(),
            "failing_since": self.failing_since,
            "sinks_down": sorted(name for name, sink in self.sinks.items() if sink.down),
        }

    def full(self) -> bool:
        """Whether the outbox holds more pending entries than the limit."""
        return self.outbox.pending_count() > self.limit

    # -- what the runtime side calls ------------------------------------------------

    def add(self, results: list, now: int) -> None:
        """Results decided at ``now``: into the outbox, and the relay looks at them."""
        if results:
            self.outbox.add(results, now)
            self.wake()

    def add_entries(self, entries: list[Entry]) -> None:
        """Ready-made entries: into the outbox, and the relay looks at them."""
        if entries:
            self.outbox.add_entries(entries)
            self.wake()

    def wake(self) -> None:
        """Look at the outbox again (new entries were committed)."""
        for sink in self.sinks.values():
            sink.wake.set()

    def retry_dead(self) -> int:
        """Every dead letter back to pending, due now, with a fresh maximum age; how many."""
        moved = self.outbox.retry_dead(self.clock.now_ms())
        self.wake()
        return moved

    async def wait_for_room(self, timeout: float | None) -> bool:
        """Wait until the outbox is at or below its limit; False if ``timeout`` passed first."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while self.full():
            self._progress.clear()
            remaining = None if end is None else end - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return not self.full()
        return True

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every committed pending entry to be delivered
        (or dead); True if the outbox is empty of pending entries."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.outbox.pending_count() > 0:
            self._progress.clear()
            remaining = end - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                break
        return self.outbox.pending_count() == 0

    # -- the task --------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until cancelled, one dispatcher per sink; on cancellation, attempts in
        flight are cancelled too (their entries stay pending)."""
        dispatchers = [asyncio.create_task(self._dispatch(sink)) for sink in self.sinks.values()]
        try:
            await asyncio.gather(*dispatchers)
        finally:
            for task in dispatchers:
                task.cancel()
            await asyncio.gather(*dispatchers, return_exceptions=True)

    async def _dispatch(self, sink: _Sink) -> None:
        attempts: set[asyncio.Task] = set()
        try:
            while True:
                # Cleared before looking, so a wake-up while looking is not missed.
                sink.wake.clear()
                if self._failure is not None:
                    raise self._failure
                timeout = self._start_attempts(sink, attempts)
                try:
                    async with asyncio.timeout(timeout):
                        await sink.wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in attempts:
                task.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)

    def _start_attempts(self, sink: _Sink, attempts: set) -> float | None:
        """Start what ``sink`` may attempt now; the seconds until it may attempt more
        (None: until an attempt ends or entries come)."""
        clock, now = self.clock, self.clock.now_ms()
        if sink.down:
            if sink.busy:
                return None  # the probe (or attempts started before it went down) in flight
            if now < sink.probe_at:
                return clock.seconds_until(sink.probe_at)
            room, probe = 1, True
        else:
            room, probe = self.concurrency - len(sink.busy), False
        if room > 0:
            for entry in self.outbox.take(sink.name, now, room, sink.busy, sink.busy_keys):
                sink.busy.add(entry.position)
                sink.busy_keys.add(entry.key)
                task = asyncio.create_task(self._attempt(sink, entry, probe))
                attempts.add(task)
                task.add_done_callback(attempts.discard)
                room -= 1
        if room <= 0 or (probe and sink.busy):
            return None
        moment = self.outbox.next_due(sink.name, now)  # an entry waiting for its own step
        return None if moment is None else clock.seconds_until(moment)

    async def _attempt(self, sink: _Sink, entry: Entry, probe: bool) -> None:
        try:
            try:
                async with asyncio.timeout(self.timeout_ms / 1000):
                    outcome = await self.senders[sink.name].send(entry)
            except TimeoutError:
                outcome = Outcome(False, f"no answer within {self.timeout_ms / 1000:g}s")
            except Exception as error:  # a sender's surprise is a failed attempt, not the end
                outcome = Outcome(False, f"attempt failed ({type(error).__name__})")
            self._record(sink, entry, outcome, probe)
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # the outbox cannot record it: delivery ends (raised by the dispatcher)
            self._failure = error
        finally:
            sink.busy.discard(entry.position)
            sink.busy_keys.discard(entry.key)
            sink.wake.set()
            self._progress.set()

    def _record(self, sink: _Sink, entry: Entry, outcome: Outcome, probe: bool) -> None:
        outbox, report, now = self.outbox, self.report, self.clock.now_ms()
        if outcome.ok:
            outbox.delivered(entry)
            self.delivered += 1
            sink.down, sink.failures = False, 0  # the backlog drains at full concurrency from now
            if self.failures_in_row >= FAILING_AFTER and report is not None:
                report("info", f"deliveries work again ({self.failures_in_row:,} failed attempts before)",
                       {"sink": entry.sink, "failed_attempts": self.failures_in_row})
            self.failures_in_row, self.failing_since = 0, None
            return
        if outcome.permanent:  # --dead-on: an answer about this result, the sink works
            after_failure(entry, outcome, now, self.rng, self.max_age_ms, self.base_ms, self.cap_ms)
            self._bury(entry)
            return
        self.failures_in_row += 1
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = outcome.error
        if self.failures_in_row == FAILING_AFTER and report is not None:  # once per spell of failures
            report("warning", f"deliveries failing: {entry.sink} {entry.id}: {outcome.error} (retrying; results "
                   "wait in the outbox)", {"sink": entry.sink, "id": entry.id, "error": outcome.error})
        if after_failure(entry, outcome, now, self.rng, self.max_age_ms, self.base_ms, self.cap_ms):
            outbox.retry(entry)
            self.retried += 1
        else:
            self._bury(entry)
        sink.failures += 1
        if not sink.down and (sink.failures >= DOWN_AFTER or outcome.retry_after_ms is not None):
            sink.down, sink.steps = True, 0
        if not sink.down:
            return  # a failure among successes: that entry waits for its own step, the sink goes on
        if probe or sink.steps == 0:  # an attempt in flight when it went down takes no step
            sink.steps += 1
            if outcome.retry_after_ms is not None:
                sink.probe_at = now + max(0, outcome.retry_after_ms)
            else:
                sink.probe_at = now + backoff_ms(sink.steps, self.rng, self.base_ms, self.cap_ms)
        elif outcome.retry_after_ms is not None:
            sink.probe_at = max(sink.probe_at, now + outcome.retry_after_ms)
        # Results past their maximum age while the sink is down are given up now; the next
        # probe comes at the oldest one's maximum age at the latest.
        limit = now - self.max_age_ms
        for expired in outbox.expired(sink.name, limit, sink.busy):
            expired.attempts = max(expired.attempts, 1)
            expired.last_error = (f"{outcome.error} (gave up: older than the maximum age while "
                                  f"{sink.name} was down)")
            self._bury(expired)
        oldest = outbox.oldest_pending(sink.name)
        if oldest is not None:
            sink.probe_at = min(sink.probe_at, oldest + self.max_age_ms)

    def _bury(self, entry: Entry) -> None:
        self.outbox.bury(entry)
        self.died += 1
        self.last_dead_error = entry.last_error
        if self.report is not None:
            self.report("warning", f"dead letter: {entry.sink} {entry.id}: {entry.last_error}",
                        {"sink": entry.sink, "id": entry.id, "error": entry.last_error})

"""The relay: delivers the outbox's entries to their sinks, at least once, in its own task.

In: due entries from an outbox (:mod:`.outbox`). Out: attempts through senders (a
:mod:`.webhook` or :mod:`.exec_sink`), each answered by an :class:`Outcome`; the outcome
goes back to the outbox (delivered: removed; retry: a later next attempt; dead: kept with
its last error) and into the counters of :meth:`Relay.stats`.

The decision after a failure is synchronous and pure (:func:`after_failure`, with the
random source and the time handed in), so backoff is tested without any waiting. The
async shell only starts attempts, at most ``concurrency`` at once, each bounded by
``timeout_ms``, and sleeps until the next entry is due.

Retries: capped exponential backoff with full jitter (a uniform delay between 0 and
``min(cap, base * 2**(attempts-1))``), unless the sink said when to come back
(``Retry-After``), which is honoured as given. An entry older than ``max_age_ms`` (counted
from when it was decided) that fails once more goes dead; so does a permanent failure
(a 4xx answer other than 408 and 429).
"""

from __future__ import annotations

import asyncio
import random as _random
from typing import Callable, NamedTuple, Protocol

from ..rules.clocks import Clock
from .outbox import Entry

__all__ = ["Outcome", "Sender", "Relay", "after_failure", "backoff_ms", "DELIVERED"]

#: Failed attempts in a row before the report hears that deliveries are failing: a sink
#: that fails now and then (a 503 among successes) is retried without a word each time.
FAILING_AFTER = 3

#: First retry delay bound and the cap of the exponential backoff, in ms.
BACKOFF_BASE_MS = 500
BACKOFF_CAP_MS = 5 * 60_000


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


def backoff_ms(attempts: int, rng: _random.Random, base_ms: int = BACKOFF_BASE_MS, cap_ms: int = BACKOFF_CAP_MS) -> int:
    """Full-jitter delay before retry number ``attempts`` (1 after the first failure)."""
    bound = min(cap_ms, base_ms * 2 ** min(attempts - 1, 40))
    return int(rng.uniform(0, bound))


def after_failure(entry: Entry, outcome: Outcome, now: int, rng: _random.Random, max_age_ms: int,
                  base_ms: int = BACKOFF_BASE_MS, cap_ms: int = BACKOFF_CAP_MS) -> bool:
    """Record a failed attempt on ``entry``; True if it should be retried, False if dead.

    Sets ``attempts``, ``last_error`` and (when retried) ``next_attempt``. The last retry
    is never scheduled beyond the entry's maximum age: it happens at that moment at the
    latest, and its failure makes the entry dead.
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


class Relay:
    """Delivers from ``outbox`` through ``senders`` (by sink name) until stopped.

    ``limit``: more pending entries than this and :meth:`wait_for_room` holds the reader
    back (backpressure; nothing is dropped).
    """

    def __init__(self, outbox, senders: dict[str, Sender], clock: Clock, *, rng: _random.Random | None = None,
                 concurrency: int = 8, timeout_ms: int = 10_000, max_age_ms: int = 86_400_000,
                 limit: int = 1_000_000, base_ms: int = BACKOFF_BASE_MS, cap_ms: int = BACKOFF_CAP_MS,
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
        self.base_ms, self.cap_ms = base_ms, cap_ms
        self.delivered = 0
        self.retried = 0
        self.died = 0
        self.failures_in_row = 0
        #: The last failure's text, for a warning; never holds a secret (senders see to it).
        self.last_error = ""
        self.last_dead_error = ""
        self._busy: set = set()  # the rows of entries being attempted
        self._wake = asyncio.Event()
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
        }

    def full(self) -> bool:
        """Whether the outbox holds more pending entries than the limit."""
        return self.outbox.pending_count() > self.limit

    # -- what the runtime side calls ------------------------------------------------

    def add(self, results: list, now: int) -> None:
        """Results decided at ``now``: into the outbox, and the relay looks at them."""
        if results:
            self.outbox.add(results, now)
            self._wake.set()

    def add_entries(self, entries: list[Entry]) -> None:
        """Ready-made entries: into the outbox, and the relay looks at them."""
        if entries:
            self.outbox.add_entries(entries)
            self._wake.set()

    def wake(self) -> None:
        """Look at the outbox again (new entries were committed)."""
        self._wake.set()

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
        """Deliver until cancelled, with ``concurrency`` workers each making one attempt at a
        time; on cancellation, attempts in flight are cancelled too (their entries stay pending)."""
        workers = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        outbox, clock, busy = self.outbox, self.clock, self._busy
        while True:
            now = clock.now_ms()
            due = outbox.take_due(now, 1, busy)
            if due:
                entry = due[0]
                busy.add(entry.position)
                try:
                    await self._attempt(entry)
                finally:
                    busy.discard(entry.position)
                continue
            # Nothing due: sleep until the next entry is, or until new entries come. The
            # check above and this clear happen in one step, so no wake-up is missed.
            moment = outbox.next_due(now, busy)
            timeout = None if moment is None else clock.seconds_until(moment)
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _attempt(self, entry: Entry) -> None:
        try:
            async with asyncio.timeout(self.timeout_ms / 1000):
                outcome = await self.senders[entry.sink].send(entry)
        except TimeoutError:
            outcome = Outcome(False, f"no answer within {self.timeout_ms / 1000:g}s")
        except Exception as error:  # a sender's surprise is a failed attempt, not the end
            outcome = Outcome(False, f"attempt failed ({type(error).__name__})")
        self._record(entry, outcome)  # an outbox that cannot record it ends delivery (raises)
        self._progress.set()

    def _record(self, entry: Entry, outcome: Outcome) -> None:
        outbox = self.outbox
        report = self.report
        if outcome.ok:
            outbox.delivered(entry)
            self.delivered += 1
            if self.failures_in_row >= FAILING_AFTER and report is not None:
                report("info", f"deliveries work again ({self.failures_in_row:,} failed attempts before)",
                       {"sink": entry.sink, "failed_attempts": self.failures_in_row})
            self.failures_in_row = 0
            return
        self.failures_in_row += 1
        self.last_error = outcome.error
        if self.failures_in_row == FAILING_AFTER and report is not None:  # once per spell of failures
            report("warning", f"deliveries failing: {entry.sink} {entry.id}: {outcome.error} (retrying; results "
                   "wait in the outbox)", {"sink": entry.sink, "id": entry.id, "error": outcome.error})
        if after_failure(entry, outcome, self.clock.now_ms(), self.rng, self.max_age_ms, self.base_ms, self.cap_ms):
            outbox.retry(entry)
            self.retried += 1
        else:
            outbox.bury(entry)
            self.died += 1
            self.last_dead_error = entry.last_error
            if report is not None:
                report("warning", f"dead letter: {entry.sink} {entry.id}: {entry.last_error}",
                       {"sink": entry.sink, "id": entry.id, "error": entry.last_error})

"""Notify: the seam between the runtime and delivery, and the lifecycle of delivery.

In: the results the runtime writes (through :class:`OutboxWriter`, which wraps its
:class:`~.sinks.ResultWriter`), and the checkpoints it saves. Out: entries in the outbox,
a relay task delivering them, a reader that pauses while the outbox is over its limit,
and the counters of :meth:`Notifier.stats`.

The runtime knows nothing of this: it writes results and saves checkpoints as before.
A host that commits its input only once the results it covers have left the outbox
(``ordertimeout kafka``) calls :meth:`Notifier.track` and adds results with
:meth:`Notifier.add_tracked`, which answers a future for that moment.
With ``--state`` results are committed to the outbox (held) before stdout shows them, the
checkpointer is wrapped so its transaction releases them for delivery, and while rows
wait for a checkpoint one is asked for at least every ``checkpoint_every`` ms (a quiet
input would otherwise hold them back).
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
from typing import Callable, Iterable

from ..rules.clocks import Clock, LoopClock
from .delivery import PROBE_MAX_MS, Relay, Sender
from .outbox_file import answer_retry_request, take_retry_request
from .outbox import MemoryOutbox, dead_letters
from .seams import OutboxWriter, PacedReader
from .sqlite_outbox import SqliteOutbox
from ..outputs.sinks import RESULT_TYPES

__all__ = ["Notifier", "OutboxWriter", "PacedReader"]  # (the last two from .seams)

#: How often a run with --state looks for a ``ordertimeout outbox STATE --retry-dead`` request.
RETRY_REQUEST_POLL_SECONDS = 0.25


class Notifier:
    """Delivery of every result (of the kind ``only``) to each of ``senders``.

    ``report(level, message, fields)`` hears of failing and recovered delivery and of
    each dead letter (see :class:`.Relay`)."""

    def __init__(self, senders: Iterable[Sender], *, only: str | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None, concurrency: int = 8, timeout_ms: int = 10_000,
                 max_age_ms: int = 86_400_000, limit: int = 1_000_000, probe_max_ms: int = PROBE_MAX_MS,
                 report: Callable[[str, str, dict], None] | None = None) -> None:
        self.senders = {sender.name: sender for sender in senders}
        self.only = only
        self.clock = clock or LoopClock()
        self._settings = dict(rng=rng, concurrency=concurrency, timeout_ms=timeout_ms, max_age_ms=max_age_ms,
                              limit=limit, probe_max_ms=probe_max_ms, report=report)
        self._keep = RESULT_TYPES[only] if only else None
        self.outbox = MemoryOutbox(self.senders)
        self.relay = Relay(self.outbox, self.senders, self.clock, **self._settings)
        self.error: BaseException | None = None
        self._tasks: list[asyncio.Task] = []
        self._nudge: Callable[[], None] | None = None
        self._nudge_every_ms = 1000
        self._final_stats: dict | None = None
        #: Seconds to wait for pending deliveries at the end (``--drain-timeout``).
        self.drain_timeout = 30.0
        #: Whether pending entries are decided again from uncommitted input by the next run.
        self.replayed = False
        self._tickets: dict[tuple[str, str], list[_Ticket]] = {}
        #: The state file holding the outbox (``--state``), where ``--retry-dead`` asks.
        self.state_path: str | None = None
        #: Where dead letters are kept outside a state file and the command that lists them
        #: (a kafka worker's topic), for the message at the end.
        self.dead_letter_place: tuple[str, str] | None = None
        #: ``keep(entry)``: writes a dead letter somewhere lasting (see :meth:`keep_dead_letters`).
        self._keep_dead: Callable | None = None
        self._keeping: set[asyncio.Task] = set()

    def report_to(self, report: Callable[[str, str, dict], None]) -> None:
        """Tell ``report(level, message, fields)`` (a :meth:`.logs.Log.write`) of failing and
        recovered delivery and of each dead letter, from now on."""
        self._settings["report"] = self.relay.report = report

    @property
    def durable(self) -> bool:
        """Whether pending deliveries survive this process (``--state``)."""
        return self.outbox.durable

    def use_state(self, store, runtime) -> None:
        """Keep the outbox in ``store``'s file and write it with ``runtime``'s checkpoints."""
        self.outbox = SqliteOutbox(store.connection, self.senders)
        self.relay = Relay(self.outbox, self.senders, self.clock, **self._settings)
        self.state_path = store.path
        save, outbox, relay = runtime.checkpointer, self.outbox, self.relay

        def checkpoint_with_outbox(pipeline, offsets) -> None:
            written = 0

            def also(connection) -> None:
                nonlocal written
                written = outbox.write_staged(connection)

            outbox.flush()  # outcomes recorded in this turn: committed before the checkpoint begins
            save(pipeline, offsets, also=also)
            outbox.committed(written)
            relay.wake()

        runtime.checkpointer = checkpoint_with_outbox
        self._nudge, self._nudge_every_ms = runtime.checkpoint, runtime.checkpoint_every

    def track(self) -> None:
        """Tell when results leave the outbox (:meth:`add_tracked`), for a host that commits
        its input only after that, so pending entries are read again after a crash."""
        self.outbox = _TrackedOutbox(self.senders, self._left)
        self.relay = Relay(self.outbox, self.senders, self.clock, **self._settings)
        self.replayed = True

    def add_tracked(self, results) -> "asyncio.Future | None":
        """Results into the outbox (as :meth:`add`); a future done once each of them has
        left it for every sink (delivered or dead), or None if none is for delivery."""
        keep = self._keep
        if keep is not None:
            results = [result for result in results if type(result) is keep]
        if not results:
            return None
        ticket = _Ticket(asyncio.get_running_loop().create_future(), len(results) * len(self.senders))
        tickets = self._tickets
        for result in results:
            for sink in self.senders:
                tickets.setdefault((sink, result.id), []).append(ticket)
        self.relay.add(results, self.clock.now_ms())
        return ticket.future

    def keep_dead_letters(self, keep: Callable) -> None:
        """``await keep(entry)`` writes each dead letter somewhere lasting (a kafka worker's
        ``<group>-dead`` topic); a tracked entry that dies leaves the outbox (so its input
        may be committed) only once it is kept. ``keep`` is tried again until it succeeds."""
        self._keep_dead = keep

    def requeue(self, entries: list) -> list:
        """Dead letters given back (``--retry-dead``): into the outbox with a fresh maximum
        age; one future per entry, done once it has left again (``entry.dead`` tells how)."""
        loop = asyncio.get_running_loop()
        now = self.clock.now_ms()
        futures = []
        for entry in entries:
            entry.dead, entry.attempts, entry.enqueued, entry.next_attempt = False, 0, now, now
            ticket = _Ticket(loop.create_future(), 1)
            self._tickets.setdefault((entry.sink, entry.id), []).append(ticket)
            futures.append(ticket.future)
        self.relay.add_entries(entries)
        return futures

    def report(self, level: str, message: str, **fields) -> None:
        """A diagnostic line through the run's log (if it has one)."""
        report = self._settings["report"]
        if report is not None:
            report(level, message, fields)

    def _left(self, entry) -> None:
        if entry.dead and self._keep_dead is not None:
            task = asyncio.get_running_loop().create_task(self._keep_letter(entry))
            self._keeping.add(task)
            task.add_done_callback(self._keeping.discard)
            return
        self._release(entry)

    async def _keep_letter(self, entry) -> None:
        delay = 0.5
        while True:
            try:
                await self._keep_dead(entry)
                break
            except Exception as error:  # the place is unreachable for now: its input stays uncommitted
                self.report("warning", f"cannot keep dead letter {entry.sink} {entry.id} ({error}); retrying",
                            sink=entry.sink, id=entry.id)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._release(entry)

    def _release(self, entry) -> None:
        waiting = self._tickets.get((entry.sink, entry.id))
        if not waiting:
            return
        ticket = waiting.pop(0)
        if not waiting:
            del self._tickets[(entry.sink, entry.id)]
        ticket.left += 1
        if ticket.left == ticket.total and not ticket.future.done():
            ticket.future.set_result(None)

    def writer(self, inner) -> "OutboxWriter":
        """``inner`` (the stdout writer) with every result also going to the outbox."""
        return OutboxWriter(inner, self)

    def paced(self, reader) -> "PacedReader":
        """``reader`` held back while the outbox is over its limit."""
        return PacedReader(reader, self.relay)

    def add(self, results) -> None:
        """Results just decided: into the outbox, one entry per sink."""
        keep = self._keep
        if keep is not None:
            results = [result for result in results if type(result) is keep]
        if results:
            self.relay.add(results, self.clock.now_ms())

    def hold(self) -> None:
        """With ``--state``: commit the results added so far to the state file now, held
        back from delivery until the checkpoint covering their input (called before they
        are shown on stdout; raises :class:`~.outbox.OutboxError` if the file cannot be
        written). Without, nothing to do: the outbox is in memory."""
        hold = getattr(self.outbox, "hold_staged", None)
        if hold is not None:
            hold()

    def stats(self) -> dict:
        """Delivery counters (see :meth:`.Relay.stats`); after :meth:`finish`, as they were then."""
        return self._final_stats if self._final_stats is not None else self.relay.stats()

    def problem(self) -> str | None:
        """Why the run should exit non-zero: dead letters waiting (with how to see and retry
        them), or undelivered results that only this process held."""
        stats = self.stats()
        parts = []
        dead = stats["dead_letters"]
        if dead:
            last = f" (last: {self.relay.last_dead_error})" if self.relay.last_dead_error else ""
            if self.state_path is not None:
                path = shlex.quote(os.path.abspath(self.state_path))
                parts.append(f"{dead_letters(dead)} wait in {path}{last}; list them with: ordertimeout outbox "
                             f"{path}; once the endpoint is fixed, retry them with: ordertimeout outbox {path} "
                             "--retry-dead (also while a run holds the file)")
            elif self.dead_letter_place is not None:
                where, command = self.dead_letter_place
                parts.append(f"{dead_letters(dead)} kept in {where}{last}; list them with: {command}; once the "
                             f"endpoint is fixed, retry them with: {command} --retry-dead")
            else:
                parts.append(f"{dead_letters(dead)}{last}, each named above (without --state they are not kept)")
        if self.replayed and stats["pending"]:
            parts.append(f"{stats['pending']:,} not delivered (their input was not committed: the group's next "
                         "worker decides and delivers them again)")
        elif not self.durable and stats["pending"]:
            parts.append(f"{stats['pending']:,} never delivered (lost: without --state the outbox is in memory)")
        return "deliveries: " + ", ".join(parts) if parts else None

    def draining_notice(self, drain_timeout: float, signalled: bool) -> str | None:
        """What a run says while it waits for pending deliveries at its end, or None."""
        pending = self.stats()["pending"]
        if not pending or drain_timeout <= 0 or self.replayed:
            return None
        then = "they stay in the outbox" if self.durable else "they are lost (without --state the outbox is in memory)"
        again = "again " if signalled else ""
        return f"delivering {pending:,} pending results, up to {drain_timeout:g}s; Ctrl-C {again}to stop now, {then}"

    # -- lifecycle (inside the running loop) --------------------------------------------

    async def start(self, on_error: Callable[[], None]) -> None:
        """Open the senders and start delivering; ``on_error`` is called if delivery fails
        for good (the outbox cannot be written), after :attr:`error` is set."""
        for sender in self.senders.values():
            await sender.open()

        def done(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None and self.error is None:
                self.error = task.exception()
                on_error()

        self._tasks.append(asyncio.create_task(self.relay.run()))
        if self._nudge is not None:
            self._tasks.append(asyncio.create_task(self._nudge_checkpoints()))
        if self.state_path is not None:
            self._tasks.append(asyncio.create_task(self._take_retry_requests(self.state_path)))
        for task in self._tasks:
            task.add_done_callback(done)

    async def _nudge_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self._nudge_every_ms / 1000)
            if self.outbox.staged:
                self._nudge()

    async def _take_retry_requests(self, path: str) -> None:
        """``ordertimeout outbox STATE --retry-dead`` while this run holds the file: only
        this run writes it, so the command asks and this run does it."""
        while True:
            await asyncio.sleep(RETRY_REQUEST_POLL_SECONDS)
            if take_retry_request(path):
                moved = self.relay.retry_dead()
                self.outbox.flush()  # committed before the answer says so
                answer_retry_request(path, moved)
                report = self._settings["report"]
                if report is not None:
                    report("info", f"{dead_letters(moved)} moved back to pending (ordertimeout outbox --retry-dead)",
                           {"moved": moved})

    async def finish(self, drain_timeout: float) -> None:
        """Wait up to ``drain_timeout`` seconds for pending deliveries, then stop."""
        try:
            if self.error is None and drain_timeout > 0:
                await self.relay.drain(drain_timeout)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            for sender in self.senders.values():
                await sender.close()
            if self.outbox.durable and self.error is None:
                self.outbox.flush()
            if self.error is None:
                self._final_stats = self.relay.stats()  # the state file closes after this


class _Ticket:
    """Results added together: how many entries they made and how many have left."""

    __slots__ = ("future", "total", "left")

    def __init__(self, future: asyncio.Future, total: int) -> None:
        self.future, self.total, self.left = future, total, 0


class _TrackedOutbox(MemoryOutbox):
    """A memory outbox that tells ``on_leave`` of each entry that leaves it."""

    def __init__(self, sinks, on_leave: Callable) -> None:
        super().__init__(sinks)
        self._on_leave = on_leave

    def delivered(self, entry) -> None:
        super().delivered(entry)
        self._on_leave(entry)

    def bury(self, entry) -> None:
        super().bury(entry)
        self._on_leave(entry)

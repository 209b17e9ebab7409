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
import random
from typing import Callable, Iterable

from ..rules.clocks import Clock, LoopClock
from .delivery import Relay, Sender
from .outbox import MemoryOutbox, SqliteOutbox
from ..outputs.sinks import RESULT_TYPES

__all__ = ["Notifier", "OutboxWriter", "PacedReader"]


class Notifier:
    """Delivery of every result (of the kind ``only``) to each of ``senders``.

    ``report(level, message, fields)`` hears of failing and recovered delivery and of
    each dead letter (see :class:`.Relay`)."""

    def __init__(self, senders: Iterable[Sender], *, only: str | None = None, clock: Clock | None = None,
                 rng: random.Random | None = None, concurrency: int = 8, timeout_ms: int = 10_000,
                 max_age_ms: int = 86_400_000, limit: int = 1_000_000,
                 report: Callable[[str, str, dict], None] | None = None) -> None:
        self.senders = {sender.name: sender for sender in senders}
        self.only = only
        self.clock = clock or LoopClock()
        self._settings = dict(rng=rng, concurrency=concurrency, timeout_ms=timeout_ms, max_age_ms=max_age_ms,
                              limit=limit, report=report)
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

    def _left(self, entry) -> None:
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
        """Why the run should exit non-zero: dead letters, or undelivered results that
        only this process held."""
        stats = self.stats()
        parts = []
        if stats["dead"]:
            where = "; list them with: ordertimeout outbox STATE" if self.durable else ""
            parts.append(f"{stats['dead']:,} dead (last: {self.relay.last_dead_error}{where})")
        if self.replayed and stats["pending"]:
            parts.append(f"{stats['pending']:,} not delivered (their input was not committed: the group's next "
                         "worker decides and delivers them again)")
        elif not self.durable and stats["pending"]:
            parts.append(f"{stats['pending']:,} never delivered (lost: without --state the outbox is in memory)")
        return "deliveries: " + ", ".join(parts) if parts else None

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
        for task in self._tasks:
            task.add_done_callback(done)

    async def _nudge_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(self._nudge_every_ms / 1000)
            if self.outbox.staged:
                self._nudge()

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


class OutboxWriter:
    """The runtime's writer: results into the outbox, then to stdout as before.

    Results collect until the runtime's next flush (after each chunk of input and each
    timer firing, and before every checkpoint), then enter the outbox together: matching
    pays for the outbox once per chunk, not once per line. The outbox comes first, also
    when stdout's buffer fills up between two flushes (its ``before_flush``): with
    ``--state`` the results are committed to the state file before a byte of them is
    shown, so after ``kill -9`` every result that reached stdout is delivered.
    """

    def __init__(self, inner, notifier: Notifier) -> None:
        self.inner = inner
        self._add = notifier.add
        self._hold = notifier.hold
        self._batch: list = []
        out = getattr(inner, "out", None)  # the OutputBuffer of a ResultWriter
        if out is not None:
            out.before_flush = self._to_outbox

    @property
    def latencies(self):
        """The inner writer's pay latencies."""
        return self.inner.latencies

    def write(self, results) -> None:
        """Write ``results`` to stdout's buffer; they go to the outbox at the next flush."""
        if type(results) is not list:
            results = list(results)
        self._batch += results  # first: a full stdout buffer flushes inside inner.write
        self.inner.write(results)

    def _to_outbox(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._add(batch)
        self._hold()

    def flush(self) -> None:
        """Results written since the last flush into the outbox (committed, with
        ``--state``); then stdout flushed."""
        self._to_outbox()
        self.inner.flush()


class PacedReader:
    """A reader that waits while the outbox is over its limit (backpressure).

    The wait counts against the caller's timeout, so timers due meanwhile still fire.
    """

    def __init__(self, reader, relay: Relay) -> None:
        self.reader = reader
        self._relay = relay
        self.paused = False

    def __getattr__(self, name: str):
        return getattr(self.reader, name)  # start, stop, progress, identity: the reader's own

    async def get(self, timeout: float | None = None):
        """The reader's next item, once the outbox has room."""
        if self._relay.full():
            self.paused = True
            loop = asyncio.get_running_loop()
            start = loop.time()
            if not await self._relay.wait_for_room(timeout):
                raise TimeoutError
            self.paused = False
            if timeout is not None:
                timeout = max(0.0, timeout - (loop.time() - start))
        return await self.reader.get(timeout)

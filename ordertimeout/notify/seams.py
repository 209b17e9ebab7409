"""What the runtime holds of notify: its writer (results into the outbox first, then to
stdout) and its reader (held back while the outbox is over its limit)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .delivery import Relay

if TYPE_CHECKING:
    from .notifier import Notifier

__all__ = ["OutboxWriter", "PacedReader"]


class OutboxWriter:
    """The runtime's writer: results into the outbox, then to stdout as before.

    Results collect until the runtime's next flush (after each chunk of input and each
    timer firing, and before every checkpoint), then enter the outbox together: matching
    pays for the outbox once per chunk, not once per line. The outbox comes first, also
    when stdout's buffer fills up between two flushes (its ``before_flush``): with
    ``--state`` the results are committed to the state file before a byte of them is
    shown, so after ``kill -9`` every result that reached stdout is delivered.
    """

    def __init__(self, inner, notifier: Notifier) -> None:  # (add, hold: see Notifier)
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

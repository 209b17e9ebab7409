"""Sources: bytes from stdin or files, read in large chunks on a thread, handed to asyncio.

Reading happens on one daemon thread so a blocking read (a quiet pipe, a terminal) never
stops the event loop from firing timers, and so Ctrl-C never waits for a read. A small
number of chunks may be in flight; when the consumer falls behind, the reader waits,
so a slow stdout consumer slows reading instead of filling memory (backpressure).
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
from dataclasses import dataclass
from typing import BinaryIO, Sequence

__all__ = ["Input", "ChunkReader", "SourceError", "END", "CHUNK_BYTES"]

#: Bytes per read: big enough that per-chunk overhead vanishes next to per-line work.
CHUNK_BYTES = 1 << 20
#: Chunks that may wait in the queue before the reader pauses.
CHUNKS_IN_FLIGHT = 4


class SourceError(Exception):
    """An input could not be opened or read; the message names it."""


@dataclass(frozen=True)
class Input:
    """One input: a display ``name`` and either a ``path`` or an open binary ``stream``."""

    name: str
    path: str | None = None
    stream: BinaryIO | None = None


#: Marks the end of every input.
END = None


class ChunkReader:
    """Reads ``inputs`` one after another; ``get()`` returns ``(name, chunk)`` items.

    An empty chunk ends one input (so its last line without a newline can be finished);
    :data:`END` follows the last input.
    """

    def __init__(self, inputs: Sequence[Input], chunk_bytes: int = CHUNK_BYTES) -> None:
        self._inputs = list(inputs)
        self._chunk_bytes = chunk_bytes
        self._queue: asyncio.Queue | None = None
        self._slots = threading.Semaphore(CHUNKS_IN_FLIGHT)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the reading thread; call from inside the running loop."""
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._thread = threading.Thread(
            target=self._read_all, args=(loop,), name="ordertimeout-reader", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after its current read (it is a daemon: exit never waits)."""
        self._stopping.set()
        self._slots.release()

    async def get(self, timeout: float | None = None):
        """The next item; raises ``TimeoutError`` if none comes within ``timeout`` seconds."""
        queue = self._queue
        if queue.empty():
            if timeout is None:
                item = await queue.get()
            else:
                item = await asyncio.wait_for(queue.get(), timeout)
        else:
            item = queue.get_nowait()
        self._slots.release()
        if isinstance(item, BaseException):
            raise item
        return item

    # -- the thread ----------------------------------------------------------------

    def _read_all(self, loop: asyncio.AbstractEventLoop) -> None:
        def hand_over(item) -> bool:
            self._slots.acquire()
            if self._stopping.is_set():
                return False
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return False
            return True

        for source in self._inputs:
            try:
                for chunk in self._chunks(source):
                    if not hand_over((source.name, chunk)):
                        return
            except OSError as error:
                reason = error.strerror or str(error)
                hand_over(SourceError(f"cannot read {source.name}: {reason}"))
                return
            if not hand_over((source.name, b"")):
                return
        hand_over(END)

    def _chunks(self, source: Input):
        if source.stream is not None:
            try:
                fd = source.stream.fileno()
            except (OSError, ValueError, io.UnsupportedOperation):
                fd = None  # an in-memory stream (tests): read it through its own methods
            if fd is None:
                read = getattr(source.stream, "read1", source.stream.read)
                while chunk := read(self._chunk_bytes):
                    yield chunk
                return
            # A real descriptor is read directly: a daemon thread blocked inside a
            # buffered reader would hold its lock while the interpreter shuts down.
            while chunk := os.read(fd, self._chunk_bytes):
                yield chunk
            return
        fd = os.open(source.path, os.O_RDONLY)
        try:
            while chunk := os.read(fd, self._chunk_bytes):
                yield chunk
        finally:
            os.close(fd)

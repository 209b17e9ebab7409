"""Arrivals: pipes, terminals and devices read by a thread that stamps each chunk as it comes.

In processing time a line's time is the moment it was read, so what reads a live input
must note that moment at once, not when the event loop gets to the chunk. A
:class:`StampedReader` is a daemon thread that reads one input to its end and stamps each
chunk when its read returns. It blocks in ``read`` where no event loop can help
(``/dev/null`` cannot be polled, a terminal may be shared, opening a named pipe waits for
a writer), and it reads at most a few chunks ahead of the run: then it waits, and the
writer feels the backpressure.

Stdin is read from the process's first milliseconds when that is safe: the command is
``watch``, stdin is a pipe or socket, and the command line names no file but ``-``
(:func:`prefetch_stdin`, called by the package before its imports). ``watch`` takes
~100 ms to start; a producer writing meanwhile used to fill the pipe, and what it held
was then read at once and stamped with one moment, so thousands of orders fell due in
the same millisecond one window later (bench, 40,000 creates/s: timer lateness p99 6-15
ms). Read from the start, they keep the moments they came at (p99 ~2 ms). The run takes
the reader over (:func:`take_prefetched`) with what it has read so far.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (this module is imported before anything heavy: see prefetch_stdin)
    from typing import AsyncIterator, Callable

__all__ = ["StampedReader", "ROTATED", "PIPE_CHUNK_BYTES", "READ_AHEAD_CHUNKS", "prefetch_stdin", "take_prefetched"]

#: Bytes per read from a pipe or device: live input is worked through in slices small
#: enough (a few ms) that processing-time timers are never held up long by a burst.
PIPE_CHUNK_BYTES = 1 << 16
#: Chunks a reader thread may have read ahead of the run.
READ_AHEAD_CHUNKS = 4
#: Chunks stdin may be read ahead while the command is still starting (4 MB).
PREFETCH_CHUNKS = 64


class _Rotated(bytes):
    """The chunk marking that a followed input was replaced (rotated, truncated, a new writer)."""


#: Yielded as a chunk when a followed input starts over: finish the old last line and
#: restart byte offsets and line numbers.
ROTATED = _Rotated()


class StampedReader:
    """A thread reading ``fd`` (or opening ``path`` itself) to its end, each chunk stamped
    with ``now()`` when its read returned.

    With ``reopen`` (a followed named pipe), when the writers leave it yields
    :data:`ROTATED` and waits for the next writer, for ever. :meth:`chunks` is the run's
    side: it takes the stamps over to the run's clock. ``ahead`` bounds what is read
    before that (a prefetch); from then on it is :data:`READ_AHEAD_CHUNKS`.
    """

    def __init__(self, fd: int | None, *, path: str | None = None, reopen: bool = False, name: str = "",
                 read_bytes: int = PIPE_CHUNK_BYTES, ahead: int = READ_AHEAD_CHUNKS,
                 now: Callable[[], float | int | None] = time.monotonic) -> None:
        # ``now`` stamps chunks read before chunks() is called (a prefetch): monotonic
        # seconds, which the run's clock turns into its milliseconds.
        self._fd, self._path, self._reopen, self._name = fd, path, reopen, name
        self._read_bytes = read_bytes
        self._ahead = ahead
        self._now = now
        self._items: deque[tuple[bytes | OSError, float | int | None]] = deque()
        self._room = threading.Condition()
        self._stopping = False
        self._wake: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        #: ``now()`` when reading began.
        self.since = now()

    def start(self) -> None:
        """Start reading (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name=f"read {self._name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop reading: the thread ends at its next chance (a read it waits in is left to the process's end)."""
        with self._room:
            self._stopping = True
            self._room.notify()

    async def chunks(self, now_ms: Callable[[], int] | None = None,
                     from_monotonic: Callable[[float], int] | None = None) -> AsyncIterator[tuple[bytes, int | None]]:
        """``(chunk, stamp)`` as read, up to and including the empty chunk at the end; an
        ``OSError`` of a read is raised here. From now on chunks are stamped with
        ``now_ms`` (None: not at all); those read before, with ``time.monotonic``, are
        restamped with ``from_monotonic`` (or, without it, with ``now_ms()``)."""
        import asyncio  # here: the package imports this module before asyncio, to start early

        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(arrived.set)
            except RuntimeError:  # the loop is gone: nobody is reading any more
                self.stop()

        with self._room:
            if self._items:  # read before the run took over (a prefetch): stamped with time.monotonic
                self._items = deque((item, _restamp(stamp, now_ms, from_monotonic)) for item, stamp in self._items)
            self._now = now_ms if now_ms is not None else _no_stamp
            self._wake = wake
            self._ahead = READ_AHEAD_CHUNKS  # the run reads as it goes: a few chunks ahead of it
        self.start()
        while True:
            arrived.clear()
            with self._room:
                item = self._items.popleft() if self._items else None
                if item is not None and len(self._items) < self._ahead:
                    self._room.notify()
            if item is None:
                await arrived.wait()
                continue
            chunk, stamp = item
            if isinstance(chunk, OSError):
                raise chunk
            yield chunk, stamp
            if chunk is not ROTATED and not chunk:
                return

    def _read(self) -> None:
        descriptor = self._fd
        try:
            while True:
                with self._room:
                    while len(self._items) >= self._ahead and not self._stopping:
                        self._room.wait()
                    if self._stopping:
                        return
                if descriptor is None:
                    try:
                        descriptor = os.open(self._path, os.O_RDONLY)  # waits for a writer
                    except OSError as error:
                        self._put(error)
                        return
                    if self._stopping:
                        return
                try:
                    chunk: bytes | OSError = os.read(descriptor, self._read_bytes)
                except OSError as error:
                    chunk = error
                if self._reopen and chunk == b"":  # the writers left: wait for the next one
                    os.close(descriptor)
                    descriptor, chunk = None, ROTATED
                self._put(chunk)
                if isinstance(chunk, OSError) or (chunk is not ROTATED and not chunk):
                    return
        finally:
            if self._fd is None and descriptor is not None:
                os.close(descriptor)

    def _put(self, item: bytes | OSError) -> None:
        with self._room:  # stamped under the lock: chunks() switches clocks between two stamps, never during one
            self._items.append((item, self._now()))
            wake = self._wake
        if wake is not None:
            wake()


def _no_stamp() -> None:
    return None


def _restamp(stamp, now_ms, from_monotonic):
    if now_ms is None:
        return None
    return from_monotonic(stamp) if from_monotonic is not None else now_ms()


# -- stdin from the process's first milliseconds ------------------------------------------

_prefetched: StampedReader | None = None

#: ``watch``'s options that take a value (as separate argument unless written ``--opt=value``)
#: and those that do not: what :func:`prefetch_stdin` needs to tell files from option values.
#: A test holds both to the command's own definition.
WATCH_VALUE_OPTIONS = frozenset({
    "--cancel-type", "--checkpoint-every", "--color", "--config", "--create-type", "--dead-on", "--deadline-field",
    "--deliver-concurrency", "--deliver-max-age", "--deliver-timeout", "--drain-timeout",
    "--exec", "--fields", "--idle", "--key", "--lateness", "--log-format", "--match",
    "--max-future", "--max-line-bytes", "--metrics-addr", "--only", "--outbox-limit", "--paid-late",
    "--pay-type", "--probe-max", "--rejects", "--remind", "--remind-before", "--rotate-wait", "--state", "--stats",
    "--time-field", "--time-unit", "--type-field", "--unhealthy-after", "--webhook", "--webhook-secret", "--within",
    "--within-by",
})
WATCH_FLAG_OPTIONS = frozenset({
    "--final", "--follow", "--json", "--local-time", "--no-progress", "--processing-time",
    "--progress", "--quiet", "--strict", "--verbose", "-f", "-q", "-v",
})


def prefetch_stdin(args: list[str]) -> None:
    """Start reading stdin now if ``args`` (the command line after the program name) run
    ``watch`` on it and it is a pipe or socket. Anything unclear (an option this does not
    know, ``--help``, ``--webhook-secret``, after which the command starts itself again)
    leaves stdin alone, to be read, or not, as usual."""
    global _prefetched
    if _prefetched is not None or not args or args[0] != "watch" or not _stdin_is_the_input(args[1:]):
        return
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return
    reader = StampedReader(0, name="<stdin>", ahead=PREFETCH_CHUNKS)
    reader.start()
    _prefetched = reader


def take_prefetched(fd: int | None) -> StampedReader | None:
    """The reader of stdin started by :func:`prefetch_stdin`, for the input reading ``fd``
    0; None otherwise (and from the second call on)."""
    global _prefetched
    if fd != 0:
        return None
    reader, _prefetched = _prefetched, None
    return reader


def prefetched_since() -> float | None:
    """``time.monotonic()`` when the prefetch began, while it is not taken over yet."""
    return None if _prefetched is None else _prefetched.since


def _stdin_is_the_input(args: list[str]) -> bool:
    """Whether ``watch`` with these arguments reads stdin: no file, or ``-``, is given."""
    files = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            files += args[index:]
            break
        if not arg.startswith("-") or arg == "-":
            files.append(arg)
            continue
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if name in WATCH_VALUE_OPTIONS:
            if name == "--webhook-secret":
                return False
            if "=" not in arg:
                index += 1
        elif name not in WATCH_FLAG_OPTIONS or name in ("--help", "-h"):
            return False
    return not files or "-" in files

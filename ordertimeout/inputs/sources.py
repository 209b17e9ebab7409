"""Sources: bytes from stdin or files, in large chunks, without blocking the event loop.

Regular files never block for long, so they are read directly in big chunks. Anything
else is read by a thread that stamps each chunk with its arrival time on the run's clock,
so a line's processing time is when it came, not when the loop got to it: pipes,
terminals, /dev/null and other devices, which the event loop cannot always poll, and
named pipes, whose very opening waits for a writer (the thread opens them).
Either way nothing is read ahead beyond a bounded buffer: when the consumer stops (a
slow stdout), reading stops too, and memory stays bounded.

The reader notes which file each input is reading (:mod:`.files`: identity and resume
points); chunks become lines in :mod:`.framing`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import stat
from typing import AsyncIterator, Sequence

# Re-exported: the thread that reads pipes, what a file is (identity, resume points) and
# how chunks become lines.
from .arrivals import (  # noqa: F401
    PIPE_CHUNK_BYTES, READ_AHEAD_CHUNKS, ROTATED, StampedReader, prefetched_since, take_prefetched,
)
from .files import (  # noqa: F401
    DEFAULT_ROTATE_WAIT_MS, FINGERPRINT_BYTES, GZIP_MAGIC, FileIdentity, Input, OpenFile, SavedPosition, is_gzip,
    resume_inputs, resume_position,
)
from .files import moved_since_resume, next_slot, rotated_key, rotated_name
from .follow import DRAINED, FOLLOW_POLL_SECONDS, Follower, HandedOver, handed_over  # noqa: F401
from .framing import LineSplitter, Overlong  # noqa: F401
from .compressed import gunzip_if_compressed, gzip_file_chunks
from ..errors import SourceError

__all__ = [
    "Input", "ChunkReader", "SourceError", "END", "ROTATED", "DRAINED", "HandedOver", "CHUNK_BYTES",
    "FileIdentity", "SavedPosition", "resume_position", "resume_inputs", "is_gzip", "LineSplitter", "Overlong",
]

#: Bytes per read: big enough that per-chunk overhead vanishes next to per-line work.
CHUNK_BYTES = 1 << 20


#: Marks the end of every input.
END = None


class ChunkReader:
    """Reads ``inputs`` one after another; ``get()`` returns ``(name, chunk, arrival)``.

    ``arrival`` is the epoch-ms moment a reader thread read the chunk, on the clock
    given to :meth:`start`, or None for a chunk read directly (a regular file: it is
    read when it is used). An empty chunk ends one input (so its last line without a
    newline can be finished); :data:`END` follows the last input.

    A followed input (:mod:`.follow`) also gives the chunks of the files rotated away from
    its path, under their own names, read until quiet for ``rotate_wait_ms``.
    """

    def __init__(self, inputs: Sequence[Input], chunk_bytes: int = CHUNK_BYTES,
                 rotate_wait_ms: int = DEFAULT_ROTATE_WAIT_MS) -> None:
        self._inputs = list(inputs)
        self._chunk_bytes = chunk_bytes
        self._rotate_wait_ms = rotate_wait_ms
        self._items: AsyncIterator | None = None
        self._next: asyncio.Future | None = None
        self._cleanup: list = []
        self._files: dict[str, OpenFile] = {}
        self._clock = None
        self.bytes_read = 0
        self._waiting = False  # the input at hand waits for data that is not there yet
        self._unread = True  # inputs after the one at hand are still to be read
        self._total_bytes = _regular_file_bytes(self._inputs)

    def progress(self) -> float | None:
        """Share of the input read so far, when every input is a finite regular file."""
        if not self._total_bytes:
            return None
        return min(1.0, self.bytes_read / self._total_bytes)

    def identity(self, name: str) -> FileIdentity | None:
        """The identity of the file input ``name`` is reading (None for stdin and pipes)."""
        current = self._files.get(name)
        return None if current is None else current.identity

    def reading_since(self) -> int | None:
        """When stdin began to be read, on the clock given to :meth:`start`, if that was
        before the run began (see :func:`~.arrivals.prefetch_stdin`); else None."""
        since = prefetched_since()
        convert = getattr(self._clock, "from_monotonic", None)
        if since is None or convert is None or not any(_reads_stdin(source) for source in self._inputs):
            return None
        return convert(since)

    def caught_up(self) -> bool:
        """Whether nothing is left unread at the moment: a ``get`` is still waiting, and
        it waits for data not written yet (a followed file and the files rotated away from
        it read to their end, or not there yet; a pipe, terminal or device with nothing to
        read), not for a read under way. (A file that is not followed is caught up at
        :data:`END`.)"""
        pending = self._next
        return pending is not None and not pending.done() and self._waiting and not self._unread

    def _set_waiting(self, waits: bool) -> None:
        self._waiting = waits

    def start(self, clock=None) -> None:
        """Prepare reading (call from inside the running loop); ``clock`` stamps arrivals."""
        self._clock = clock
        self._items = self._read_all()

    def stop(self) -> None:
        """Stop reading and release what reading holds."""
        if self._next is not None and not self._next.done():
            self._next.cancel()
        for cleanup in reversed(self._cleanup):
            cleanup()
        self._cleanup.clear()

    async def get(self, timeout: float | None = None):
        """The next item; raises ``TimeoutError`` if none comes within ``timeout`` seconds.

        A read that times out is not lost: the next call picks it up.
        """
        if self._next is None:
            self._next = asyncio.ensure_future(anext(self._items, END))
        if not self._next.done():
            done, _ = await asyncio.wait({self._next}, timeout=timeout)
            if not done:
                raise TimeoutError
        item, self._next = self._next, None
        return item.result()

    async def _read_all(self):
        for number, source in enumerate(self._inputs, 1):
            self._unread = number < len(self._inputs)  # inputs after this one
            chunks = self._follow(source) if source.follow else self._named(source)
            try:
                async for name, chunk, arrival in chunks:
                    self.bytes_read += len(chunk)
                    yield name, chunk, arrival
            except OSError as error:
                raise SourceError(f"cannot read {source.name}: {error.strerror or error}") from None
            yield source.name, b"", None

    async def _named(self, source: Input):
        """``(name, chunk, arrival)`` of one input that is not followed; if the file it was
        resumed at was rotated away since (:func:`~.files.moved_since_resume`), first a
        :class:`~.follow.HandedOver` chunk and that file's rest, then the new file."""
        moved = None
        if source.resumes is not None and not is_gzip(source.path):
            try:
                info = os.stat(source.path)
            except OSError:
                info = None
            moved = moved_since_resume(source, info) if info is not None and stat.S_ISREG(info.st_mode) else None
        if moved is not None:
            slot = next_slot(source.name, [each.name for each in self._inputs])
            rest = dataclasses.replace(source, name=rotated_name(source.name, slot), path=moved,
                                       checkpoint_as=rotated_key(source.path, slot), resumes=None)
            yield source.name, handed_over(rest.name) if moved else ROTATED, None
            if moved:
                async for chunk, arrival in self._chunks(rest):
                    yield rest.name, chunk, arrival
                yield rest.name, b"", None
            source = dataclasses.replace(source, start_offset=0, resumes=None)
        async for chunk, arrival in self._chunks(source):
            yield source.name, chunk, arrival

    async def _chunks(self, source: Input):
        """(chunk, arrival) pairs of one input that is not followed: a gzip file named by
        its path through the gzip module (its offsets resume in decompressed bytes);
        anything else as read, decompressed as it comes if it starts with gzip's magic
        bytes (stdin or a pipe: a regular file that does is a gzip file by path)."""
        if source.path is not None and is_gzip(source.path):
            # Known by the compressed file's identity; its offsets count decompressed bytes.
            fd = os.open(source.path, os.O_RDONLY)
            try:
                self._files[source.name] = OpenFile(fd, source.path, source.start_offset, compressed=True,
                                                    key=source.checkpoint_as)
            finally:
                os.close(fd)
            async for chunk in gzip_file_chunks(source.path, source.start_offset, self._chunk_bytes):
                yield chunk, None
            return
        chunks = self._read_chunks(source)
        if not source.start_offset:  # (a file resumed mid-way is plain: is_gzip saw its start)
            chunks = gunzip_if_compressed(chunks, CHUNK_BYTES)
        async for item in chunks:
            yield item

    async def _read_chunks(self, source: Input):
        """(chunk, arrival) pairs of one input as it is read (not a gzip file by path)."""
        if source.path is not None and _is_named_pipe(source.path):
            async for item in self._thread_chunks(None, source.name, path=source.path):
                yield item
            return
        if source.path is not None:
            fd = os.open(source.path, os.O_RDONLY)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # a device
                    async for item in self._thread_chunks(fd, source.name):
                        yield item
                    return
                opened = self._files[source.name] = OpenFile(fd, source.path, source.start_offset,
                                                             key=source.checkpoint_as)
                if source.start_offset:
                    os.lseek(fd, source.start_offset, os.SEEK_SET)
                async for item in self._file_chunks(fd, opened):
                    yield item
            finally:
                os.close(fd)
            return
        stream = source.stream
        try:
            fd = stream.fileno()
        except (OSError, ValueError, io.UnsupportedOperation):
            fd = None
        if fd is None:  # an in-memory stream (tests)
            read = getattr(stream, "read1", stream.read)
            while chunk := read(self._chunk_bytes):
                yield chunk, None
            return
        if stat.S_ISREG(os.fstat(fd).st_mode):  # `< file`: a regular file on stdin
            async for item in self._file_chunks(fd, None):
                yield item
            return
        async for item in self._thread_chunks(fd, source.name):
            yield item

    async def _file_chunks(self, fd: int, opened: OpenFile | None):
        """A regular file, read directly to its current end in big chunks."""
        while chunk := os.read(fd, self._chunk_bytes):
            if opened is not None:
                opened.read(chunk)
            yield chunk, None
            await asyncio.sleep(0)  # let timers and signals in between chunks

    async def _thread_chunks(self, fd: int | None, name: str, path: str | None = None, reopen: bool = False):
        """A pipe, terminal or device, read by a :class:`~.arrivals.StampedReader` thread
        that stamps each chunk's arrival on the run's clock (stdin may have been read since
        the process began: :func:`~.arrivals.prefetch_stdin`).

        Without ``fd``, the thread opens the named pipe ``path`` itself: opening one waits
        for a writer, which only a thread can afford. With ``reopen`` (``--follow``), when
        the writers leave it marks the end of their lines with :data:`ROTATED` and waits
        for the next writer, for ever.
        """
        reader = take_prefetched(fd)
        if reader is None:
            reader = StampedReader(fd, path=path, reopen=reopen, name=name,
                                   read_bytes=min(self._chunk_bytes, PIPE_CHUNK_BYTES))
        self._cleanup.append(reader.stop)
        clock = self._clock
        now_ms = clock.now_ms if clock is not None else None
        # The thread reads as soon as data is there: while the run waits for a chunk of
        # it, nothing is left unread.
        self._waiting = True
        try:
            async for chunk, stamp in reader.chunks(now_ms, getattr(clock, "from_monotonic", None)):
                if chunk is not ROTATED and not chunk:
                    return
                yield chunk, stamp
        finally:
            self._waiting = False

    async def _follow(self, source: Input):
        """Lines appended to ``source.path`` forever, like ``tail -F``, as
        ``(name, chunk, arrival)``: see :class:`~.follow.Follower` (rotation, the files
        rotated away read until quiet, truncation).

        Waits for the file if it does not exist yet. A named pipe never grows or rotates:
        each writer's lines in turn.
        """
        fd = await self._open_when_there(source.path)
        if fd is None:
            async for chunk, arrival in self._thread_chunks(None, source.name, path=source.path, reopen=True):
                yield source.name, chunk, arrival
            return
        clock = self._clock
        follower = Follower(source, fd, self._files, self._chunk_bytes, self._rotate_wait_ms,
                            clock.now_ms if clock is not None else None, self._set_waiting)
        self._cleanup.append(follower.close)
        try:
            async for item in follower.chunks():
                yield item
        finally:
            follower.close()

    async def _open_when_there(self, path: str) -> int | None:
        """Open ``path``, waiting (polling) while it does not exist, as ``tail -F`` does.
        None for a named pipe: opening one waits for a writer, so the reader thread does."""
        while True:
            if _is_named_pipe(path):
                return None
            try:
                return os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                self._waiting = True  # nothing to read until it appears
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
            finally:
                self._waiting = False


def _reads_stdin(source: Input) -> bool:
    try:
        return source.stream is not None and source.stream.fileno() == 0
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def _is_named_pipe(path: str) -> bool:
    """Whether ``path`` is a named pipe (FIFO), which only a thread may open: opening one
    waits for a writer."""
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def _regular_file_bytes(inputs: Sequence[Input]) -> int | None:
    """Total size of the inputs if all are regular files read once, else None.

    A gzip input gives None too: what is read of it is counted in decompressed bytes,
    which its size on disk cannot measure."""
    total = 0
    for source in inputs:
        if source.path is None or source.follow or is_gzip(source.path):
            return None
        try:
            total += os.stat(source.path).st_size
        except OSError:
            return None
    return total

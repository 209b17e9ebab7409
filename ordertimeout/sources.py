"""Sources: bytes from stdin or files, in large chunks, without blocking the event loop.

Pipes, terminals and sockets are read through asyncio's pipe transport, so a quiet input
never stops timers from firing. Regular files never block for long, so they are read
directly in big chunks. Either way nothing is read ahead beyond a bounded buffer: when
the consumer stops (a slow stdout), reading stops too, and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
from dataclasses import dataclass
from typing import AsyncIterator, BinaryIO, Sequence

__all__ = ["Input", "ChunkReader", "SourceError", "END", "ROTATED", "CHUNK_BYTES", "is_gzip"]

#: Bytes per read: big enough that per-chunk overhead vanishes next to per-line work.
CHUNK_BYTES = 1 << 20
#: Bytes a pipe may buffer before its transport pauses reading.
PIPE_BUFFER_BYTES = 1 << 18
#: Bytes per chunk from a pipe: live input is worked through in slices small enough
#: (a few ms) that processing-time timers are never held up long by a burst.
PIPE_CHUNK_BYTES = 1 << 16
#: How often a followed file is checked for new lines, rotation and truncation.
FOLLOW_POLL_SECONDS = 0.05


class SourceError(Exception):
    """An input could not be opened or read; the message names it."""


@dataclass(frozen=True)
class Input:
    """One input: a display ``name`` and either a ``path`` or an open binary ``stream``."""

    name: str
    path: str | None = None
    stream: BinaryIO | None = None
    follow: bool = False
    start_offset: int = 0


#: Marks the end of every input.
END = None


class _Rotated(bytes):
    """The chunk marking that a followed file was replaced (rotated or truncated)."""


#: Yielded as a chunk when a followed file starts over: finish the old last line and
#: restart byte offsets and line numbers.
ROTATED = _Rotated()


class ChunkReader:
    """Reads ``inputs`` one after another; ``get()`` returns ``(name, chunk)`` items.

    An empty chunk ends one input (so its last line without a newline can be finished);
    :data:`END` follows the last input.
    """

    def __init__(self, inputs: Sequence[Input], chunk_bytes: int = CHUNK_BYTES) -> None:
        self._inputs = list(inputs)
        self._chunk_bytes = chunk_bytes
        self._items: AsyncIterator | None = None
        self._next: asyncio.Future | None = None
        self._cleanup: list = []
        self.bytes_read = 0
        self._total_bytes = _regular_file_bytes(self._inputs)

    def progress(self) -> float | None:
        """Share of the input read so far, when every input is a finite regular file."""
        if not self._total_bytes:
            return None
        return min(1.0, self.bytes_read / self._total_bytes)

    def start(self) -> None:
        """Prepare reading (call from inside the running loop)."""
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
        for source in self._inputs:
            chunks = self._follow(source.path, source.start_offset) if source.follow else self._chunks(source)
            try:
                async for chunk in chunks:
                    self.bytes_read += len(chunk)
                    yield source.name, chunk
            except OSError as error:
                raise SourceError(f"cannot read {source.name}: {error.strerror or error}") from None
            yield source.name, b""

    async def _chunks(self, source: Input):
        if source.path is not None and is_gzip(source.path):
            async for chunk in _gzip_chunks(source.path, source.start_offset, self._chunk_bytes):
                yield chunk
            return
        if source.path is not None:
            fd = os.open(source.path, os.O_RDONLY)
            if source.start_offset:
                os.lseek(fd, source.start_offset, os.SEEK_SET)
            try:
                while chunk := os.read(fd, self._chunk_bytes):
                    yield chunk
                    await asyncio.sleep(0)  # let timers and signals in between chunks
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
                yield chunk
            return
        if stat.S_ISREG(os.fstat(fd).st_mode):  # `< file`: a regular file on stdin
            while chunk := os.read(fd, self._chunk_bytes):
                yield chunk
                await asyncio.sleep(0)
            return
        reader = await self._open_pipe(fd)
        while chunk := await reader.read(min(self._chunk_bytes, PIPE_CHUNK_BYTES)):
            yield chunk

    async def _follow(self, path: str, start_offset: int = 0):
        """Lines appended to ``path`` forever, like ``tail -F``.

        Survives rotation (the name now points at a new file: finish the old one, then
        read the new one from its start) and truncation (the file got shorter than what
        was read: read again from its start). An empty chunk marks each switch, so a last
        line without its newline is finished rather than glued to the next file's first.
        """
        fd = os.open(path, os.O_RDONLY)
        opened = [fd]
        self._cleanup.append(lambda: os.close(opened[0]))
        position = start_offset if os.fstat(fd).st_size >= start_offset else 0
        os.lseek(fd, position, os.SEEK_SET)
        while True:
            chunk = os.read(fd, self._chunk_bytes)
            if chunk:
                position += len(chunk)
                yield chunk
                await asyncio.sleep(0)
                continue
            try:
                named = os.stat(path)
            except FileNotFoundError:
                named = None  # between rename and re-create: keep waiting on the old file
            current = os.fstat(fd)
            if named is not None and (named.st_ino, named.st_dev) != (current.st_ino, current.st_dev):
                while chunk := os.read(fd, self._chunk_bytes):  # what came before the rename
                    yield chunk
                yield ROTATED
                os.close(fd)
                fd = opened[0] = os.open(path, os.O_RDONLY)
                position = 0
                continue
            if current.st_size < position:
                yield ROTATED
                os.lseek(fd, 0, os.SEEK_SET)
                position = 0
                continue
            await asyncio.sleep(FOLLOW_POLL_SECONDS)

    async def _open_pipe(self, fd: int) -> asyncio.StreamReader:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=PIPE_BUFFER_BYTES, loop=loop)
        was_blocking = os.get_blocking(fd)
        pipe = os.fdopen(fd, "rb", buffering=0, closefd=False)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe
        )

        def close() -> None:
            transport.close()
            # The transport made the descriptor non-blocking; a terminal shared with
            # the shell must get its mode back.
            try:
                os.set_blocking(fd, was_blocking)
            except OSError:
                pass  # already closed by the other side: nothing to restore

        self._cleanup.append(close)
        return reader


def _regular_file_bytes(inputs: Sequence[Input]) -> int | None:
    """Total size of the inputs if all are regular files read once, else None."""
    total = 0
    for source in inputs:
        if source.path is None or source.follow:
            return None
        try:
            total += os.stat(source.path).st_size
        except OSError:
            return None
    return total


class Overlong(bytes):
    """A line longer than the limit, in place of the line: its first bytes, and ``size``."""

    size: int

    def __new__(cls, prefix: bytes, size: int) -> "Overlong":
        line = super().__new__(cls, prefix)
        line.size = size
        return line


class LineSplitter:
    """Cuts chunks into lines, never holding more than ``max_line_bytes`` of one line.

    ``push`` returns the complete lines of a chunk (without newlines), ``finish`` the last
    one of an input that ends without a newline. A line that outgrows the limit is
    skipped up to its newline without being kept, and comes out as an :class:`Overlong`
    carrying only its first bytes. ``offset`` is the byte position just after the last
    complete line handed out, counted from ``offset`` given at the start.
    """

    PREFIX_BYTES = 256

    def __init__(self, max_line_bytes: int, offset: int = 0) -> None:
        self.max_line_bytes = max_line_bytes
        self._received = offset
        self._carry = b""
        self._skipping = 0  # bytes of an over-long line skipped so far (0: not skipping)
        self._prefix = b""

    @property
    def offset(self) -> int:
        """Byte position just after the last complete line."""
        return self._received - len(self._carry) - self._skipping

    def push(self, chunk: bytes) -> list[bytes]:
        """The lines completed by ``chunk``."""
        self._received += len(chunk)
        head = []
        if self._skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._skipping += len(chunk)
                return []
            head.append(Overlong(self._prefix, self._skipping + newline))
            self._skipping = 0
            chunk = chunk[newline + 1 :]
        lines = (self._carry + chunk if self._carry else chunk).split(b"\n")
        self._carry = lines.pop()
        if len(self._carry) > self.max_line_bytes:
            self._skipping, self._prefix = len(self._carry), self._carry[: self.PREFIX_BYTES]
            self._carry = b""
        return head + lines if head else lines

    def finish(self) -> list[bytes]:
        """End of input: the last line if it had no newline."""
        if self._skipping:
            line, self._skipping = Overlong(self._prefix, self._skipping), 0
            return [line]
        line, self._carry = self._carry, b""
        return [line] if line else []


# -- gzip-compressed files ----------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str) -> bool:
    """Whether ``path`` is a gzip file: its name ends in ``.gz`` or it starts with gzip's
    magic bytes (a named pipe or a missing file is not)."""
    if path.endswith(".gz"):
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(2) == _GZIP_MAGIC
    except OSError:
        return False


async def _gzip_chunks(path: str, start_offset: int, chunk_bytes: int):
    """The decompressed bytes of a gzip file in chunks, from ``start_offset`` (counted in
    decompressed bytes, as line offsets are). A damaged file is an ``OSError`` (the reader
    reports it as the input's failure)."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as stream:
            if start_offset:
                stream.seek(start_offset)
            while chunk := stream.read1(chunk_bytes):
                yield chunk
                await asyncio.sleep(0)  # let timers and signals in between chunks
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise OSError(f"not a complete gzip file ({error})") from None

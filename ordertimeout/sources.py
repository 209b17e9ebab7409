"""Sources: bytes from stdin or files, in large chunks, without blocking the event loop.

Regular files never block for long, so they are read directly in big chunks. Anything
else (pipes, terminals, /dev/null and other devices, which the event loop cannot always
poll) is read by a thread that stamps each chunk with its arrival time on the run's
clock, so a line's processing time is when it came, not when the loop got to it.
Either way nothing is read ahead beyond a bounded buffer: when the consumer stops (a
slow stdout), reading stops too, and memory stays bounded.

Files are also known by identity (:class:`FileIdentity`: resolved path, device, inode
and a fingerprint of the first bytes, as log shippers do), so a resume offset is found
however the file is named and refused when the file was replaced or truncated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import os
import stat
import threading
from dataclasses import dataclass
from typing import AsyncIterator, BinaryIO, NamedTuple, Sequence

__all__ = [
    "Input", "ChunkReader", "SourceError", "END", "ROTATED", "CHUNK_BYTES",
    "FileIdentity", "SavedPosition", "resume_position", "resume_inputs", "is_gzip",
]

#: Bytes per read: big enough that per-chunk overhead vanishes next to per-line work.
CHUNK_BYTES = 1 << 20
#: Bytes per read from a pipe or device: live input is worked through in slices small
#: enough (a few ms) that processing-time timers are never held up long by a burst.
PIPE_CHUNK_BYTES = 1 << 16
#: Chunks a reader thread may have read ahead of the consumer.
READ_AHEAD_CHUNKS = 4
#: How often a followed file is checked for new lines, rotation and truncation.
FOLLOW_POLL_SECONDS = 0.05
#: Leading bytes of a file that fingerprint it.
FINGERPRINT_BYTES = 1024


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


# -- file identity ----------------------------------------------------------------------


class FileIdentity(NamedTuple):
    """Which file an input is: resolved ``path``, ``device``, ``inode`` and its first
    bytes as far as they were read (``head``, at most :data:`FINGERPRINT_BYTES`)."""

    path: str
    device: int
    inode: int
    head: bytes

    def fingerprint(self, upto: int) -> tuple[int, str]:
        """(size, digest) of the first ``min(upto, len(head))`` bytes."""
        size = min(upto, len(self.head))
        return size, _digest(self.head[:size])


class SavedPosition(NamedTuple):
    """A file's resume point as a checkpoint keeps it."""

    device: int
    inode: int
    head_size: int
    head_digest: str
    offset: int
    line: int


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def resume_position(saved: dict[str, SavedPosition], path: str) -> tuple[int, int, str | None]:
    """Where to start reading ``path``: ``(offset, line, notice)``.

    The saved position is found by the resolved path, or else by device and inode (the
    file was moved). It is used only if it is still the same file: same device and inode,
    at least as long as the offset, and the same first bytes. Otherwise the file is read
    from its start and ``notice`` says why.
    """
    resolved = os.path.realpath(path)
    try:
        current = os.stat(resolved)
    except OSError:
        return 0, 0, None  # not there (yet): nothing to resume
    position = saved.get(resolved)
    if position is None:
        for candidate in saved.values():
            if (candidate.device, candidate.inode) == (current.st_dev, current.st_ino) and _head_matches(resolved, candidate):
                position = candidate
                break
        else:
            return 0, 0, None
    if (position.device, position.inode) != (current.st_dev, current.st_ino) or not _head_matches(resolved, position):
        return 0, 0, f"{path} was replaced since the last run; reading it from the start"
    # A gzip file's offsets count decompressed bytes, so its size says nothing of them.
    if current.st_size < position.offset and not is_gzip(resolved):
        return 0, 0, f"{path} was truncated since the last run; reading it from the start"
    return position.offset, position.line, None


def resume_inputs(saved: dict[str, SavedPosition], inputs: Sequence[Input]):
    """The inputs continued from a checkpoint's ``saved`` positions.

    Returns ``(inputs, positions, notices)``: the inputs with their start offsets set,
    the (offset, line) each named file resumes at, and one notice per file read from its
    start again because it was replaced or truncated.
    """
    resumed, positions, notices = [], {}, []
    for source in inputs:
        if source.path is not None:
            offset, line, notice = resume_position(saved, source.path)
            if notice is not None:
                notices.append(notice)
            if offset:
                positions[source.name] = (offset, line)
                source = dataclasses.replace(source, start_offset=offset)
        resumed.append(source)
    return resumed, positions, notices


def _head_matches(path: str, position: SavedPosition) -> bool:
    try:
        with open(path, "rb") as handle:
            return _digest(handle.read(position.head_size)) == position.head_digest
    except OSError:
        return False


class _OpenFile:
    """A file being read: its identity, with the head filled in as reading goes."""

    def __init__(self, fd: int, path: str, position: int, compressed: bool = False) -> None:
        info = os.fstat(fd)
        # A compressed file's head is taken whole at once: its reads are decompressed bytes.
        head = os.pread(fd, FINGERPRINT_BYTES, 0) if position or compressed else b""
        self.identity = FileIdentity(os.path.realpath(path), info.st_dev, info.st_ino, head)
        self.position = position

    def read(self, chunk: bytes) -> None:
        head = self.identity.head
        if len(head) < FINGERPRINT_BYTES and self.position == len(head):
            self.identity = self.identity._replace(head=head + chunk[: FINGERPRINT_BYTES - len(head)])
        self.position += len(chunk)


# -- reading ------------------------------------------------------------------------------


class ChunkReader:
    """Reads ``inputs`` one after another; ``get()`` returns ``(name, chunk, arrival)``.

    ``arrival`` is the epoch-ms moment a reader thread read the chunk, on the clock
    given to :meth:`start`, or None for a chunk read directly (a regular file: it is
    read when it is used). An empty chunk ends one input (so its last line without a
    newline can be finished); :data:`END` follows the last input.
    """

    def __init__(self, inputs: Sequence[Input], chunk_bytes: int = CHUNK_BYTES) -> None:
        self._inputs = list(inputs)
        self._chunk_bytes = chunk_bytes
        self._items: AsyncIterator | None = None
        self._next: asyncio.Future | None = None
        self._cleanup: list = []
        self._files: dict[str, _OpenFile] = {}
        self._clock = None
        self.bytes_read = 0
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
        for source in self._inputs:
            chunks = self._follow(source) if source.follow else self._chunks(source)
            try:
                async for chunk, arrival in chunks:
                    self.bytes_read += len(chunk)
                    yield source.name, chunk, arrival
            except OSError as error:
                raise SourceError(f"cannot read {source.name}: {error.strerror or error}") from None
            yield source.name, b"", None

    async def _chunks(self, source: Input):
        """(chunk, arrival) pairs of one input that is not followed."""
        if source.path is not None and is_gzip(source.path):
            # Known by the compressed file's identity; its offsets count decompressed bytes.
            fd = os.open(source.path, os.O_RDONLY)
            try:
                self._files[source.name] = _OpenFile(fd, source.path, source.start_offset, compressed=True)
            finally:
                os.close(fd)
            async for chunk in _gzip_chunks(source.path, source.start_offset, self._chunk_bytes):
                yield chunk, None
            return
        if source.path is not None:
            fd = os.open(source.path, os.O_RDONLY)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # a named pipe or a device
                    async for item in self._thread_chunks(fd, source.name):
                        yield item
                    return
                opened = self._files[source.name] = _OpenFile(fd, source.path, source.start_offset)
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

    async def _file_chunks(self, fd: int, opened: _OpenFile | None):
        """A regular file, read directly to its current end in big chunks."""
        while chunk := os.read(fd, self._chunk_bytes):
            if opened is not None:
                opened.read(chunk)
            yield chunk, None
            await asyncio.sleep(0)  # let timers and signals in between chunks

    async def _thread_chunks(self, fd: int, name: str):
        """A pipe, terminal or device, read by a thread that stamps each chunk's arrival.

        The thread reads at most :data:`READ_AHEAD_CHUNKS` ahead (bounded memory,
        backpressure on the writer). It blocks in ``read`` where no event loop can help
        (``/dev/null`` cannot be polled, a terminal may be shared); it is a daemon, so a
        run that stops while it waits is not held up by it.
        """
        loop = asyncio.get_running_loop()
        arrived: asyncio.Queue = asyncio.Queue()
        slots = threading.Semaphore(READ_AHEAD_CHUNKS)
        stopping = threading.Event()
        now_ms = self._clock.now_ms if self._clock is not None else None
        size = min(self._chunk_bytes, PIPE_CHUNK_BYTES)

        def read() -> None:
            while True:
                slots.acquire()
                if stopping.is_set():
                    return
                try:
                    chunk: bytes | OSError = os.read(fd, size)
                except OSError as error:
                    chunk = error
                stamp = now_ms() if now_ms is not None else None
                try:
                    loop.call_soon_threadsafe(arrived.put_nowait, (chunk, stamp))
                except RuntimeError:
                    return  # the loop is gone: nobody is reading any more
                if not chunk or isinstance(chunk, OSError):
                    return

        def stop() -> None:
            stopping.set()
            slots.release()

        thread = threading.Thread(target=read, name=f"read {name}", daemon=True)
        self._cleanup.append(stop)
        thread.start()
        while True:
            chunk, stamp = await arrived.get()
            slots.release()
            if isinstance(chunk, OSError):
                raise chunk
            if not chunk:
                return
            yield chunk, stamp

    async def _follow(self, source: Input):
        """Lines appended to ``source.path`` forever, like ``tail -F``.

        Waits for the file if it does not exist yet. Survives rotation (the name now
        points at a new file: finish the old one, then read the new one from its start)
        and truncation (the file got shorter than what was read: read again from its
        start). An empty chunk marks each switch, so a last line without its newline is
        finished rather than glued to the next file's first.
        """
        path, name = source.path, source.name
        fd = await self._open_when_there(path)
        opened = [fd]
        self._cleanup.append(lambda: os.close(opened[0]))
        position = source.start_offset if os.fstat(fd).st_size >= source.start_offset else 0
        os.lseek(fd, position, os.SEEK_SET)
        current_file = self._files[name] = _OpenFile(fd, path, position)
        while True:
            chunk = os.read(fd, self._chunk_bytes)
            if chunk:
                position += len(chunk)
                current_file.read(chunk)
                yield chunk, None
                await asyncio.sleep(0)
                continue
            try:
                named = os.stat(path)
            except FileNotFoundError:
                named = None  # between rename and re-create: keep waiting on the old file
            current = os.fstat(fd)
            if named is not None and (named.st_ino, named.st_dev) != (current.st_ino, current.st_dev):
                while chunk := os.read(fd, self._chunk_bytes):  # what came before the rename
                    yield chunk, None
                yield ROTATED, None
                os.close(fd)
                fd = opened[0] = os.open(path, os.O_RDONLY)
                position = 0
                current_file = self._files[name] = _OpenFile(fd, path, 0)
                continue
            if current.st_size < position:
                yield ROTATED, None
                os.lseek(fd, 0, os.SEEK_SET)
                position = 0
                current_file = self._files[name] = _OpenFile(fd, path, 0)
                continue
            await asyncio.sleep(FOLLOW_POLL_SECONDS)

    @staticmethod
    async def _open_when_there(path: str) -> int:
        """Open ``path``, waiting (polling) while it does not exist, as ``tail -F`` does."""
        while True:
            try:
                return os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)


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

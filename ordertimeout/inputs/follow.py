"""Following a file like ``tail -F``, and the files rotated away from it until they go quiet.

A followed path is read as it grows. When the name comes to point at another file (log
rotation without copytruncate: rename, then a new file), the old file is not dropped: the
logger keeps writing to it until it reopens its log (between logrotate's rename and its
``postrotate`` signal), so it is read on, beside the new one, until it has been quiet for
the rotate-wait (Fluent Bit's ``Rotate_Wait``). Each poll reads the rotated files first
(their lines are the older), then the path: lines are merged by arrival, at the poll's
granularity.

A rotated file's lines go on under a name of their own (:func:`~.files.rotated_name`,
``events.jsonl (rotated 1)``), saved under a key of their own (:func:`~.files.rotated_key`).
The follower says so with a :func:`handed_over` chunk on the path's name: the host moves
what it had of the old file (its unfinished line, offset and line number) to the new name
and starts the path again at byte 0. A rotated file that went quiet ends with
:data:`DRAINED`: its last line is finished and its end kept, so a restart neither reads it
again nor skips it. A truncated file (copytruncate) is read again from its start after a
:data:`~.arrivals.ROTATED` chunk, as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Callable

from .arrivals import ROTATED
from .files import Input, OpenFile, moved_since_resume, next_slot, rotated_key, rotated_name

__all__ = ["Follower", "HandedOver", "handed_over", "DRAINED", "FOLLOW_POLL_SECONDS"]

#: How often a followed file is checked for new lines, rotation and truncation.
FOLLOW_POLL_SECONDS = 0.05


class HandedOver(bytes):
    """The chunk marking that the file read under an input's name was rotated away: what
    was read of it goes on under ``rest``, and the name starts again with a new file."""

    rest: str


def handed_over(rest: str) -> HandedOver:
    """A :class:`HandedOver` chunk naming ``rest``."""
    chunk = HandedOver()
    chunk.rest = rest
    return chunk


class _Drained(bytes):
    """The chunk marking that a rotated file went quiet and is done."""


#: Yielded as a chunk when a rotated file has been quiet for the rotate-wait: finish its
#: last line and keep its end (its offsets do not start over).
DRAINED = _Drained()


@dataclasses.dataclass
class _Draining:
    name: str
    fd: int
    opened: OpenFile
    quiet_since: int  # ms on the follower's clock: when a read last found lines


class Follower:
    """Follows ``source.path`` (open as ``fd``, which it now owns); :meth:`chunks` gives
    ``(name, chunk, arrival)`` for ever.

    ``files`` is the reader's map of names to the file each is reading (kept current, so
    the host's checkpoint names the right file at every chunk). ``now_ms`` measures the
    rotate-wait (the run's clock). ``source.rotated`` are files a restart still reads.
    ``waiting(True)`` is called while every file is read to its end (``False`` when a poll
    may find more), for a host that asks whether its inputs are caught up.
    """

    def __init__(self, source: Input, fd: int, files: dict[str, OpenFile], chunk_bytes: int, rotate_wait_ms: int,
                 now_ms: Callable[[], int] | None = None, waiting: Callable[[bool], None] | None = None) -> None:
        self._source = source
        self._fd: int | None = fd
        self._files = files
        self._chunk_bytes = chunk_bytes
        self._rotate_wait_ms = rotate_wait_ms
        self._now_ms = now_ms or (lambda: time.monotonic_ns() // 1_000_000)
        self._draining: list[_Draining] = []
        self._waiting = waiting or (lambda waits: None)  # told while every file is read to its end

    def close(self) -> None:
        """Close every file still open."""
        for draining in self._draining:
            os.close(draining.fd)
        self._draining.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def chunks(self):
        """What is appended to the path (opened as ``fd``, given) and to the files rotated away
        from it, for ever: ``(name, chunk, None)`` and the marker chunks."""
        source, files, name = self._source, self._files, self._source.name
        for rest in source.rotated:
            self._resume_rest(rest)
        fd = self._fd
        moved = moved_since_resume(source, os.fstat(fd))
        if moved is not None:  # rotated since the checkpoint was read: its rest first
            slot = next_slot(name, [draining.name for draining in self._draining])
            rest = dataclasses.replace(source, name=rotated_name(name, slot), path=moved, follow=False, rotated=(),
                                       checkpoint_as=rotated_key(source.path, slot), resumes=None)
            if moved:
                self._resume_rest(rest)
            source = dataclasses.replace(source, start_offset=0)
        position = source.start_offset if os.fstat(fd).st_size >= source.start_offset else 0
        os.lseek(fd, position, os.SEEK_SET)
        current = files[name] = OpenFile(fd, source.path, position)
        if moved is not None:  # the host moves the resume point to the rest's name
            yield name, handed_over(rest.name) if moved else ROTATED, None
        # Each file read counts for the checkpoint from the start, even while nothing new
        # comes: were the path rotated away before its first line, or a rotated file's
        # writer to add a line only after this run, a later run still knows to read it.
        for draining in list(self._draining):
            yield draining.name, b"", None
        yield name, b"", None
        while True:
            # What each file holds now is taken before any of it is handed on (the host
            # works a chunk before the next read): a line written to the old file before
            # one written to the new file is never read after it.
            taken = []
            for draining in list(self._draining):  # the older lines first
                chunk = os.read(draining.fd, self._chunk_bytes)
                if chunk:
                    draining.opened.read(chunk)
                    draining.quiet_since = self._now_ms()
                    taken.append((draining.name, chunk, None))
                elif self._now_ms() - draining.quiet_since >= self._rotate_wait_ms:
                    self._draining.remove(draining)
                    os.close(draining.fd)
                    taken.append((draining.name, DRAINED, None))
            chunk = os.read(self._fd, self._chunk_bytes)
            if chunk:
                position += len(chunk)
                current.read(chunk)
                taken.append((name, chunk, None))
            for item in taken:
                yield item
            if chunk or taken:
                await asyncio.sleep(0)  # let timers and signals in between chunks
                continue
            try:
                named = os.stat(source.path)
            except FileNotFoundError:
                named = None  # between rename and re-create: keep waiting on the old file
            info = os.fstat(self._fd)
            if named is not None and (named.st_ino, named.st_dev) != (info.st_ino, info.st_dev):
                try:
                    new_fd = os.open(source.path, os.O_RDONLY)
                except FileNotFoundError:
                    new_fd = None  # gone again already: look at the next poll
                if new_fd is not None:
                    rest = self._hand_over(current)
                    self._fd, position = new_fd, 0
                    current = files[name] = OpenFile(new_fd, source.path, 0)
                    yield name, handed_over(rest), None
                    continue
            if info.st_size < position:  # truncated: the same file, written again from its start
                os.lseek(self._fd, 0, os.SEEK_SET)
                position = 0
                current = files[name] = OpenFile(self._fd, source.path, 0)
                yield name, ROTATED, None
                continue
            # Every file read to its end: nothing is unread until the next poll finds more.
            self._waiting(True)
            try:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
            finally:
                self._waiting(False)

    def _hand_over(self, current: OpenFile) -> str:
        """Go on reading the path's old file under a rotated name; returns that name."""
        slot = next_slot(self._source.name, [draining.name for draining in self._draining])
        rest = rotated_name(self._source.name, slot)
        current.identity = current.identity._replace(path=rotated_key(self._source.path, slot))
        self._files[rest] = current
        self._draining.append(_Draining(rest, self._fd, current, self._now_ms()))
        return rest

    def _resume_rest(self, rest: Input) -> None:
        """A restart: read on a rotated file from where the last run was, until quiet."""
        try:
            fd = os.open(rest.path, os.O_RDONLY)
        except OSError:
            return  # gone since resume_inputs found it: nothing left to read
        os.lseek(fd, rest.start_offset, os.SEEK_SET)
        opened = self._files[rest.name] = OpenFile(fd, rest.path, rest.start_offset, key=rest.checkpoint_as)
        self._draining.append(_Draining(rest.name, fd, opened, self._now_ms()))

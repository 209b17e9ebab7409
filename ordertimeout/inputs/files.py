"""Files known by identity, so a run resumes a file however it is named, and never a
file replaced or truncated since.

A file is its resolved path, device and inode, plus a fingerprint of its first bytes (as
log shippers do). A checkpoint keeps, per file, a :class:`SavedPosition`; a later run asks
:func:`resume_inputs` where each of its inputs starts.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from typing import BinaryIO, NamedTuple, Sequence

__all__ = ["Input", "FileIdentity", "SavedPosition", "resume_position", "resume_inputs", "is_gzip", "FINGERPRINT_BYTES"]

@dataclasses.dataclass(frozen=True)
class Input:
    """One input: a display ``name`` and either a ``path`` or an open binary ``stream``."""

    name: str
    path: str | None = None
    stream: BinaryIO | None = None
    follow: bool = False
    start_offset: int = 0


#: Leading bytes of a file that fingerprint it.
FINGERPRINT_BYTES = 1024


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
    import hashlib  # here: only runs that checkpoint (--state) digest, and start-up is shared by all

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
    if (position.device, position.inode) != (current.st_dev, current.st_ino):
        return 0, 0, f"{path} was replaced since the last run; reading it from the start"
    # A gzip file's offsets count decompressed bytes, so its size says nothing of them.
    shorter = current.st_size < position.offset and not is_gzip(resolved)
    if shorter or not _head_matches(resolved, position):
        return 0, 0, f"{path} was truncated (or rewritten) since the last run; reading it from the start"
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
            rotated = _rotated_to(saved, source.path) if notice is not None and offset == 0 else None
            if rotated is not None:  # first what was appended to it before it was renamed
                old_path, old_offset, old_line = rotated
                notice = (f"{source.path} was rotated to {old_path} since the last run; reading the rest "
                          f"of {old_path}, then {source.path} from the start")
                positions[old_path] = (old_offset, old_line)
                resumed.append(dataclasses.replace(source, name=old_path, path=old_path, follow=False,
                                                   start_offset=old_offset))
            if notice is not None:
                notices.append(notice)
            if offset:
                positions[source.name] = (offset, line)
                source = dataclasses.replace(source, start_offset=offset)
        resumed.append(source)
    return resumed, positions, notices


def _rotated_to(saved: dict[str, SavedPosition], path: str) -> tuple[str, int, int] | None:
    """Where the file last read under ``path`` went, if it was renamed beside it (log
    rotation: ``events.jsonl`` became ``events.jsonl.1``) and has lines after its saved
    offset: ``(its path, offset, line)``."""
    resolved = os.path.realpath(path)
    position = saved.get(resolved)
    if position is None:
        return None
    folder = os.path.dirname(resolved)
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.inode() != position.inode or entry.path == resolved:
                    continue
                info = entry.stat(follow_symlinks=False)
                if (stat.S_ISREG(info.st_mode) and info.st_dev == position.device and info.st_size > position.offset
                        and _head_matches(entry.path, position)):
                    return entry.path, position.offset, position.line
    except OSError:
        return None
    return None


def _head_matches(path: str, position: SavedPosition) -> bool:
    try:
        with open(path, "rb") as handle:
            return _digest(handle.read(position.head_size)) == position.head_digest
    except OSError:
        return False


class OpenFile:
    """A file being read: its identity, with the head filled in as reading goes."""

    def __init__(self, fd: int, path: str, position: int, compressed: bool = False) -> None:
        info = os.fstat(fd)
        # A compressed file's head is taken whole at once: its reads are decompressed bytes.
        head = os.pread(fd, FINGERPRINT_BYTES, 0) if position or compressed else b""
        self.identity = FileIdentity(os.path.realpath(path), info.st_dev, info.st_ino, head)
        self.position = position
        self._head_complete = compressed

    def read(self, chunk: bytes) -> None:
        head = self.identity.head
        if not self._head_complete and len(head) < FINGERPRINT_BYTES and self.position == len(head):
            self.identity = self.identity._replace(head=head + chunk[: FINGERPRINT_BYTES - len(head)])
        self.position += len(chunk)


# -- gzip-compressed files ----------------------------------------------------------------


#: The first bytes of every gzip stream.
GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str) -> bool:
    """Whether ``path`` is a gzip file: its name ends in ``.gz`` or it starts with gzip's
    magic bytes (a named pipe or a missing file is not)."""
    if path.endswith(".gz"):
        return True
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC
    except OSError:
        return False

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
import time
from typing import BinaryIO, NamedTuple, Sequence

__all__ = [
    "Input", "FileIdentity", "SavedPosition", "resume_position", "resume_inputs", "is_gzip", "FINGERPRINT_BYTES",
    "rotated_name", "rotated_key", "next_slot", "moved_since_resume", "DEFAULT_ROTATE_WAIT_MS",
]

#: How long a file rotated away from a followed path is still read after its last line
#: (``--rotate-wait``; Fluent Bit's ``Rotate_Wait`` has the same default).
DEFAULT_ROTATE_WAIT_MS = 5000


@dataclasses.dataclass(frozen=True)
class Input:
    """One input: a display ``name`` and either a ``path`` or an open binary ``stream``.

    ``checkpoint_as``: the key its resume point is saved under, when not its resolved
    path (a rotated file: :func:`rotated_key`). ``rotated``: with ``follow``, the files
    rotated away from ``path`` that a restart still reads beside it until they are quiet.
    ``resumes``: (device, inode) of the file ``path`` named when ``start_offset`` was taken
    for it (see :func:`moved_since_resume`).
    """

    name: str
    path: str | None = None
    stream: BinaryIO | None = None
    follow: bool = False
    start_offset: int = 0
    checkpoint_as: str | None = None
    rotated: tuple["Input", ...] = ()
    resumes: tuple[int, int] | None = None


def rotated_name(name: str, slot: int) -> str:
    """The name under which the rest of a file rotated away from input ``name`` is read
    (``events.jsonl (rotated 1)``); ``slot`` tells apart files rotated in quick turn."""
    return f"{name} (rotated {slot})"


def rotated_key(path: str, slot: int) -> str:
    """The checkpoint key of a file rotated away from ``path`` (its resolved path, marked:
    no input is ever named so, and the next rotation reuses a slot whose file is done)."""
    return rotated_name(os.path.realpath(path), slot)


def next_slot(name: str, taken) -> int:
    """The lowest slot whose :func:`rotated_name` of input ``name`` is not among ``taken``."""
    taken = set(taken)
    return next(slot for slot in range(1, len(taken) + 2) if rotated_name(name, slot) not in taken)


def moved_since_resume(source: Input, info: os.stat_result) -> str | None:
    """Whether the file found at ``source.path`` (``info``) is another than the one it was
    resumed at: logrotate renamed that one in the moment between :func:`resume_inputs`
    and the opening. Then the path that one has now (found beside it by device and
    inode; its rest is read before the new file, from the start), or ``""`` if it is gone.
    None when it is the same file, or nothing was resumed."""
    if source.resumes is None or (info.st_dev, info.st_ino) == source.resumes:
        return None
    folder = os.path.dirname(os.path.realpath(source.path))
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.inode() == source.resumes[1] and entry.stat(follow_symlinks=False).st_dev == source.resumes[0]:
                    return entry.path
    except OSError:
        pass
    return ""


#: Leading bytes of a file that fingerprint it.
FINGERPRINT_BYTES = 1024


class FileIdentity(NamedTuple):
    """Which file an input is: resolved ``path`` (for a rotated file, the key its
    checkpoint keeps: :func:`rotated_key`), ``device``, ``inode`` and its first bytes as
    far as they were read (``head``, at most :data:`FINGERPRINT_BYTES`)."""

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


def resume_inputs(saved: dict[str, SavedPosition], inputs: Sequence[Input],
                  rotate_wait_ms: int = DEFAULT_ROTATE_WAIT_MS):
    """The inputs continued from a checkpoint's ``saved`` positions.

    Returns ``(inputs, positions, notices)``: the inputs with their start offsets set,
    the (offset, line) each input resumes at, by name, and one notice per file read from
    its start again because it was replaced or truncated.

    Files rotated away from a named path are found again by identity (device, inode and
    first bytes) in the path's folder: the one the path named at the checkpoint, and the
    ones a followed run was still reading beside it (:func:`rotated_key`). Those with
    lines after their saved end, or written to less than ``rotate_wait_ms`` ago (their
    writer may not be done), are read on from there: followed, beside the path until
    quiet (``Input.rotated``); unfollowed, first, one after another, to their ends.
    """
    resumed, positions, notices = [], {}, []
    for source in inputs:
        if source.path is not None:
            offset, line, notice = resume_position(saved, source.path)
            rests = _rotated_rests(saved, source, rotate_wait_ms)
            moved = _rotated_to(saved, source.path, rotate_wait_ms) if notice is not None and offset == 0 else None
            if moved is not None and all(rest.path != moved[0] for rest, _ in rests):
                old_path, old_offset, old_line = moved  # first what was appended to it before it was renamed
                notice = (f"{source.path} was rotated to {old_path} since the last run; reading the rest "
                          f"of {old_path}, then {source.path} from the start")
                slot = next_slot(source.name, [rest.name for rest, _ in rests])
                rests.append((Input(rotated_name(source.name, slot), path=old_path, start_offset=old_offset,
                                    checkpoint_as=rotated_key(source.path, slot)), old_line))
            for rest, rest_line in rests:
                positions[rest.name] = (rest.start_offset, rest_line)
            if source.follow:
                source = dataclasses.replace(source, rotated=tuple(rest for rest, _ in rests))
            else:
                resumed += [rest for rest, _ in rests]
            if notice is not None:
                notices.append(notice)
            if offset:
                positions[source.name] = (offset, line)
                source = dataclasses.replace(source, start_offset=offset)
            try:
                info = os.stat(source.path)
                source = dataclasses.replace(source, resumes=(info.st_dev, info.st_ino))
            except OSError:
                pass
        resumed.append(source)
    return resumed, positions, notices


def _rotated_rests(saved: dict[str, SavedPosition], source: Input, rotate_wait_ms: int) -> list[tuple[Input, int]]:
    """The files a followed run was still reading beside ``source.path`` when it saved
    ``saved``, found again by identity, that are still to be read: lines after their
    saved end, or a write less than ``rotate_wait_ms`` ago. With their line numbers."""
    resolved = os.path.realpath(source.path)
    prefix = rotated_name(resolved, 0)[:-2]  # "<path> (rotated "
    rests, seen = [], set()
    for key, position in sorted(saved.items()):
        slot = key[len(prefix):-1]
        if not (key.startswith(prefix) and key.endswith(")") and slot.isdigit()):
            continue
        found = _find_by_identity(os.path.dirname(resolved), position)
        # (Not the path itself: an inode freed by a deleted old file and taken again.)
        if found is None or found[0] == resolved or (found[1].st_dev, found[1].st_ino) in seen:
            continue
        path, info = found
        seen.add((info.st_dev, info.st_ino))
        if _unread_or_recent(info, position, rotate_wait_ms):
            rests.append((Input(rotated_name(source.name, int(slot)), path=path, start_offset=position.offset,
                                checkpoint_as=key), position.line))
    return rests


def _find_by_identity(folder: str, position: SavedPosition):
    """``(path, stat)`` of the regular file in ``folder`` that is the one saved at
    ``position`` (same device and inode, same first bytes, at least as long), or None."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.inode() != position.inode:
                    continue
                info = entry.stat(follow_symlinks=False)
                if (stat.S_ISREG(info.st_mode) and info.st_dev == position.device and info.st_size >= position.offset
                        and _head_matches(entry.path, position)):
                    return entry.path, info
    except OSError:
        return None
    return None


def _rotated_to(saved: dict[str, SavedPosition], path: str, rotate_wait_ms: int) -> tuple[str, int, int] | None:
    """Where the file last read under ``path`` went, if it was renamed beside it (log
    rotation: ``events.jsonl`` became ``events.jsonl.1``) and is still to be read: lines
    after its saved offset, or a write less than ``rotate_wait_ms`` ago (its writer may
    add more; then it is kept as a rotated file, so a later run reads those).
    ``(its path, offset, line)``."""
    resolved = os.path.realpath(path)
    position = saved.get(resolved)
    if position is None:
        return None
    found = _find_by_identity(os.path.dirname(resolved), position)
    if found is None or found[0] == resolved or not _unread_or_recent(found[1], position, rotate_wait_ms):
        return None
    return found[0], position.offset, position.line


def _unread_or_recent(info: os.stat_result, position: SavedPosition, rotate_wait_ms: int) -> bool:
    return info.st_size > position.offset or time.time_ns() - info.st_mtime_ns < rotate_wait_ms * 1_000_000


def _head_matches(path: str, position: SavedPosition) -> bool:
    try:
        with open(path, "rb") as handle:
            return _digest(handle.read(position.head_size)) == position.head_digest
    except OSError:
        return False


class OpenFile:
    """A file being read: its identity, with the head filled in as reading goes."""

    def __init__(self, fd: int, path: str, position: int, compressed: bool = False, key: str | None = None) -> None:
        info = os.fstat(fd)
        # A compressed file's head is taken whole at once: its reads are decompressed bytes.
        head = os.pread(fd, FINGERPRINT_BYTES, 0) if position or compressed else b""
        self.identity = FileIdentity(key or os.path.realpath(path), info.st_dev, info.st_ino, head)
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

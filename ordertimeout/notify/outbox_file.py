"""The outbox of a state file seen from outside its run: ``ordertimeout outbox STATE``.

In: the path of a ``--state`` file, maybe held by a running ordertimeout. Out: its
outbox rows (a read-only view of the last checkpoint and of the outcomes committed
since: the file is SQLite in WAL mode, whose readers never wait for its writer), and
dead letters moved back to pending.

A running service holds the file with an exclusive ``flock`` (:func:`hold`), beside
SQLite's own locks, so that a second ordertimeout is refused and a reader can tell it is
there. Only that service writes the file: ``--retry-dead`` then becomes a request, a file
``STATE.retry-dead`` that the service looks for every half second
(:func:`take_retry_request`); it moves the dead letters back itself and answers in
``STATE.retry-dead.done`` with how many it moved.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time

from .outbox import _COLUMNS, OUTBOX_SCHEMA, Entry, OutboxError
from .sqlite_outbox import _entry

__all__ = ["hold", "in_use", "read_rows", "retry_dead", "request_retry", "take_retry_request",
           "answer_retry_request", "REQUEST_SUFFIX", "ANSWER_SUFFIX", "REQUEST_WAIT_SECONDS"]

REQUEST_SUFFIX = ".retry-dead"
ANSWER_SUFFIX = ".retry-dead.done"
#: How long ``--retry-dead`` waits for a running service to take its request.
REQUEST_WAIT_SECONDS = 5.0
#: Readers wait this long for a moment when SQLite lets them in (a WAL checkpoint).
READ_BUSY_MS = 2000


def hold(path: str) -> int:
    """Take the file's run lock; the open descriptor holding it (close it to release).
    Raises BlockingIOError when another process holds it."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def in_use(path: str) -> bool:
    """Whether a running ordertimeout holds the state file at ``path``."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # (before any SQLite connection of ours opens the file)


def _open(path: str) -> sqlite3.Connection:
    connection = None
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=READ_BUSY_MS / 1000,
                                     isolation_level=None)
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            raise OutboxError(f"{path} is not an ordertimeout state file")
        if "outbox" not in tables:
            connection.execute(OUTBOX_SCHEMA.split(";")[0])  # an older file: an empty outbox
        return connection
    except BaseException as error:
        # Closed on every failure, the first query's too (Python 3.13 warns about a
        # connection left to the garbage collector, and the file stays locked until then).
        if connection is not None:
            connection.close()
        if not isinstance(error, sqlite3.Error):
            raise
        text = str(error)
        if "locked" in text:
            raise OutboxError(f"state file {path} is in use by an ordertimeout that does not share it "
                              "(an older version): stop it first") from None
        raise OutboxError(f"cannot open state file {path}: {text}") from None


def read_rows(path: str) -> list[Entry]:
    """Every row of the outbox of the state file at ``path``: pending first, then dead.
    Works while a service holds the file: the rows as of its last commit."""
    connection = _open(path)
    try:
        return [_entry(row) for row in connection.execute(
            f"SELECT {_COLUMNS} FROM outbox ORDER BY dead, position")]
    except sqlite3.Error as error:
        raise OutboxError(f"cannot read the outbox of {path}: {error}") from None
    finally:
        connection.close()


def retry_dead(path: str, now: int) -> int:
    """Move every dead letter back to pending, due at ``now``; returns how many. The file
    must not be held by a running service (see :func:`request_retry`)."""
    connection = _open(path)
    try:
        # The age limit counts from here: a dead letter retried gets a fresh --deliver-max-age.
        cursor = connection.execute(
            "UPDATE outbox SET dead = 0, attempts = 0, next_attempt = ?, enqueued = ? WHERE dead = 1", (now, now))
        return cursor.rowcount
    except sqlite3.Error as error:
        raise OutboxError(f"cannot update the outbox of {path}: {error}") from None
    finally:
        connection.close()


def request_retry(path: str, wait: float = REQUEST_WAIT_SECONDS) -> int:
    """Ask the service running on ``path`` to move its dead letters back to pending; how
    many it moved. Raises OutboxError if it did not answer within ``wait`` seconds."""
    request, answer = path + REQUEST_SUFFIX, path + ANSWER_SUFFIX
    _remove(answer)
    try:
        _write_atomically(request, b"retry-dead\n")
    except OSError as error:
        raise OutboxError(f"cannot write the request {request}: {error.strerror}") from None
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            with open(answer, "rb") as handle:
                text = handle.read()
        except FileNotFoundError:
            time.sleep(0.05)
            continue
        _remove(answer)
        return int(text.strip() or 0)
    _remove(request)
    raise OutboxError(f"the ordertimeout running on {path} did not take the request within {wait:g}s "
                      "(an older version, or stopped): nothing was changed")


def take_retry_request(path: str) -> bool:
    """Whether ``ordertimeout outbox PATH --retry-dead`` asked for a retry (taken: asked once)."""
    try:
        os.unlink(path + REQUEST_SUFFIX)
    except OSError:
        return False
    return True


def answer_retry_request(path: str, moved: int) -> None:
    """Tell the waiting ``--retry-dead`` how many dead letters moved back."""
    try:
        _write_atomically(path + ANSWER_SUFFIX, b"%d\n" % moved)
    except OSError:
        pass  # the service has moved them and says so on stderr; the asker times out


def _write_atomically(path: str, data: bytes) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, data)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

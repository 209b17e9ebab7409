"""``ordertimeout outbox STATE``: the outbox table of a state file no run holds, listed,
and its dead letters moved back to pending. In: a path; out: rows (:class:`.outbox.Entry`)
or a count. Raises :class:`.outbox.OutboxError`."""

from __future__ import annotations

import sqlite3

from .outbox import _COLUMNS, OUTBOX_SCHEMA, Entry, OutboxError, _entry

__all__ = ["read_rows", "retry_dead"]


def _open(path: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=0, isolation_level=None)
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as error:
        text = str(error)
        if "locked" in text:
            raise OutboxError(f"state file {path} is in use by a running ordertimeout (stop it first)") from None
        raise OutboxError(f"cannot open state file {path}: {text}") from None
    if "meta" not in tables:
        connection.close()
        raise OutboxError(f"{path} is not an ordertimeout state file")
    if "outbox" not in tables:
        connection.execute(OUTBOX_SCHEMA.split(";")[0])  # an older file: an empty outbox
    return connection


def read_rows(path: str) -> list[Entry]:
    """Every row of the outbox of the state file at ``path``: pending first, then dead."""
    connection = _open(path)
    try:
        return [_entry(row) for row in connection.execute(
            f"SELECT {_COLUMNS} FROM outbox ORDER BY dead, next_attempt, position")]
    except sqlite3.Error as error:
        raise OutboxError(f"cannot read the outbox of {path}: {error}") from None
    finally:
        connection.close()


def retry_dead(path: str, now: int) -> int:
    """Move every dead letter back to pending, due at ``now``; returns how many."""
    connection = _open(path)
    try:
        # The age limit counts from here: a dead letter retried gets a fresh --deliver-max-age.
        cursor = connection.execute(
            "UPDATE outbox SET dead = 0, attempts = 0, next_attempt = ?, enqueued = ? WHERE dead = 1", (now, now))
        return cursor.rowcount
    except sqlite3.Error as error:
        text = str(error)
        if "locked" in text:
            raise OutboxError(f"state file {path} is in use by a running ordertimeout (stop it first)") from None
        raise OutboxError(f"cannot update the outbox of {path}: {text}") from None
    finally:
        connection.close()

"""The outbox in the state file (``--state``): the ``outbox`` table, one row per result and sink.

In: results staged by the runtime's writer. Before they are shown on stdout,
:meth:`SqliteOutbox.hold_staged` commits them as *held* rows, and the checkpoint
transaction that covers their input releases them (:meth:`SqliteOutbox.write_staged`:
the transactional outbox pattern). So after ``kill -9`` every result shown is in the
table, and every other one will be decided again from the input. Held rows left by a run
that died are released by the next run, which does not add the same results (same sink
and id) again when it decides them anew. Out: released rows for the relay
(:mod:`.delivery`), oldest first; a delivered row is deleted, a dead one kept with its
last error. Pending rows wait on disk, not in memory.
"""

from __future__ import annotations

import asyncio
import sqlite3
from itertools import repeat
from typing import Iterable

from ..outputs.sinks import json_line
from .outbox import _COLUMNS, Entry, OutboxError, choose

__all__ = ["SqliteOutbox"]


class SqliteOutbox:
    """The ``outbox`` table of a state file, used through the store's own connection.

    ``sinks`` are the sinks this run delivers to: rows of other sinks (left by a run
    with other options) stay untouched. Every write outside :meth:`write_staged` is one
    small statement, committed with the others of the same turn of the event loop: a crash
    loses at most the outcomes of attempts in flight or just ended.
    """

    durable = True

    #: The ``meta`` row (the state file's) holding the last position a checkpoint released.
    RELEASED = "outbox_released"

    def __init__(self, connection: sqlite3.Connection, sinks: Iterable[str]) -> None:
        self._connection = connection
        self._sinks = tuple(sinks)
        self._staged: list[tuple[str, object, int]] = []  # (sink, result, decided at)
        self._in = "(" + ",".join("?" * len(self._sinks)) + ")"
        self._error: OutboxError | None = None
        # Files from before the relay drained oldest first per sink lack this index.
        self._query("CREATE INDEX IF NOT EXISTS outbox_order ON outbox (sink, dead, position)")
        self._pending, self._dead = (
            self._query(f"SELECT COUNT(*) FROM outbox WHERE dead = {dead} AND sink IN {self._in}", self._sinks)[0][0]
            for dead in (0, 1)
        )
        top = self._query("SELECT COALESCE(MAX(position), 0) FROM outbox")[0][0]
        released = self._released_mark()
        # Rows past the mark were held: shown on stdout by a run that ended before the
        # checkpoint covering their input. They reached stdout, so they are delivered; and
        # when this run decides the same results again from that input, they are not
        # added twice. (Positions are given here, never reused: see _rows.)
        self._again: set[tuple[str, str]] = set() if released is None else set(
            self._query("SELECT sink, id FROM outbox WHERE position > ?", (released,)))
        self._next = max(top, released or 0) + 1
        #: Rows up to this position are deliverable; later ones are held (see hold_staged).
        self._released = self._next - 1
        self._prepared: tuple[int, int, set] | None = None  # rows written, not yet committed

    def _released_mark(self) -> int | None:
        try:
            row = self._connection.execute("SELECT value FROM meta WHERE name = ?", (self.RELEASED,)).fetchone()
        except sqlite3.Error:
            return None  # an outbox without the state file's tables: no mark
        return None if row is None else int(row[0])

    def _query(self, sql: str, parameters=()) -> list[tuple]:
        if self._error is not None:
            raise self._error
        try:
            return self._connection.execute(sql, parameters).fetchall()
        except sqlite3.Error as error:
            raise OutboxError(f"cannot use the outbox of the state file: {error}") from None

    def _write(self, sql: str, parameters) -> None:
        """Record an attempt's outcome. Outcomes of one turn of the event loop share one
        transaction, committed at the end of the turn (a commit per delivery would cost
        more than the delivery); a crash loses at most the outcomes of that turn."""
        if not self._connection.in_transaction:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # used outside a loop: each statement commits itself
                self._query(sql, parameters)
                return
            self._query("BEGIN")
            loop.call_soon(self._commit_soon)
        self._query(sql, parameters)

    def _commit_soon(self) -> None:
        try:
            self.flush()
        except OutboxError as error:
            self._error = error  # raised by the next use, in the relay

    def flush(self) -> None:
        """Commit the outcomes recorded so far (before a checkpoint, and at the end)."""
        if self._connection.in_transaction:
            try:
                self._connection.execute("COMMIT")
            except sqlite3.Error as error:
                raise OutboxError(f"cannot write the outbox of the state file: {error}") from None

    def add(self, results: list, now: int) -> None:
        """Stage results decided at ``now`` (one entry per sink) for the next checkpoint;
        they are deliverable once it commits."""
        for sink in self._sinks:
            self._staged.extend(zip(repeat(sink), results, repeat(now)))
        self._pending += len(results) * len(self._sinks)

    def add_entries(self, entries: list[Entry]) -> None:
        """Stage ready-made entries (the state file keeps only their result, body and time)."""
        self._staged += [(entry.sink, entry, entry.enqueued) for entry in entries]
        self._pending += len(entries)

    @property
    def staged(self) -> int:
        """Entries waiting for the next checkpoint: staged, or written and held."""
        return len(self._staged) + (self._next - 1 - self._released)

    def _rows(self) -> list[tuple]:
        """The rows of the staged entries, at positions after every row ever in the table
        (so held rows are exactly those past the released mark), less the results a run
        that died had already written (see ``_again``). Applied by :meth:`_applied`."""
        rows, position, again, skipped = [], self._next, self._again, set()
        for sink, item, now in self._staged:
            if again and (sink, item.id) in again and (sink, item.id) not in skipped:
                skipped.add((sink, item.id))
                continue
            body = item.body if type(item) is Entry else json_line(item)[:-1]
            rows.append((position, sink, item.id, item.key, body, now, now))
            position += 1
        self._prepared = (len(self._staged), position, skipped)
        return rows

    def _insert(self, connection: sqlite3.Connection) -> int:
        connection.executemany(
            "INSERT INTO outbox (position, sink, id, key, body, enqueued, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
            self._rows(),
        )
        return len(self._staged)

    def _applied(self, count: int) -> None:
        """The rows of the first ``count`` staged entries are committed."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == count:
            _, self._next, skipped = prepared
            self._again -= skipped
            self._pending -= len(skipped)
        del self._staged[:count]

    def hold_staged(self) -> None:
        """Commit the staged entries now, in a transaction of their own, as held rows: not
        delivered before the checkpoint covering their input releases them, but in the
        file, so a result is in the outbox before it is shown (stdout comes after this).
        Raises :class:`OutboxError` (the rows stay staged) if the file cannot be written."""
        if not self._staged:
            return
        connection = self._connection
        try:
            if not connection.in_transaction:  # (else: outcomes of this turn, committed with these)
                connection.execute("BEGIN")
            count = self._insert(connection)
            connection.execute("COMMIT")
        except sqlite3.Error as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._prepared = None
            raise OutboxError(f"cannot write the outbox of the state file: {error}") from None
        self._applied(count)

    def write_staged(self, connection: sqlite3.Connection) -> int:
        """Insert the staged entries and release every row so far; called inside the
        checkpoint's transaction, which covers the input of all of them."""
        count = self._insert(connection)
        connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (self.RELEASED, str(self._prepared[1] - 1)))
        return count

    def committed(self, count: int) -> None:
        """The checkpoint holding the first ``count`` staged entries committed: those and
        every held row are deliverable."""
        self._applied(count)
        self._released = self._next - 1

    def take(self, sink: str, now: int, count: int, busy: set, busy_keys: set) -> list[Entry]:
        """Up to ``count`` committed entries of ``sink`` to attempt at ``now``, oldest
        first (see :func:`choose`)."""
        if sink not in self._sinks:
            return []

        def candidates():
            after, page = 0, max(64, 2 * (count + len(busy)))
            while True:
                rows = self._query(
                    f"SELECT {_COLUMNS} FROM outbox WHERE sink = ? AND dead = 0 AND position > ?"
                    " AND position <= ? ORDER BY position LIMIT ?", (sink, after, self._released, page))
                for row in rows:
                    yield _entry(row)
                if len(rows) < page:
                    return
                after = rows[-1][0]

        return choose(candidates(), now, count, busy, busy_keys)

    def next_due(self, sink: str, now: int) -> int | None:
        """The earliest next attempt after ``now`` of a committed entry of ``sink``: when an
        entry waiting for its own backoff step may go."""
        return self._query("SELECT MIN(next_attempt) FROM outbox WHERE sink = ? AND dead = 0 AND next_attempt > ?"
                           " AND position <= ?", (sink, now, self._released))[0][0]

    def expired(self, sink: str, before: int, busy: set) -> list[Entry]:
        """Committed pending entries of ``sink`` (not in flight) decided at or before ``before``."""
        rows = self._query(f"SELECT {_COLUMNS} FROM outbox WHERE sink = ? AND dead = 0 AND enqueued <= ?"
                           " AND position <= ? ORDER BY position", (sink, before, self._released))
        return [_entry(row) for row in rows if row[0] not in busy]

    def delivered(self, entry: Entry) -> None:
        """The sink accepted ``entry``: delete its row."""
        self._write("DELETE FROM outbox WHERE position = ?", (entry.position,))
        self._pending -= 1

    def retry(self, entry: Entry) -> None:
        """Record a failed attempt (attempts, next attempt and last error set on ``entry``)."""
        self._write(
            "UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE position = ?",
            (entry.attempts, entry.next_attempt, entry.last_error, entry.position),
        )

    def bury(self, entry: Entry) -> None:
        """Mark the row dead with its last error."""
        entry.dead = True
        self._write(
            "UPDATE outbox SET attempts = ?, last_error = ?, dead = 1 WHERE position = ?",
            (entry.attempts, entry.last_error, entry.position),
        )
        self._pending -= 1
        self._dead += 1

    def pending_count(self) -> int:
        """Entries (staged or committed) not yet delivered and not dead."""
        return self._pending

    def dead_count(self) -> int:
        """Dead letters held in the file for this run's sinks."""
        return self._dead

    def oldest_pending(self, sink: str | None = None) -> int | None:
        """When the oldest pending entry (of ``sink``, or of any of this run's) was decided."""
        sinks = self._sinks if sink is None else (sink,)
        where = "(" + ",".join("?" * len(sinks)) + ")"
        try:
            oldest = self._query(f"SELECT MIN(enqueued) FROM outbox WHERE dead = 0 AND sink IN {where}", sinks)
        except OutboxError:
            # A figure for the status line and the summary: an outbox that failed (its
            # error is the run's to report, once) has none, rather than a second failure.
            oldest = [(None,)]
        staged = [now for name, _, now in self._staged[:1] if name in sinks]
        candidates = [moment for moment in (oldest[0][0], *staged) if moment is not None]
        return min(candidates) if candidates else None

    def retry_dead(self, now: int) -> int:
        """Every dead letter of the file back to pending, due at ``now`` (the age limit
        counts from here); returns how many rows of this run's sinks moved."""
        ours = self._query(f"SELECT COUNT(*) FROM outbox WHERE dead = 1 AND sink IN {self._in}", self._sinks)[0][0]
        self._write("UPDATE outbox SET dead = 0, attempts = 0, next_attempt = ?, enqueued = ? WHERE dead = 1",
                    (now, now))
        self._pending += ours
        self._dead -= ours
        return ours


def _entry(row: tuple) -> Entry:
    position, sink, rid, key, body, enqueued, attempts, next_attempt, last_error, dead = row
    return Entry(sink, rid, key, bytes(body), enqueued, attempts, next_attempt, last_error, bool(dead), position)

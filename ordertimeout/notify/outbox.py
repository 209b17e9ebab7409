"""The outbox: results waiting to be delivered to a sink, with their delivery state.

In: results chosen for delivery (:func:`entries_for`), one :class:`Entry` per result and
sink. Out: due entries for the relay (:mod:`.delivery`), which reports back each attempt
(delivered, retry later, dead). Delivery state (attempts, next attempt, last error, dead)
lives in the outbox, not in the relay.

Two kinds, one interface:

* :class:`MemoryOutbox` (no ``--state``): entries live in this process; a crash loses them.
* :class:`SqliteOutbox` (``--state``): the ``outbox`` table of the state file. New entries
  are *staged*; before they are shown on stdout, :meth:`SqliteOutbox.hold_staged` commits
  them as *held* rows, and the checkpoint transaction that covers their input releases
  them (:meth:`SqliteOutbox.write_staged`: the transactional outbox pattern). So after
  ``kill -9`` every result shown is in the table, and every other one will be decided
  again from the input. Only released rows are delivered; a delivered row is deleted.
  Held rows left by a run that died are released by the next run, which does not add
  the same results (same sink and id) again when it decides them anew. Pending rows wait
  on disk, not in memory.

:mod:`.outbox_file` serves ``ordertimeout outbox STATE``: list rows, retry dead letters.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sqlite3
from collections import deque
from dataclasses import dataclass
from itertools import repeat
from typing import Iterable

from ..outputs.sinks import RESULT_TYPES, json_line

__all__ = ["Entry", "MemoryOutbox", "SqliteOutbox", "OUTBOX_SCHEMA", "OutboxError", "entries_for"]

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY, sink TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
    body BLOB NOT NULL, enqueued INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL, last_error TEXT NOT NULL DEFAULT '', dead INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (dead, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_age ON outbox (dead, enqueued);
"""

_COLUMNS = "position, sink, id, key, body, enqueued, attempts, next_attempt, last_error, dead"


class OutboxError(Exception):
    """The outbox (its table in the state file) cannot be read or written."""


@dataclass(slots=True)
class Entry:
    """One result on its way to one sink. ``enqueued`` is when it was decided (epoch ms)."""

    sink: str
    id: str
    key: str
    body: bytes
    enqueued: int
    attempts: int = 0
    next_attempt: int = 0
    last_error: str = ""
    dead: bool = False
    position: int | None = None  # the row (SqliteOutbox) once written

    @property
    def kind(self) -> str:
        """The result kind (``timeout``, ``success``...): the id's first part."""
        return self.id.split(":", 1)[0]


def entry_for(sink: str, result, now: int) -> Entry:
    """The entry of one result for one sink, decided at ``now``."""
    return Entry(sink, result.id, result.key, json_line(result)[:-1], now, next_attempt=now)


def entries_for(results: Iterable, sinks: Iterable[str], now: int, only: str | None = None) -> list[Entry]:
    """One entry per result (of the kind ``only``, if given) and sink, decided at ``now``."""
    keep = RESULT_TYPES[only] if only else None
    sinks = list(sinks)
    return [entry_for(sink, result, now) for result in results
            if keep is None or type(result) is keep for sink in sinks]


class MemoryOutbox:
    """Entries in memory: fresh results in arrival order, retries in a heap by next attempt.

    A fresh result becomes an :class:`Entry` (its JSON body formatted) only when the relay
    takes it, so deciding results costs matching one append each.
    """

    durable = False
    #: Dead letters kept in memory; all are counted.
    DEAD_KEPT = 1000

    def __init__(self, sinks: Iterable[str] = ()) -> None:
        self._sinks = tuple(sinks)
        self._fresh: deque[tuple[str, object, int]] = deque()  # (sink, result, decided at)
        self._due: list[tuple[int, int, Entry]] = []
        self._order = itertools.count()
        self._taken: dict[int, Entry] = {}  # id(entry) -> entry: taken, not yet delivered or dead
        #: The latest dead letters (each is also named on stderr when it dies): a run of
        #: days against a dead endpoint keeps these, not every result it gave up on.
        self.dead: deque[Entry] = deque(maxlen=self.DEAD_KEPT)
        self._dead_count = 0

    def add(self, results: list, now: int) -> None:
        """Take results decided at ``now``, one entry per sink; deliverable at once."""
        for sink in self._sinks:
            self._fresh.extend(zip(repeat(sink), results, repeat(now)))

    def add_entries(self, entries: list[Entry]) -> None:
        """Take ready-made entries (each due at its ``next_attempt``)."""
        for entry in entries:
            self._taken[id(entry)] = entry
            heapq.heappush(self._due, (entry.next_attempt, next(self._order), entry))

    def take_due(self, now: int, count: int, busy: set) -> list[Entry]:
        """Up to ``count`` entries due at ``now``: retries first, then fresh results."""
        taken = []
        due, fresh = self._due, self._fresh
        while due and len(taken) < count and due[0][0] <= now:
            taken.append(heapq.heappop(due)[2])  # off the heap until retried: never busy here
        while fresh and len(taken) < count:
            entry = entry_for(*fresh.popleft())
            self._taken[id(entry)] = entry
            taken.append(entry)
        return taken

    def next_due(self, now: int, busy: set) -> int | None:
        """The earliest next attempt of an entry not being attempted, if any."""
        if self._fresh:
            return self._fresh[0][2]
        return self._due[0][0] if self._due else None

    def delivered(self, entry: Entry) -> None:
        """The sink accepted ``entry``: forget it."""
        self._taken.pop(id(entry), None)

    def retry(self, entry: Entry) -> None:
        """``entry`` failed; its attempts, next attempt and last error are already set."""
        heapq.heappush(self._due, (entry.next_attempt, next(self._order), entry))

    def bury(self, entry: Entry) -> None:
        """``entry`` goes to the dead letters (``entry.last_error`` says why)."""
        entry.dead = True
        self._taken.pop(id(entry), None)
        self.dead.append(entry)
        self._dead_count += 1

    def pending_count(self) -> int:
        """Entries not yet delivered and not dead."""
        return len(self._taken) + len(self._fresh)

    def dead_count(self) -> int:
        """Dead letters held."""
        return self._dead_count

    def oldest_pending(self) -> int | None:
        """When the oldest pending entry was decided (epoch ms)."""
        # Taken entries were decided before fresh ones, and dicts keep insertion order.
        if self._taken:
            return min(entry.enqueued for entry in itertools.islice(self._taken.values(), 64))
        return self._fresh[0][2] if self._fresh else None


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

    def take_due(self, now: int, count: int, busy: set) -> list[Entry]:
        """Up to ``count`` committed entries due at ``now`` whose rows are not ``busy``."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM outbox WHERE dead = 0 AND next_attempt <= ? AND position <= ?"
            f" AND sink IN {self._in} ORDER BY next_attempt, position LIMIT ?",
            (now, self._released, *self._sinks, count + len(busy)),
        )
        return [_entry(row) for row in rows if row[0] not in busy][:count]

    def next_due(self, now: int, busy: set) -> int | None:
        """The earliest next attempt of a committed entry not being attempted, if any."""
        rows = self._query(
            f"SELECT position, next_attempt FROM outbox WHERE dead = 0 AND position <= ? AND sink IN {self._in}"
            " ORDER BY next_attempt, position LIMIT ?",
            (self._released, *self._sinks, len(busy) + 1),
        )
        return next((moment for position, moment in rows if position not in busy), None)

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

    def oldest_pending(self) -> int | None:
        """When the oldest pending entry was decided (epoch ms)."""
        oldest = self._query(f"SELECT MIN(enqueued) FROM outbox WHERE dead = 0 AND sink IN {self._in}", self._sinks)
        candidates = [moment for moment in (oldest[0][0], self._staged[0][2] if self._staged else None)
                      if moment is not None]
        return min(candidates) if candidates else None


def _entry(row: tuple) -> Entry:
    position, sink, rid, key, body, enqueued, attempts, next_attempt, last_error, dead = row
    return Entry(sink, rid, key, bytes(body), enqueued, attempts, next_attempt, last_error, bool(dead), position)

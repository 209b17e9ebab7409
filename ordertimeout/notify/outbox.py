"""The outbox: results waiting to be delivered to a sink, with their delivery state.

In: results chosen for delivery (:func:`entries_for`), one :class:`Entry` per result and
sink. Out: due entries for the relay (:mod:`.delivery`), which reports back each attempt
(delivered, retry later, dead). Delivery state (attempts, next attempt, last error, dead)
lives in the outbox, not in the relay.

Two kinds, one interface:

* :class:`MemoryOutbox` (no ``--state``): entries live in this process; a crash loses them.
* :class:`SqliteOutbox` (``--state``): the ``outbox`` table of the state file. New entries
  are *staged* and written by :meth:`SqliteOutbox.write_staged` inside the checkpoint
  transaction that covers their input (the transactional outbox pattern), so after
  ``kill -9`` a result is either in the table or will be decided again from the input.
  Only committed rows are delivered; a delivered row is deleted. Pending rows wait on
  disk, not in memory.

Functions at the end serve ``ordertimeout outbox STATE``: list rows, retry dead letters.
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

__all__ = ["Entry", "MemoryOutbox", "SqliteOutbox", "OUTBOX_SCHEMA", "OutboxError", "entries_for",
           "read_rows", "retry_dead"]

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

    @property
    def stage(self) -> str | None:
        """A reminder's stage (the id's last part), else None."""
        return self.id.rsplit(":", 1)[1] if self.kind == "reminder" else None


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
        """Entries waiting for the next checkpoint."""
        return len(self._staged)

    def write_staged(self, connection: sqlite3.Connection) -> int:
        """Insert the staged entries; called inside the checkpoint's transaction."""
        connection.executemany(
            "INSERT INTO outbox (sink, id, key, body, enqueued, next_attempt) VALUES (?, ?, ?, ?, ?, ?)",
            [(sink, item.id, item.key, item.body if type(item) is Entry else json_line(item)[:-1], now, now)
             for sink, item, now in self._staged],
        )
        return len(self._staged)

    def committed(self, count: int) -> None:
        """The checkpoint holding the first ``count`` staged entries committed."""
        del self._staged[:count]

    def take_due(self, now: int, count: int, busy: set) -> list[Entry]:
        """Up to ``count`` committed entries due at ``now`` whose rows are not ``busy``."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM outbox WHERE dead = 0 AND next_attempt <= ? AND sink IN {self._in}"
            " ORDER BY next_attempt, position LIMIT ?",
            (now, *self._sinks, count + len(busy)),
        )
        return [_entry(row) for row in rows if row[0] not in busy][:count]

    def next_due(self, now: int, busy: set) -> int | None:
        """The earliest next attempt of a committed entry not being attempted, if any."""
        rows = self._query(
            f"SELECT position, next_attempt FROM outbox WHERE dead = 0 AND sink IN {self._in}"
            " ORDER BY next_attempt, position LIMIT ?",
            (*self._sinks, len(busy) + 1),
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


# -- ordertimeout outbox STATE --------------------------------------------------------


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

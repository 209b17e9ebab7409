"""Durable state: the pipeline's open orders, watermark, counters and input offsets in SQLite.

One checkpoint is one transaction, so a crash at any moment leaves the previous checkpoint
or the new one, never a mix. The file is held with an exclusive ``flock`` for the run (a second
ordertimeout on the same file is refused) and is in WAL mode, so ``ordertimeout outbox``
can read it meanwhile (see :mod:`..notify.outbox_file`). The library raises
:class:`StateError`; it never prints.

Tables: ``meta`` (configuration, time mode, watermark, counters), ``open_orders`` (key,
created, deadline, seq, and the order ``packed`` as a matcher keeps it: a 12-byte header,
then the raw create event; in the matcher's timeline order, so a restore neither sorts nor
repacks), ``buffered`` (event-time events
still waiting in the reorder buffer), ``expired_orders`` (timed-out orders still payable
under ``--paid-late``, rewritten whole at each checkpoint), ``offsets`` (per input file:
the byte offset and line number just after the last fully processed line, keyed by its
resolved path, with its device, inode and a fingerprint of its first bytes so a replaced
or truncated file is recognised) and ``outbox`` (results waiting for delivery, see
:mod:`.outbox`; written through the ``also`` hook of :meth:`StateStore.save`).

A new file is created readable and writable by its owner only: it holds customers' raw
events.
"""

from __future__ import annotations

import os
import sqlite3
from array import array
from typing import Any, Callable

import orjson

from ..errors import StateError, StateWriteError
from ..notify.outbox import OUTBOX_SCHEMA
from ..notify.outbox_file import hold
from ..rules.orders import packed
from ..rules.pipeline import Pipeline
from ..rules.snapshot import RESTORE_CHUNK
from ..inputs.files import SavedPosition

__all__ = ["StateStore", "StateError", "StateWriteError", "FORMAT", "config_differences"]

#: Bumped when the layout changes; an older file is upgraded where it can be (see
#: :func:`_upgrade`), else refused rather than misread.
FORMAT = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS open_orders (
    position INTEGER PRIMARY KEY, key TEXT NOT NULL, created INTEGER NOT NULL,
    deadline INTEGER NOT NULL, packed BLOB NOT NULL, seq INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS open_orders_by_key ON open_orders (key, created);
CREATE TABLE IF NOT EXISTS buffered (
    position INTEGER PRIMARY KEY, time INTEGER NOT NULL, sequence INTEGER NOT NULL,
    key TEXT NOT NULL, kind INTEGER NOT NULL, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS expired_orders (
    position INTEGER PRIMARY KEY, key TEXT NOT NULL, created INTEGER NOT NULL,
    raw BLOB NOT NULL, seq INTEGER NOT NULL, deadline INTEGER);
CREATE TABLE IF NOT EXISTS offsets (
    source TEXT PRIMARY KEY, device INTEGER NOT NULL, inode INTEGER NOT NULL,
    head_size INTEGER NOT NULL, head_digest TEXT NOT NULL,
    offset INTEGER NOT NULL, line INTEGER NOT NULL);
""" + OUTBOX_SCHEMA
_TABLES = {"meta", "open_orders", "buffered", "expired_orders", "offsets", "outbox"}
#: Files written before the outbox existed lack only that table; it is added on open.
_TABLES_BEFORE_OUTBOX = _TABLES - {"outbox"}


class StateStore:
    """Checkpoints of one run's state in the SQLite file at ``path``.

    ``config`` holds the settings that give state its meaning (key, window, match mode,
    type names); a file written under other settings is refused.
    """

    def __init__(self, path: str, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self._connection: sqlite3.Connection | None = None
        self._synced = False  # whether the file's open orders match the matcher's
        # Where the matcher's timeline positions are in the file's open_orders: after a
        # restore, the i-th restored order is at _restored_positions[i] (the file keeps
        # the gaps of orders closed early), and every later one at position + _offset.
        self._restored_positions: array | None = None
        self._offset = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._held: int | None = None  # the descriptor holding the run lock

    def open(self) -> dict | None:
        """Open (creating if new) and return the last checkpoint, or None for a new file.

        The checkpoint's open orders (``["pipeline"]["matcher"]["open"]``) are read from
        the file as they are iterated, so a million of them are never held twice: restore
        a pipeline from it before :meth:`close`. A store whose open orders were restored
        that way is in sync with the matcher, and its next checkpoint writes changes only.
        """
        try:
            _create_owner_only(self.path)
            self._hold()
            connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        except sqlite3.Error as error:
            self._release()
            raise StateError(f"cannot open state file {self.path}: {error}") from None
        try:
            # Read before anything is written, so a foreign or corrupt file stays untouched.
            if self._tables(connection) - {"sqlite_sequence"} not in (set(), _TABLES, _TABLES_BEFORE_OUTBOX):
                raise StateError(f"{self.path} is not an ordertimeout state file")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("BEGIN EXCLUSIVE")  # take the lock now: one writer per file
            if self._tables(connection) == _TABLES_BEFORE_OUTBOX:
                for statement in OUTBOX_SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
            if self._tables(connection) == _TABLES:
                _add_expired_deadlines(connection)
                meta = dict(connection.execute("SELECT name, value FROM meta"))
                if meta.get("format") == "3":
                    _upgrade(connection)
                    meta["format"] = str(FORMAT)
                self._check(meta)
                checkpoint = self._read(connection, meta)
            else:
                # A new file: the whole layout in one transaction, so a crash while
                # creating it leaves an empty file, never half a layout.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("format", str(FORMAT)), ("config", orjson.dumps(self.config).decode())],
                )
                checkpoint = None
            connection.execute("COMMIT")
        except sqlite3.DatabaseError as error:
            connection.close()
            self._release()
            raise StateError(_describe(self.path, error)) from None
        except StateError:
            connection.close()
            self._release()
            raise
        self._connection = connection
        self._identity = _file_identity(self.path)
        return checkpoint

    def _hold(self) -> None:
        """The run lock (not SQLite's exclusive locking mode, which would keep readers out)."""
        try:
            self._held = hold(self.path)
        except BlockingIOError:
            raise StateError(f"state file {self.path} is in use by another process (a running ordertimeout)") from None
        except OSError as error:
            raise StateError(f"cannot open state file {self.path}: {error.strerror}") from None

    def _release(self) -> None:
        if self._held is not None:
            os.close(self._held)  # after SQLite's connection: closing drops this process's locks
            self._held = None

    @staticmethod
    def _tables(connection: sqlite3.Connection) -> set[str]:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check(self, meta: dict[str, str]) -> None:
        if meta.get("format") != str(FORMAT):
            raise StateError(f"{self.path} has state format {meta.get('format')}, this version reads {FORMAT}")
        differences = config_differences(orjson.loads(meta["config"]), self.config)
        if differences:
            raise StateError(
                f"{self.path} was written by a different configuration ({'; '.join(differences)}); "
                "refusing to mix them: use another --state file"
            )

    def _read(self, connection: sqlite3.Connection, meta: dict[str, str]) -> dict | None:
        if "pipeline" not in meta:
            return None  # created, but no checkpoint yet
        pipeline = orjson.loads(meta["pipeline"])
        pipeline["matcher"]["open"] = _RestoredOrders(self, connection)
        pipeline["buffer"] = [
            (time, sequence, key, kind, bytes(raw))
            for time, sequence, key, kind, raw in connection.execute(
                "SELECT time, sequence, key, kind, raw FROM buffered ORDER BY position"
            )
        ]
        pipeline["matcher"]["expired"] = [
            (created, key, bytes(raw), seq, deadline)
            for key, created, raw, seq, deadline in connection.execute(
                "SELECT key, created, raw, seq, deadline FROM expired_orders ORDER BY position"
            )
        ]
        offsets = {
            source: SavedPosition(*fields)
            for source, *fields in connection.execute(
                "SELECT source, device, inode, head_size, head_digest, offset, line FROM offsets"
            )
        }
        return {"pipeline": pipeline, "offsets": offsets}

    @property
    def connection(self) -> sqlite3.Connection | None:
        """The open connection (the file's only one: it is locked), for the outbox."""
        return self._connection

    def save(self, pipeline: Pipeline, offsets: dict[str, SavedPosition],
             also: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Write one checkpoint atomically: all of it, or (after a crash) none of it.

        ``offsets`` are the resume points of the files read, by resolved path.

        ``also(connection)``, when given, runs inside the same transaction just before
        its COMMIT, so a host can write its own rows (an outbox of results to deliver)
        atomically with the state that decided them. If it raises, nothing is written.

        The first checkpoint of a run writes every open order; later ones write only what
        changed since (orders opened, closed early, timed out), so a checkpoint costs
        O(changes) however many orders are open.
        """
        if _file_identity(self.path) != self._identity:
            # SQLite would go on writing to the unlinked file: every checkpoint lost.
            raise StateError(f"state file {self.path} was removed or replaced while this run used it")
        matcher = pipeline.matcher
        head_state = pipeline.snapshot(with_orders=False)
        buffer = head_state.pop("buffer")
        expired = head_state["matcher"].pop("expired")
        connection = self._connection
        try:
            connection.execute("BEGIN")
            if not self._synced:
                matcher.forget_changes()  # (re)start change tracking from this full picture
                self._restored_positions, self._offset = None, 0
                head, opened = matcher.numbered_open_orders()
                connection.execute("DELETE FROM open_orders")
            else:
                head, opened, closed = matcher.take_changes()
                # (key, created, seq) names one order: its result id.
                connection.executemany(
                    "DELETE FROM open_orders WHERE position = (SELECT position FROM open_orders"
                    " WHERE key = ? AND created = ? AND seq = ? ORDER BY position LIMIT 1)",
                    [(order.key, order.created, order.seq) for order in closed],
                )
                connection.execute("DELETE FROM open_orders WHERE position < ?", (self._position(head),))
                if self._restored_positions is not None and head >= len(self._restored_positions):
                    self._restored_positions = None  # every restored order is gone: offsets only
            position_of = self._position
            connection.executemany(
                "INSERT INTO open_orders VALUES (?, ?, ?, ?, ?, ?)",
                ((position_of(position), order.key, order.created, order.deadline,
                  packed(order.created, order.raw, order.seq), order.seq) for position, order in opened),
            )
            connection.execute("DELETE FROM expired_orders")
            connection.executemany(
                "INSERT INTO expired_orders (created, key, raw, seq, deadline) VALUES (?, ?, ?, ?, ?)", expired
            )
            connection.execute("DELETE FROM buffered")
            connection.executemany(
                "INSERT INTO buffered (time, sequence, key, kind, raw) VALUES (?, ?, ?, ?, ?)", buffer
            )
            connection.execute("INSERT OR REPLACE INTO meta VALUES ('pipeline', ?)", (orjson.dumps(head_state).decode(),))
            connection.executemany(
                "INSERT OR REPLACE INTO offsets VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(source, *position) for source, position in offsets.items()],
            )
            if also is not None:
                also(connection)
            connection.execute("COMMIT")
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._synced = False  # the changes taken are lost: the next save writes all
            if isinstance(error, sqlite3.Error):
                raise StateWriteError(f"cannot write state file {self.path}: {_why(error)}; its last checkpoint is kept") from None
            raise
        self._synced = True

    def _position(self, timeline_position: int) -> int:
        """The open_orders position of the matcher's order at ``timeline_position``."""
        restored = self._restored_positions
        if restored is not None and timeline_position < len(restored):
            return restored[timeline_position]
        return timeline_position + self._offset

    def _restored(self, positions: array) -> None:
        """The checkpoint's open orders were all read into a matcher, which numbers them
        0, 1, ... in the file's order: the file is in sync with it, so the next checkpoint
        writes changes only, not every open order again."""
        self._restored_positions = positions
        self._offset = positions[-1] + 1 - len(positions) if positions else 0
        self._synced = True

    def close(self) -> None:
        """Release the file (and its lock)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._release()


def config_differences(stored: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """How the settings that give state its meaning differ between those ``stored`` with
    it and those of this run (``here``), one phrase each: state of one is refused by the
    other (a state file, or a kafka partition's changelog)."""
    return [f"{name} {stored.get(name)!r} there, {value!r} here"
            for name, value in here.items() if stored.get(name) != value]


class _RestoredOrders:
    """The open orders of a checkpoint, in the matcher's timeline order, read from the
    file in chunks of columns while a matcher is rebuilt from them (see
    :meth:`~..rules.snapshot.SavedState.restore`): a million of them never sit in a list
    beside the matcher that takes them. A matcher that numbers them as the file has them
    (0, 1, ... in this order) says so with :meth:`in_sync`: then the store knows where
    each one is in the file (see :meth:`StateStore._restored`) and writes changes only."""

    CHUNK = RESTORE_CHUNK  #: rows read at a time

    def __init__(self, store: StateStore, connection: sqlite3.Connection) -> None:
        self._store = store
        self._connection = connection
        self._positions = array("q")

    def chunks(self):
        """``(keys, packed, windows)`` column tuples, a chunk of orders at a time: each
        order packed as a plain matcher keeps it, and its window (its deadline minus its
        created time), None where it is the run's ``within``."""
        if self._store.connection is None:
            raise StateError(f"the open orders of {self._store.path} are read from the file: restore them before close()")
        self._positions = positions = array("q")
        rows = self._connection.execute(
            "SELECT position, key, packed, NULLIF(deadline - created, ?) FROM open_orders ORDER BY position",
            (self._store.config.get("within_ms"),))
        while chunk := rows.fetchmany(self.CHUNK):
            numbers, *columns = zip(*chunk)
            positions.extend(numbers)
            yield columns

    def in_sync(self) -> None:
        """Every order was read, and the matcher numbers them in the order given."""
        self._store._restored(self._positions)


def _add_expired_deadlines(connection: sqlite3.Connection) -> None:
    """A file written before orders had deadlines of their own gets the column (empty:
    ``created`` plus the window, as then)."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(expired_orders)")}
    if "deadline" not in columns:
        connection.execute("ALTER TABLE expired_orders ADD COLUMN deadline INTEGER")


def _upgrade(connection: sqlite3.Connection) -> None:
    """Format 3 to 4, in the open transaction (all of it or, after a crash, none): each
    open order's raw create event becomes the order packed (a header before it)."""
    connection.create_function("packed", 3, packed, deterministic=True)
    connection.execute("ALTER TABLE open_orders RENAME COLUMN raw TO packed")
    connection.execute("UPDATE open_orders SET packed = packed(created, packed, seq)")
    connection.execute("UPDATE meta SET value = ? WHERE name = 'format'", (str(FORMAT),))


def _create_owner_only(path: str) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite gives its WAL
    file the same mode); an existing file keeps the mode its owner chose."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as error:
        raise StateError(f"cannot create state file {path}: {error.strerror}") from None


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _why(error: sqlite3.Error) -> str:
    """SQLite's words, with a hint where they hide the usual cause."""
    name = getattr(error, "sqlite_errorname", "")
    if name.startswith("SQLITE_IOERR_WRITE") or name.startswith("SQLITE_IOERR_FSYNC"):
        return f"{error} (is the disk full, or the file over its size limit?)"
    return str(error)


def _describe(path: str, error: sqlite3.DatabaseError) -> str:
    text = str(error)
    if "locked" in text:
        return f"state file {path} is in use by another process (database is locked)"
    if "not a database" in text or "malformed" in text:
        return f"state file {path} is corrupt ({text}); it was left untouched"
    return f"cannot use state file {path}: {text}"

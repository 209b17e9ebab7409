"""The outbox: results waiting to be delivered to a sink, with their delivery state.

In: results chosen for delivery (:func:`entries_for`), one :class:`Entry` per result and
sink. Out: due entries for the relay (:mod:`.delivery`), which reports back each attempt
(delivered, retry later, dead). Delivery state (attempts, next attempt, last error, dead)
lives in the outbox, not in the relay.

Two kinds, one interface:

* :class:`MemoryOutbox` (no ``--state``): entries live in this process; a crash loses them.
* :class:`~.sqlite_outbox.SqliteOutbox` (``--state``): the ``outbox`` table of the state file. New entries
  are *staged* and written by :meth:`SqliteOutbox.write_staged` inside the checkpoint
  transaction that covers their input (the transactional outbox pattern), so after
  ``kill -9`` a result is either in the table or will be decided again from the input.

``ordertimeout outbox STATE`` reads the file from outside a run (:mod:`.outbox_file`).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass
from itertools import repeat
from typing import Iterable

from ..outputs.sinks import RESULT_TYPES, json_line

__all__ = ["Entry", "MemoryOutbox", "OUTBOX_SCHEMA", "OutboxError", "entries_for", "choose", "dead_letters"]

OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    position INTEGER PRIMARY KEY, sink TEXT NOT NULL, id TEXT NOT NULL, key TEXT NOT NULL,
    body BLOB NOT NULL, enqueued INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL, last_error TEXT NOT NULL DEFAULT '', dead INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (dead, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_age ON outbox (dead, enqueued);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (sink, dead, position);
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


def dead_letters(count: int) -> str:
    """``1 dead letter``, ``2 dead letters``: for messages."""
    return f"{count:,} dead letter{'s' * (count != 1)}"


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
    """Entries in memory, per sink in decision order.

    A fresh result becomes an :class:`Entry` (its JSON body formatted) only when the relay
    reaches it, so deciding results costs matching one append each. Entries the relay has
    reached and not yet finished (in flight, failed, or waiting behind an earlier result of
    their key) stay in decision order in one ordered dict per sink.
    """

    durable = False
    #: Dead letters kept in memory; all are counted.
    DEAD_KEPT = 1000

    def __init__(self, sinks: Iterable[str] = ()) -> None:
        self._sinks = tuple(sinks)
        self._fresh: dict[str, deque[tuple[object, int]]] = {sink: deque() for sink in self._sinks}
        self._reached: dict[str, OrderedDict[int, Entry]] = {sink: OrderedDict() for sink in self._sinks}
        self._order = itertools.count(1)
        #: The latest dead letters (each is also named on stderr when it dies): a run of
        #: days against a dead endpoint keeps these, not every result it gave up on.
        self.dead: deque[Entry] = deque(maxlen=self.DEAD_KEPT)
        self._dead_count = 0

    def _sink(self, sink: str) -> None:
        if sink not in self._fresh:
            self._sinks += (sink,)
            self._fresh[sink], self._reached[sink] = deque(), OrderedDict()

    def add(self, results: list, now: int) -> None:
        """Take results decided at ``now``, one entry per sink; deliverable at once."""
        for sink in self._sinks:
            self._fresh[sink].extend(zip(results, repeat(now)))

    def add_entries(self, entries: list[Entry]) -> None:
        """Take ready-made entries (each not before its ``next_attempt``), after those held."""
        for entry in entries:
            self._sink(entry.sink)
            reached = self._reached[entry.sink]
            while self._fresh[entry.sink]:  # keep decision order: earlier fresh results first
                self._reach(entry.sink)
            entry.position = next(self._order)
            reached[entry.position] = entry

    def _reach(self, sink: str) -> Entry:
        result, now = self._fresh[sink].popleft()
        entry = entry_for(sink, result, now)
        entry.position = next(self._order)
        self._reached[sink][entry.position] = entry
        return entry

    def take(self, sink: str, now: int, count: int, busy: set, busy_keys: set) -> list[Entry]:
        """Up to ``count`` entries of ``sink`` to attempt at ``now``, oldest first (see
        :func:`choose`)."""
        if sink not in self._fresh:
            return []
        fresh = self._fresh[sink]

        def candidates():
            yield from list(self._reached[sink].values())
            while fresh:
                yield self._reach(sink)

        return choose(candidates(), now, count, busy, busy_keys)

    def next_due(self, sink: str, now: int) -> int | None:
        """The earliest ``next_attempt`` after ``now`` of a pending entry of ``sink``: when
        an entry waiting for its own backoff step may go."""
        if sink not in self._fresh:
            return None
        moments = [entry.next_attempt for entry in itertools.islice(self._reached[sink].values(), SCAN_LIMIT)
                   if entry.next_attempt > now]
        return min(moments) if moments else None

    def expired(self, sink: str, before: int, busy: set) -> list[Entry]:
        """Pending entries of ``sink`` (not in flight) decided at or before ``before``."""
        if sink not in self._fresh:
            return []
        found = [entry for entry in self._reached[sink].values()
                 if entry.enqueued <= before and entry.position not in busy]
        fresh = self._fresh[sink]
        while fresh and fresh[0][1] <= before:
            found.append(self._reach(sink))
        return found

    def delivered(self, entry: Entry) -> None:
        """The sink accepted ``entry``: forget it."""
        self._reached[entry.sink].pop(entry.position, None)

    def retry(self, entry: Entry) -> None:
        """``entry`` failed; its attempts, next attempt and last error are already set."""

    def bury(self, entry: Entry) -> None:
        """``entry`` goes to the dead letters (``entry.last_error`` says why)."""
        entry.dead = True
        self._reached[entry.sink].pop(entry.position, None)
        self.dead.append(entry)
        self._dead_count += 1

    def retry_dead(self, now: int) -> int:
        """Dead letters kept in memory back to pending, due at ``now``; returns how many."""
        moved = list(self.dead)
        self.dead.clear()
        self._dead_count = 0
        for entry in moved:
            entry.dead, entry.attempts, entry.enqueued, entry.next_attempt = False, 0, now, now
        self.add_entries(moved)
        return len(moved)

    def forget_dead(self, count: int) -> None:
        """``count`` dead letters kept elsewhere (a kafka topic) were delivered after all."""
        self._dead_count = max(0, self._dead_count - count)

    def pending_count(self) -> int:
        """Entries not yet delivered and not dead."""
        return sum(len(reached) for reached in self._reached.values()) + sum(map(len, self._fresh.values()))

    def dead_count(self) -> int:
        """Dead letters held."""
        return self._dead_count

    def oldest_pending(self, sink: str | None = None) -> int | None:
        """When the oldest pending entry (of ``sink``, or of any) was decided (epoch ms)."""
        moments = []
        for name in (self._sinks if sink is None else (sink,) if sink in self._fresh else ()):
            reached = self._reached[name]
            if reached:
                moments.append(min(entry.enqueued for entry in itertools.islice(reached.values(), 64)))
            elif self._fresh[name]:
                moments.append(self._fresh[name][0][1])
        return min(moments) if moments else None


#: Entries looked at, at most, to choose the next attempts: a key with thousands of
#: results waiting behind its first one must not make every choice read all of them.
SCAN_LIMIT = 4096


def choose(candidates: Iterable[Entry], now: int, count: int, busy: set, busy_keys: set) -> list[Entry]:
    """Up to ``count`` of ``candidates`` (pending entries of one sink in decision order)
    that may be attempted at ``now``: not in flight (their row in ``busy``), due
    (``next_attempt`` reached) and first of their key, so one key's results reach the sink
    in decision order: an entry waits while an earlier one of its key is in flight
    (``busy_keys``) or waiting."""
    taken: list[Entry] = []
    blocked = set(busy_keys)
    for looked, entry in enumerate(candidates):
        if len(taken) == count or looked == SCAN_LIMIT:
            break
        if entry.position in busy:
            continue
        key = entry.key
        if key not in blocked and entry.next_attempt <= now:
            taken.append(entry)
        blocked.add(key)
    return taken


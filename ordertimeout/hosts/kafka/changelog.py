"""The changelog: one input partition's pipeline state as records of the ``<group>-state`` topic.

State of input partition ``p`` lives in partition ``p`` of the state topic (co-partitioned,
as Kafka Streams does), as incremental records:

* ``p:order:<id>`` per open order (value: created, key, seq, raw create event), and a
  tombstone (no value) once the order is closed or timed out;
* ``p:meta`` after each batch: the next input offset to read, the pipeline's watermark,
  counters, reorder buffer and ``--paid-late`` memory (``Pipeline.snapshot(with_orders=False)``)
  and the settings that give the state its meaning.

Every record carries the input offset its batch covers in an ``offset`` header, and its
writer's ``epoch``: one more than the highest in the log when that writer restored the
partition. A batch counts only once its ``meta`` record is in the log: restoring drops
what follows the last ``meta`` (a writer killed mid-batch), and records of an epoch lower
than one already seen (a writer that kept going after its partition had moved on, say one
frozen past its session timeout). The next owner's first batch writes every key such a
record touched again, so that the last record of every key agrees with the state.

The topic is compacted: the cleaner may keep only the last record of each key, where it
was, and drop all but the last ``meta``. The log therefore means the same however much
of it was cleaned: a key counts at its last write (also for its place, see below), and
everything before the last ``meta`` counts, whatever the batches and epochs in between
were (the mending above makes the records of a killed writer count for nothing).

Open orders restore in the order of their last writes, and ``Matcher.restore`` sorts them
by creation time only, keeping ties as given: among orders of one millisecond the last
writes must be in timeline (input) order, the order their timeouts go out in. A batch
appends the orders it opened in that order; an order written again is followed by every
later open order of its millisecond, written again too.
Pure data in and out: the worker does the producing and the reading.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable

import orjson

from ...rules.matcher import OpenOrder, result_id
from ...rules.orders import packed
from ...rules.snapshot import RESTORE_CHUNK, timeline_order
from ...rules.pipeline import Pipeline
from ...state.store import config_differences

__all__ = ["Record", "Restored", "ChangelogError", "ChangelogWriter", "Folder", "fold", "state_topic"]

#: Bumped when the record layout changes; older state is refused rather than misread.
FORMAT = 1


class ChangelogError(Exception):
    """The changelog cannot be used (another format or configuration); the message says why."""


@dataclass(frozen=True, slots=True)
class Record:
    """One changelog record: key, value (None: a tombstone), the input offset it covers
    and its writer's epoch."""

    key: bytes
    value: bytes | None
    offset: int
    epoch: int = 0

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka record headers stamping the covered input offset and the epoch."""
        return [("offset", b"%d" % self.offset), ("epoch", b"%d" % self.epoch)]


def epoch_of(headers) -> int:
    """The epoch in a record's headers (0 when absent)."""
    for name, value in headers or ():
        if name == "epoch":
            return int(value)
    return 0


def state_topic(group: str) -> str:
    """The changelog topic of a consumer group."""
    return f"{group}-state"


def _meta_key(partition: int) -> bytes:
    return b"%d:meta" % partition


def _order_key(partition: int, order: OpenOrder) -> bytes:
    return b"%d:order:%b" % (partition, result_id("open", order.key, order.created, order.seq).encode())


@dataclass
class Restored:
    """What the changelog holds for one partition (see :func:`fold`)."""

    meta: dict | None = None
    #: The open orders' records as folded: record key -> [created, key, seq, raw text,
    #: deadline], in the order of their last writes.
    records: dict[bytes, list] = field(default_factory=dict)
    #: Keys whose last record is not part of the state: written after the last meta record
    #: (an unfinished batch) or by a fenced writer. The next writer writes them again.
    stray: set[bytes] = field(default_factory=set)
    #: The highest writer epoch in the log (the next writer takes one more).
    epoch: int = 0
    #: The record keys in the restored matcher's timeline order, once a matcher took the
    #: orders from :meth:`pipeline_state` and numbered them so (see :class:`_TimelineOrders`).
    timeline_keys: list[bytes] | None = None

    @property
    def offset(self) -> int | None:
        """The next input offset to read, or None for a partition without state."""
        return None if self.meta is None else self.meta["offset"]

    @property
    def orders(self) -> dict[bytes, OpenOrder]:
        """The open orders by record key (made on each call: for inspection)."""
        return {record_key: OpenOrder(created, key, raw.encode(), seq, deadline)
                for record_key, (created, key, seq, raw, deadline) in self.records.items()}

    def pipeline_state(self) -> dict | None:
        """The state as ``Pipeline.restore`` takes it, or None without state."""
        if self.meta is None:
            return None
        state = dict(self.meta["pipeline"])
        state["buffer"] = [(time, seq, key, kind, raw.encode()) for time, seq, key, kind, raw in state["buffer"]]
        matcher = state["matcher"]
        state["matcher"] = dict(
            matcher,
            open=_TimelineOrders(self),
            expired=[(created, key, raw.encode(), seq, *deadline) for created, key, raw, seq, *deadline in matcher.get("expired") or ()],
        )
        return state


class _TimelineOrders:
    """The open orders of a :class:`Restored` as ``Matcher.restore`` takes a store's: in
    timeline order, as column chunks (see :meth:`~...rules.snapshot.SavedState.restore`).
    A matcher that numbers them so says :meth:`in_sync`, and the writer's first batch
    then knows every order's record key at once."""

    def __init__(self, restored: Restored) -> None:
        self._restored = restored
        self._keys: list[bytes] = []

    def chunks(self):
        """``(keys, packed, windows)`` column tuples, a chunk at a time: each order packed
        as a plain matcher keeps it, and its window, None where it is the run's ``within``."""
        items = list(self._restored.records.items())
        order = timeline_order([fields[0] for _, fields in items])
        if order is not None:
            items = [items[index] for index in order]
        self._keys = [record_key for record_key, _ in items]
        within = self._restored.meta["config"].get("within_ms")
        for start in range(0, len(items), RESTORE_CHUNK):
            created, keys, seqs, raws, deadlines = zip(*(fields for _, fields in items[start:start + RESTORE_CHUNK]))
            yield (keys, tuple(map(packed, created, map(str.encode, raws), seqs)),
                   tuple(None if window == within else window for window in map(operator.sub, deadlines, created)))

    def in_sync(self) -> None:
        """The matcher numbers the orders 0, 1, ... in the order given."""
        self._restored.timeline_keys = self._keys


def fold(partition: int, records: Iterable[tuple[bytes, bytes | None, int]], config: dict) -> Restored:
    """Rebuild a partition's state from its changelog records ``(key, value, epoch)`` in
    log order, compacted or not.

    Raises :class:`ChangelogError` if the state was written in another format or under other
    settings (key, window, match mode, ...): mixing them would give wrong results.
    """
    folder = Folder(partition, config)
    folder.add(records)
    return folder.result()


class Folder:
    """:func:`fold` a piece at a time: ``add`` the records as they are read (folding
    one fetch while the next is on its way), then ``result()``."""

    def __init__(self, partition: int, config: dict) -> None:
        self.partition = partition
        self.config = config
        self.restored = Restored()
        self._batch: list[tuple[bytes, bytes | None]] = []  # records since the last meta
        self._fenced: set[bytes] = set()  # keys whose last record so far is a fenced writer's
        self._meta_key = _meta_key(partition)

    def add(self, records: Iterable[tuple[bytes, bytes | None, int]]) -> None:
        """Fold the next records of the log (key, value, epoch), in log order."""
        restored, batch, fenced, meta_key = self.restored, self._batch, self._fenced, self._meta_key
        orders = restored.records
        current = restored.epoch  # (a local: this loop runs once per record of the log)
        for key, value, epoch in records:
            if epoch < current:
                if key != meta_key:
                    fenced.add(key)  # a writer fenced off by a later one: ignored, mended at start
                continue
            current = restored.epoch = epoch
            if key != meta_key:
                if fenced:
                    fenced.discard(key)  # written again after the fenced writer's record
                batch.append((key, value))
                continue
            meta = orjson.loads(value)
            if meta.get("format") != FORMAT:
                raise ChangelogError(
                    f"state of partition {self.partition} has format {meta.get('format')}, this version reads {FORMAT}"
                )
            # Not only this meta's own batch: after compaction the records of many batches (and
            # of killed writers, mended by the batch that followed them) come before one meta.
            pop, loads, within = orders.pop, orjson.loads, self.config["within_ms"]
            for order_key, order_value in batch:
                # Last write wins, also for its place, as compaction keeps it.
                pop(order_key, None)
                if order_value is not None:
                    # [created, key, seq, raw, deadline] (the deadline is there since
                    # orders may have windows of their own; before, it was the window's)
                    fields = orders[order_key] = loads(order_value)
                    if len(fields) == 4:
                        fields.append(fields[0] + within)
            batch.clear()
            restored.meta = meta

    def result(self) -> Restored:
        """The state folded so far (see :func:`fold`); checks its settings."""
        restored = self.restored
        restored.stray = self._fenced.union(key for key, _ in self._batch)
        if restored.meta is not None:
            differences = config_differences(restored.meta["config"], self.config)
            if differences:
                raise ChangelogError(
                    f"state of partition {self.partition} was written by a different configuration "
                    f"({'; '.join(differences)}); refusing to mix them: use another --group"
                )
        return restored


class ChangelogWriter:
    """Turns one partition's pipeline changes into changelog records, batch by batch.

    It remembers which order records are live in the log (by timeline position, as
    ``Matcher.take_changes`` numbers them), so a batch costs O(changes), not O(open orders).
    """

    def __init__(self, partition: int, config: dict, epoch: int = 1) -> None:
        self.partition = partition
        self.config = config
        self.epoch = epoch
        self._live: OrderedDict[int, bytes] = OrderedDict()  # timeline position -> record key
        self._position_of: dict[bytes, int] = {}

    def start(self, pipeline: Pipeline, restored: Restored, offset: int) -> list[Record]:
        """After restoring ``pipeline`` from ``restored``: the batch that makes the log agree
        with it (what a killed or a fenced writer left is undone), ending in a meta record
        that also fences off earlier writers (write it before anything else)."""
        matcher = pipeline.matcher
        matcher.forget_changes()  # start change tracking from the restored picture
        ordered = restored.timeline_keys
        if ordered is None or len(ordered) != matcher.pending:
            # A matcher not restored from these records as they were given (none: a new
            # partition; or one fed since): its own numbering, each order's key made again.
            ordered = [_order_key(self.partition, order) for _, order in matcher.numbered_open_orders()[1]]
        self._live = OrderedDict(zip(range(len(ordered)), ordered))
        self._position_of = dict(zip(ordered, range(len(ordered))))
        records = []
        if restored.stray:
            # Touched by an unfinished batch (or a fenced writer): write it again. Every later
            # order of its millisecond follows it, so their last writes stay in timeline order.
            stray = restored.stray
            rewritten: set[int] = set()  # creation times of the orders written again so far
            for (_, order), key in zip(matcher.numbered_open_orders()[1], ordered):
                if key in stray or order.created in rewritten:
                    rewritten.add(order.created)
                    records.append(Record(key, _order_value(order), offset, self.epoch))
            records += [Record(key, None, offset, self.epoch) for key in stray if key not in self._position_of]
        records.append(self._meta(pipeline, offset))
        return records

    def batch(self, pipeline: Pipeline, offset: int) -> list[Record]:
        """The records of everything changed since the last batch, ending in a meta record."""
        head, opened, closed = pipeline.matcher.take_changes()
        records = []
        for order in closed:
            key = _order_key(self.partition, order)
            position = self._position_of.pop(key, None)
            if position is not None:
                del self._live[position]
                records.append(Record(key, None, offset, self.epoch))
        live = self._live
        while live:
            position = next(iter(live))
            if position >= head:
                break
            key = live.pop(position)
            del self._position_of[key]
            records.append(Record(key, None, offset, self.epoch))
        for position, order in opened:
            key = _order_key(self.partition, order)
            live[position] = key
            self._position_of[key] = position
            records.append(Record(key, _order_value(order), offset, self.epoch))
        records.append(self._meta(pipeline, offset))
        return records

    def _meta(self, pipeline: Pipeline, offset: int) -> Record:
        # Raw events passed the JSON parser, so they are valid UTF-8 and travel as text.
        state = pipeline.snapshot(with_orders=False)
        state["buffer"] = [(time, seq, key, kind, raw.decode()) for time, seq, key, kind, raw in state["buffer"]]
        # Timed-out orders still payable under --paid-late: few, rewritten whole each batch.
        state["matcher"]["expired"] = [
            (created, key, raw.decode(), seq, *deadline) for created, key, raw, seq, *deadline in state["matcher"].get("expired") or ()
        ]
        value = {"format": FORMAT, "offset": offset, "config": self.config, "pipeline": state}
        return Record(_meta_key(self.partition), orjson.dumps(value), offset, self.epoch)


def _order_value(order: OpenOrder) -> bytes:
    # The raw create event passed the JSON parser, so it is valid UTF-8.
    return orjson.dumps((order.created, order.key, order.seq, order.raw.decode(), order.deadline))

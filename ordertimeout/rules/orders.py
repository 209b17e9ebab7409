"""Orders and results as plain data: the matching modes, the open order and its packed
form inside the matcher, the four result kinds, and the stable id every result carries.

Nothing here decides anything: the rules are in :mod:`.matcher`, which builds these.
"""

from __future__ import annotations

import struct
from enum import Enum
from typing import NamedTuple
from urllib.parse import quote

__all__ = ["Mode", "OpenOrder", "Success", "Timeout", "Cancelled", "PaidLate", "Reminder", "Result", "result_id",
           "packed", "PACKED_RAW"]


class Mode(str, Enum):
    """How a pay finds its create; see SEMANTICS.md."""

    EACH = "each"  #: every create gets one result; a pay closes the oldest open create
    NEXT = "next"  #: Flink ``.next()``: any other event of the key discards the open create
    FOLLOWED_BY = "followed-by"  #: Flink ``.followedBy()``: a pay completes every open create


class OpenOrder(NamedTuple):
    """A create waiting for its pay: plain data, so it can be saved and restored.

    ``seq`` is the create's position among its key's creates at the same millisecond
    (0 for the first), which makes the order's result id unique. ``deadline`` is when it
    times out (None: ``created`` plus the matcher's ``within``).
    """

    created: int
    key: str
    raw: bytes
    seq: int = 0
    deadline: int | None = None


def result_id(kind: str, key: str, created: int, seq: int) -> str:
    """The stable id of a result: ``timeout:u1:1700000000000:0``.

    Derived from the result alone (kind, key, the create's time and its position among
    the key's creates at that millisecond), so ``watch``, a rerun over the same events and
    a Kafka worker give the same result the same id, and a consumer can drop repeats.
    The key is percent-encoded (``:`` and anything outside ``A-Za-z0-9_.-~@``), so the id
    is plain ASCII, fits an HTTP header, and reads back unambiguously.
    """
    # A lone surrogate (from a JSON escape) is kept as its bytes (percent-encoded like any other).
    return f"{kind}:{quote(key.encode('utf-8', 'surrogatepass'), safe='@')}:{created}:{seq}"


class Success(NamedTuple):
    """A create paid before its deadline."""

    key: str
    created: int
    paid: int
    deadline: int
    create: bytes
    pay: bytes
    seq: int = 0

    @property
    def time(self) -> int:
        """When the result happened: the pay's time."""
        return self.paid

    @property
    def id(self) -> str:
        """The stable id (see :func:`result_id`)."""
        return result_id("success", self.key, self.created, self.seq)


class Timeout(NamedTuple):
    """A create with no pay before its deadline; stamped with the deadline."""

    key: str
    created: int
    deadline: int
    create: bytes
    recovered: bool = False
    seq: int = 0

    @property
    def time(self) -> int:
        """When the result happened: the deadline."""
        return self.deadline

    @property
    def id(self) -> str:
        """The stable id (see :func:`result_id`)."""
        return result_id("timeout", self.key, self.created, self.seq)


class Cancelled(NamedTuple):
    """A create closed by a cancel event (``each`` mode with a cancel type)."""

    key: str
    created: int
    cancelled: int
    deadline: int
    create: bytes
    cancel: bytes
    seq: int = 0

    @property
    def time(self) -> int:
        """When the result happened: the cancel's time."""
        return self.cancelled

    @property
    def id(self) -> str:
        """The stable id (see :func:`result_id`)."""
        return result_id("cancelled", self.key, self.created, self.seq)


class PaidLate(NamedTuple):
    """A timed-out order whose pay came after its deadline, within ``--paid-late``."""

    key: str
    created: int
    deadline: int
    paid: int
    create: bytes
    pay: bytes
    seq: int = 0

    @property
    def time(self) -> int:
        """When the result happened: the late pay's time."""
        return self.paid

    @property
    def id(self) -> str:
        """The stable id (see :func:`result_id`)."""
        return result_id("paid_late", self.key, self.created, self.seq)


class Reminder(NamedTuple):
    """An open order reminded before its deadline (``--remind``, ``--remind-before``):
    ``stage`` is the rank (1, 2, ...) of ``due`` among the order's reminder times."""

    key: str
    created: int
    due: int
    deadline: int
    create: bytes
    stage: int
    seq: int = 0

    @property
    def time(self) -> int:
        """When the result happened: the reminder's due time."""
        return self.due

    @property
    def id(self) -> str:
        """The stable id (see :func:`result_id`), with the stage: ``reminder:u1:1700000000000:0:1``."""
        return f"{result_id('reminder', self.key, self.created, self.seq)}:{self.stage}"


Result = Success | Timeout | Cancelled | PaidLate | Reminder



# Inside the matcher an open order is one bytes object: its created time and its sequence
# number within the key's millisecond in a small header, then the raw create event. One
# object instead of a tuple, an int and the raw bytes saves about 90 bytes an order (a
# million open orders fit in ~250 MB, stored events included), and bytes are never
# tracked by the garbage collector, whose full collections would otherwise stall timers
# for milliseconds once many orders are open. The key is not in it: the matcher files
# every order under its key and keeps the key beside it in the timeline. Two packed
# orders are never the same object, so identity still tells them apart.
#
# Once orders have windows of their own or reminders, the header is the long one: also
# the deadline and the order's number (its place among all creates: the tie-breaker of
# timers due at one time, and its position in a checkpoint). A plain run never pays for
# them: packing two more large ints costs a create about a third more instructions.
_HEADER = struct.Struct(">qI")  # created (ms), seq
#: Where the raw create event starts in a packed order.
_RAW = _HEADER.size
_LONG = struct.Struct(">qIqq")  # created (ms), seq, deadline (ms), number
#: Where the raw create event starts in a long packed order.
_LONG_RAW = _LONG.size


def packed(created: int, raw: bytes, seq: int = 0) -> bytes:
    """An open order packed as a matcher without lanes keeps it (the short header, then
    the raw create event): the form a state file stores, which restores without repacking."""
    return _HEADER.pack(created, seq) + raw


#: Where the raw create event starts in :func:`packed`'s bytes.
PACKED_RAW = _RAW
_pack = packed  # (the matcher's own name for it)


def _pack_long(created: int, raw: bytes, seq: int, deadline: int, number: int) -> bytes:
    return _LONG.pack(created, seq, deadline, number) + raw


def _created_of(order: bytes) -> int:
    """The created time of a packed order (the first field of both headers)."""
    return _HEADER.unpack_from(order)[0]


def _unpack(key: str, order: bytes, within: int) -> OpenOrder:
    """The open order ``order`` (short header) of ``key`` as plain data."""
    created, seq = _HEADER.unpack_from(order)
    return OpenOrder(created, key, order[_RAW:], seq, created + within)


def _unpack_long(key: str, order: bytes) -> OpenOrder:
    """The open order ``order`` (long header) of ``key`` as plain data."""
    created, seq, deadline, _ = _LONG.unpack_from(order)
    return OpenOrder(created, key, order[_LONG_RAW:], seq, deadline)


def _created_raw_seq(order: bytes) -> tuple[int, bytes, int]:
    created, seq = _HEADER.unpack_from(order)
    return created, order[_RAW:], seq

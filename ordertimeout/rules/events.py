"""Events: one JSON line in, one ``(key, kind, time, raw)`` tuple out, or a :class:`RejectedLine`.

The parser is the only place that knows the input format. It keeps the raw bytes of the
line so results can carry the original objects unchanged, and it turns every way a line
can be wrong into one exception with a reason a person can act on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
import operator
from typing import Any, Callable

import orjson

from .json_text import RejectedLine, _describe_decode_error, _json_type, _parse_iso

__all__ = [
    "OTHER",
    "CREATE",
    "PAY",
    "CANCEL",
    "KIND_NAMES",
    "create_kind",
    "is_create",
    "TIME_UNITS",
    "TIME_IGNORED",
    "TIME_REQUIRED",
    "TIME_OPTIONAL",
    "EventSchema",
    "EventParser",
    "RejectedLine",
    "field_getter",
    "MISSING",
]

# How ``parse`` treats the time field.
TIME_IGNORED, TIME_REQUIRED, TIME_OPTIONAL = 0, 1, 2

# Event kinds are small ints: they are compared once per event on the hot path.
OTHER, CREATE, PAY, CANCEL = 0, 1, 2, 3
KIND_NAMES = {OTHER: "other", CREATE: "create", PAY: "pay", CANCEL: "cancel"}


def create_kind(window: int, within: int) -> int:
    """The kind of a create whose window is ``window`` ms: :data:`CREATE` when it is the
    plain ``within``, else ``-window``. A negative kind is a create with its own window:
    the event stays a plain ``(key, kind, time, raw)`` tuple through the reorder buffer,
    the saved state and the changelog."""
    return CREATE if window == within else -window


def is_create(kind: int) -> bool:
    """Whether ``kind`` is a create (plain, or with its own window)."""
    return kind == CREATE or kind < 0

#: Milliseconds per unit of a numeric time field, as an exact fraction (num, den).
TIME_UNITS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)}

# Keep times inside what datetime can show (years 1..9999) so every result is printable.
_MIN_TIME_MS = -62_135_596_800_000
_MAX_TIME_MS = 253_402_300_799_999


@dataclass(frozen=True, slots=True)
class EventSchema:
    """Where the parser finds things in an event object, and what the type values mean.

    Field names may be dotted paths (``order.user.id``) into nested objects; a field whose
    own name contains the dot is found first.
    """

    key_field: str = "userId"
    type_field: str = "type"
    time_field: str = "ts"
    create_type: str = "create"
    pay_type: str = "pay"
    cancel_type: str | None = None
    time_unit: str = "ms"
    #: Windows of their own: a create whose ``within_by`` field (as text) is a value of
    #: ``windows`` ((value, ms) pairs) has that window; any other create has ``within``
    #: ms, or is rejected when ``within`` is None. ``deadline_field``: a create's own
    #: deadline (a time like the time field's), which wins over the windows.
    within: int | None = None
    within_by: str | None = None
    windows: tuple[tuple[str, int], ...] = ()
    deadline_field: str | None = None

    def __post_init__(self) -> None:
        if self.time_unit not in TIME_UNITS:
            raise ValueError(f"unknown time unit {self.time_unit!r}")
        if self.windows and self.within_by is None:
            raise ValueError("windows by value need within_by, the field holding the value")

    @property
    def plain_window(self) -> int | None:
        """The window of a plain create (:data:`CREATE`): ``within``, or with none, the
        first of ``windows`` (every create then has a window of its own)."""
        if self.within is not None:
            return self.within
        return self.windows[0][1] if self.windows else None

    @property
    def has_own_windows(self) -> bool:
        """Whether creates may have windows of their own (the parser then looks for them)."""
        return bool(self.windows) or self.deadline_field is not None


def field_getter(field: str) -> Callable[[dict], Any]:
    """A function giving the value at ``field`` in an object, or :data:`MISSING`.

    A plain name is one C-level ``dict.get``; a dotted path (``order.user.id``) is
    followed into nested objects, after trying the whole name as one field.
    """
    if "." not in field:
        return operator.methodcaller("get", field, _MISSING)
    parts = tuple(field.split("."))

    def lookup(obj: dict) -> Any:
        value = obj.get(field, _MISSING)
        if value is not _MISSING:
            return value
        for part in parts:
            if not isinstance(obj, dict):
                return _MISSING
            obj = obj.get(part, _MISSING)
            if obj is _MISSING:
                return _MISSING
        return obj

    return lookup


_MISSING = object()
#: What :func:`field_getter` gives for a field the object does not have.
MISSING = _MISSING

#: orjson reads integers beyond 64 bits as floats; from this size a float key may be one.
_ORJSON_INT_LIMIT = 2.0**63


def _load_exact(raw: bytes) -> Any:
    """The line decoded keeping every integer's digits (as text): the slow path for keys
    beyond 64 bits, so ``123456789012345678901234567890`` stays that key, not ``1.23e29``."""
    import json  # here, not at the top: rare, and start-up pays for every import

    try:
        return json.loads(raw, parse_int=_IntegerText)
    except RecursionError:  # nested deeper than the stdlib parser goes (orjson went 1024 deep)
        raise RejectedLine("key field is a number too large to read exactly in a line this deeply nested") from None


class _IntegerText(str):
    """An integer literal's digits as written (``parse_int`` hook); a key of type text."""


def _as_text(value: Any) -> str | None:
    """A key or type as text: ``42`` and ``"42"`` are the same; other types give None."""
    if isinstance(value, str):  # also an exact big integer (_IntegerText)
        return str(value)
    if isinstance(value, bool):  # bool is an int subclass; true is not a key
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


class EventParser:
    """Turns raw JSON lines into ``(key, kind, time_ms | None, raw)`` tuples.

    ``parse`` raises :class:`RejectedLine` for a line that is not valid UTF-8 or JSON, not
    an object, lacks the key or type, has a key that is not a string or number, or (when
    the time is required) lacks a valid time.
    """

    def __init__(self, schema: EventSchema) -> None:
        self.schema = schema
        self._get_key = field_getter(schema.key_field)
        self._get_type = field_getter(schema.type_field)
        self._get_time = field_getter(schema.time_field)
        self._kinds = {schema.create_type: CREATE, schema.pay_type: PAY}
        if schema.cancel_type is not None:
            self._kinds[schema.cancel_type] = CANCEL
        self._unit_num, self._unit_den = TIME_UNITS[schema.time_unit]
        self._windowed = schema.has_own_windows
        self._get_by = field_getter(schema.within_by) if schema.within_by else None
        self._get_deadline = field_getter(schema.deadline_field) if schema.deadline_field else None
        self._windows = dict(schema.windows)
        self._plain_window = schema.plain_window

    def create_kind_of(self, obj: dict, time: int | None) -> int:
        """The kind of the create ``obj`` at ``time`` (None: processing time) with its own
        window (:func:`create_kind`), or raise :class:`RejectedLine`: its deadline field
        is no time or not after the create, or it has no window (an unlisted value and no
        plain ``within``)."""
        schema = self.schema
        if self._get_deadline is not None:
            value = self._get_deadline(obj)
            if value is not _MISSING and value is not None:
                if time is None:
                    raise RejectedLine(f"deadline field {schema.deadline_field!r} needs event time")
                deadline = self._time_value(value, schema.deadline_field)
                if deadline <= time:
                    raise RejectedLine(
                        f"deadline field {schema.deadline_field!r} ({value!r}) is not after the create ({time})")
                return create_kind(deadline - time, self._plain_window)
        if self._get_by is not None:
            value = self._get_by(obj)
            text = None if value is _MISSING else _as_text(value)
            window = self._windows.get(text)
            if window is not None:
                return create_kind(window, self._plain_window)
            if schema.within is None:
                shown = "(missing)" if value is _MISSING else (text if text is not None else _json_type(value))
                raise RejectedLine(f"no window for {schema.within_by}={shown}")
        elif schema.within is None:
            raise RejectedLine(f"no deadline field {schema.deadline_field!r} and no --within")
        return CREATE

    def load(self, raw: bytes) -> dict:
        """Decode one line into its JSON object, or raise :class:`RejectedLine`."""
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise RejectedLine(_describe_decode_error(raw, error)) from None
        if type(obj) is not dict:
            raise RejectedLine(f"not a JSON object (got {_json_type(obj)})")
        return obj

    def parse(self, raw: bytes, time_policy: int) -> tuple[str, int, int | None, bytes]:
        """Parse one line (without its newline) into ``(key, kind, time, raw)``.

        ``time_policy`` is :data:`TIME_IGNORED` (processing time: time is None),
        :data:`TIME_REQUIRED` (event time: a missing or invalid time rejects the line) or
        :data:`TIME_OPTIONAL` (deciding the mode: None when the field is absent).
        """
        return self._parse_object(self.load(raw), raw, time_policy)

    def _parse_object(self, obj: dict, raw: bytes, time_policy: int) -> tuple[str, int, int | None, bytes]:
        """:meth:`parse` of a line already decoded into the object ``obj``."""
        # The common case (plain field names, a string key and type, integer ms) runs
        # inline; everything else goes through the slower, fully checked helpers.
        schema = self.schema
        key = self._get_key(obj)
        if type(key) is not str:
            if type(key) is float and key.is_integer() and abs(key) >= _ORJSON_INT_LIMIT:
                key = self._get_key(_load_exact(raw))  # an integer orjson could only give as a float
            key = self._text_field(key, schema.key_field, "key", "a string or number")
        type_value = self._get_type(obj)
        if type(type_value) is not str:
            type_value = self._text_field(type_value, schema.type_field, "type", "a string")
        kind = self._kinds.get(type_value, OTHER)
        if time_policy == TIME_IGNORED:
            if kind == CREATE and self._windowed:
                kind = self.create_kind_of(obj, None)
            return key, kind, None, raw
        time = self._get_time(obj)
        if not (type(time) is int and self._unit_den == self._unit_num == 1 and _MIN_TIME_MS <= time <= _MAX_TIME_MS):
            if time is _MISSING and time_policy == TIME_OPTIONAL:
                return key, kind, None, raw
            time = self._time_value(time)
        if kind == CREATE and self._windowed:
            kind = self.create_kind_of(obj, time)
        return key, kind, time, raw

    def parse_lines(
        self, lines: list[bytes], start: int, time_policy: int, default_time: int | None = None
    ) -> tuple[list[tuple[str, int, int | None, bytes]], int]:
        """Parse ``lines[start:]`` as :meth:`parse` would, up to the first line it would
        reject; return the parsed events and that line's index (``len(lines)`` if none).

        The stopped-at line is left to :meth:`parse`, which says what is wrong with it, and
        so is any line that is not one bare object (a byte order mark, a blank line, anything
        after the closing brace such as a carriage return). ``default_time`` stands in for
        the time of every event when ``time_policy`` is :data:`TIME_IGNORED`.
        """
        events: list[tuple[str, int, int | None, bytes]] = []
        append = events.append
        ignore_time = time_policy == TIME_IGNORED
        schema = self.schema
        key_field, type_field, time_field = schema.key_field, schema.type_field, schema.time_field
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        kind_of, parse_object = self._kinds.get, self._parse_object
        create_kind_of = self.create_kind_of
        by_value = None
        if self._windowed:  # a create's kind comes from its window: None here says so
            kind_of = {type_value: None if kind == CREATE else kind for type_value, kind in self._kinds.items()}.get
            if self._get_deadline is None and self._get_by is not None:
                # The common case inline: a text value, listed (or the plain window's).
                plain = CREATE if schema.within is not None else None
                by_value = {value: create_kind(ms, self._plain_window) for value, ms in schema.windows}.get
                get_by = self._get_by
        # A time inline is integer milliseconds; in another unit the range is empty, so
        # every time goes through _parse_object, which converts it.
        low, high = (_MIN_TIME_MS, _MAX_TIME_MS) if (self._unit_num, self._unit_den) == (1, 1) else (1, 0)
        for raw in itertools.islice(lines, start, None):
            try:
                obj = loads(raw)
                # No .get: not an object. A field that is absent comes out as None. A
                # dotted path is tried as one name first, as field_getter does; when that
                # finds nothing, _parse_object follows the path.
                key, type_value = obj.get(key_field), obj.get(type_field)
            except (decode_error, AttributeError):
                break
            if raw[-1] != 125:  # 125 is "}": nothing after the object
                break
            # The common case inline, as in _parse_object; anything else through it.
            if type(key) is str and type(type_value) is str:
                kind = kind_of(type_value, OTHER)
                if ignore_time:
                    if kind is not None:
                        append((key, kind, default_time, raw))
                        continue
                else:
                    time = obj.get(time_field)
                    if type(time) is int and low <= time <= high:
                        if kind is None:
                            if by_value is not None:
                                value = get_by(obj)
                                if type(value) is str:
                                    kind = by_value(value, plain)
                            if kind is None:
                                try:
                                    kind = create_kind_of(obj, time)
                                except RejectedLine:
                                    break
                        append((key, kind, time, raw))
                        continue
            try:
                key, kind, time, raw = parse_object(obj, raw, time_policy)
            except RejectedLine:
                break
            append((key, kind, default_time if ignore_time else time, raw))
        # Each parsed event is one line: the first line not parsed is the one stopped at.
        return events, start + len(events)

    @staticmethod
    def _text_field(value: Any, field: str, role: str, wanted: str) -> str:
        if value is _MISSING:
            raise RejectedLine(f"no {role} field {field!r}")
        text = _as_text(value)
        if text is None:
            raise RejectedLine(f"{role} field {field!r} is {_json_type(value)}, not {wanted}")
        return text

    def time_of(self, obj: dict) -> int:
        """The event time of ``obj`` in integer epoch milliseconds, or raise :class:`RejectedLine`."""
        return self._time_value(self._get_time(obj))

    def _time_value(self, value: Any, field: str | None = None) -> int:
        field = field or self.schema.time_field
        if value is _MISSING:
            raise RejectedLine(f"no time field {field!r}")
        if isinstance(value, int) and not isinstance(value, bool):
            # Floor division: sub-millisecond digits are dropped the same way for every unit.
            ms = value * self._unit_num // self._unit_den
        elif isinstance(value, float):
            # Via the shortest decimal text, so 1.001 s is 1001 ms and not 1000.999...
            from decimal import Decimal, InvalidOperation  # only for float times: lean start-up

            try:
                exact = Decimal(repr(value)) * self._unit_num / self._unit_den
                ms = int(exact.to_integral_value(rounding="ROUND_FLOOR"))
            except (InvalidOperation, OverflowError, ValueError):
                raise RejectedLine(f"time field {field!r} is not a finite number") from None
        elif isinstance(value, str):
            ms = _parse_iso(value, field)
        else:
            raise RejectedLine(
                f"time field {field!r} is {_json_type(value)}, not a number or ISO-8601 string"
            )
        if ms < _MIN_TIME_MS:
            raise RejectedLine(f"time field {field!r} is before the year 1 ({value!r})")
        if ms > _MAX_TIME_MS:
            raise RejectedLine(f"time field {field!r} is after the year 9999 ({value!r})")
        return ms

"""Rows for people: one aligned line per result (time, result, key, detail and the
chosen fields of the order), plain or coloured, and the ISO-8601 text of a moment.

The stdout sink (:mod:`.sinks`) writes them as it writes JSON lines; a formatter's
``format_all`` turns a whole batch into rows at once, ``format`` is the one-row
definition it is held to.
"""

from __future__ import annotations

import datetime as _dt
import functools
from typing import Callable, Sequence

import orjson

from ..rules.durations import format_duration
from ..rules.events import MISSING as _ABSENT, field_getter
from ..rules.matcher import PaidLate, Reminder, Result, Success, Timeout

__all__ = ["HumanFormatter", "format_time"]


#: The Gregorian calendar repeats every 400 years, to the millisecond.
_CYCLE_MS = 146_097 * 86_400_000
_EPOCH = _dt.datetime(1970, 1, 1)


def format_time(epoch_ms: int, local: bool = False) -> str:
    """Epoch milliseconds as ISO-8601 with milliseconds: ``2026-11-23T10:00:02.500Z`` (UTC),
    or in the machine's time zone with its offset (``local``).

    A time beyond the years 1..9999 (a deadline just past the last accepted event time)
    is still written, with the year in ISO's expanded form (``+10000-01-01T...``), rather
    than failing.
    """
    second, millisecond = divmod(epoch_ms, 1000)
    before, after = _second_text(second, local)
    return f"{before}{millisecond:03d}{after}"


@functools.lru_cache(maxsize=1024)
def _second_text(second: int, local: bool) -> tuple[str, str]:
    """The text of a time before and after its milliseconds. Results come in time order,
    so rows share their second: worked out once per second."""
    epoch_ms = second * 1000
    cycles = 0
    try:
        moment = _moment(epoch_ms, local)
    except OverflowError:
        # Beyond what datetime holds: move by whole 400-year cycles (the Gregorian
        # calendar repeats after each) into 1970..2369, in one step however far it is
        # (a deadline of --within 999999999999999d lies some 10^9 cycles away).
        cycles = epoch_ms // _CYCLE_MS
        moment = _moment(epoch_ms - cycles * _CYCLE_MS, local)
    year = moment.year + 400 * cycles
    text = f"{year:04d}" if 0 < year <= 9999 else f"{year:+05d}"
    text += moment.strftime("-%m-%dT%H:%M:%S.")
    if not local:
        return text, "Z"
    offset = moment.strftime("%z")
    return text, offset[:3] + ":" + offset[3:]


def _moment(epoch_ms: int, local: bool) -> _dt.datetime:
    """The datetime of ``epoch_ms``, UTC or (``local``) in this machine's zone."""
    moment = _EPOCH + _dt.timedelta(milliseconds=epoch_ms)
    return moment.replace(tzinfo=_dt.timezone.utc).astimezone() if local else moment


#: Rows repeat the same durations (pay latencies in whole milliseconds): formatted once each.
_duration_text = functools.lru_cache(maxsize=4096)(format_duration)


class HumanFormatter:
    """Aligned rows for people: time, result, key, detail, and the chosen ``fields`` of the
    order (``orderId=o-1 amount=29.0``) when its events have them; coloured when
    ``paint`` is given.

    ``paint(style, text)`` wraps text in the terminal's codes for a style name
    (``success``, ``timeout``, ``cancelled``, ``dim``); without it rows are plain text
    and carry the same words. ``fields`` are names or dotted paths looked up in the
    create event, then in the pay or cancel. Times are UTC, or the machine's local time
    with its offset (``local_time``).
    """

    KEY_WIDTH = 10
    DETAIL_WIDTH = 22
    #: What a person following up needs, when the events carry it (``--fields``).
    DEFAULT_FIELDS = ("orderId", "amount")

    def __init__(self, within: int, paint: Callable[[str, str], str] | None = None,
                 fields: Sequence[str] = DEFAULT_FIELDS, local_time: bool = False) -> None:
        self._within = within
        self._within_text = format_duration(within)
        self._paint = paint
        self._fields = [(name, field_getter(name)) for name in fields]
        self._local_time = local_time
        # For format_all: the fields as (`` name=``, name, for a dotted name the path into
        # nested objects), and texts that repeat from row to row, worked out once each.
        self._field_lookups = [(f" {name}=", name, _path_or_none(get) if "." in name else None)
                               for name, get in self._fields]
        self._detail_texts: dict[int, tuple[str, str]] = {}
        timeout = f"no pay within {self._within_text}"
        self._timeout_details = {
            False: _detail_columns(timeout),
            True: _detail_columns(timeout + " (recovered after restart)"),
        }

    def format(self, result: Result) -> bytes:
        """One result as one row."""
        kind, second = type(result), None
        if kind is Success:
            word, style, second = "success  ", "success", result.pay
            detail = f"paid after {_duration_text(result.paid - result.created)}"
        elif kind is Timeout:
            word, style = "timeout  ", "timeout"
            detail = f"no pay within {_duration_text(result.deadline - result.created)}"
            if result.recovered:
                detail += " (recovered after restart)"
        elif kind is Reminder:
            word, style = f"reminder {result.stage}", "reminder"
            detail = _reminder_detail(result)
        elif kind is PaidLate:
            word, style, second = "paid_late", "cancelled", result.pay
            detail = f"paid {_duration_text(result.paid - result.deadline)} after its deadline"
        else:
            word, style, second = "cancelled", "cancelled", result.cancel
            detail = f"cancelled after {_duration_text(result.cancelled - result.created)}"
        key = result.key if result.key.isprintable() else ascii(result.key)
        moment = format_time(result.time, self._local_time)
        if self._paint is not None:
            moment, word = self._paint("dim", moment), self._paint(style, word)
        shown = self._field_texts(result.create, second) if self._fields else None
        if shown:
            row = f"{moment}  {word}  {key:<{self.KEY_WIDTH}}  {detail:<{self.DETAIL_WIDTH}}  {' '.join(shown)}\n"
        else:
            row = f"{moment}  {word}  {key:<{self.KEY_WIDTH}}  {detail}\n"
        return row.encode("utf-8", "backslashreplace")

    def _field_texts(self, create: bytes, second: bytes | None) -> list[str]:
        """``name=value`` of each chosen field, from the create event or else the second one."""
        first, other = _object(create), None
        texts = []
        for name, get in self._fields:
            value = get(first)
            if (value is _ABSENT or value is None) and second is not None:
                if other is None:  # decoded only when the create lacks a field
                    other = _object(second)
                value = get(other)
            if value is not _ABSENT and value is not None:
                texts.append(f"{name}={_field_text(value)}")
        return texts

    def format_all(self, results: Sequence[Result]) -> list[bytes]:
        """The rows of ``results``, in order, as one piece of bytes in a list (what
        :class:`ResultWriter` writes): exactly what :meth:`format` gives for each, joined
        (a property test holds them to it).

        Rows cost a replay more than its JSON lines, so this is :meth:`format` again with
        less work per row: one loop, plain names looked up with ``dict.get``, and the texts
        that repeat (a row's time, its detail) worked out once.
        """
        if self._paint is not None:  # colour is for a terminal, which reads slower than this
            return [self.format(result) for result in results]
        details = self._detail_texts
        if len(details) > _DETAIL_CACHE_SIZE:
            details.clear()
        local, fields, timeout_details = self._local_time, self._field_lookups, self._timeout_details
        within = self._within
        key_width = self.KEY_WIDTH
        loads, dumps, millis = orjson.loads, orjson.dumps, _MILLISECOND_TEXTS
        last_time = last_second = None
        before = after = moment = ""
        rows: list[str] = []
        append = rows.append
        for result in results:
            kind = type(result)
            if kind is Timeout:
                head, time, create, second = "  timeout    ", result[2], result[3], None
                if result[2] - result[1] == within:
                    ending, before_fields = timeout_details[result[4]]
                else:  # a window of its own
                    recovered = " (recovered after restart)" if result[4] else ""
                    ending, before_fields = _duration_columns("no pay within ", result[2] - result[1], recovered)
            elif kind is Success:
                head, time, create, second = "  success    ", result[2], result[4], result[5]
                latency = result[2] - result[1]
                texts = details.get(latency)
                if texts is None:
                    texts = details[latency] = _duration_columns("paid after ", latency, "")
                ending, before_fields = texts
            elif kind is Reminder:
                head, time, create, second = f"  reminder {result[5]}  ", result[2], result[4], None
                ending, before_fields = _detail_columns(_reminder_detail(result))
            elif kind is PaidLate:
                head, time, create, second = "  paid_late  ", result[3], result[4], result[5]
                ending, before_fields = _duration_columns("paid ", result[3] - result[2], " after its deadline")
            else:
                head, time, create, second = "  cancelled  ", result[2], result[4], result[5]
                ending, before_fields = _duration_columns("cancelled after ", result[2] - result[1], "")
            key = result[0]  # (a dict of key texts was slower: 100k keys overflow the CPU caches)
            key = key.ljust(key_width) if key.isprintable() else ascii(key).ljust(key_width)
            if time != last_time:  # results come in time order: rows share their time
                last_time, milli = time, time % 1000
                if time - milli != last_second:
                    last_second = time - milli
                    before, after = _second_text(time // 1000, local)
                moment = f"{before}{millis[milli]}{after}"
            shown = ""  # " name=value" for each field found
            if fields:
                try:
                    first = loads(create)
                except orjson.JSONDecodeError:
                    first = {}
                if type(first) is not dict:
                    first = {}
                other = None
                for prefix, name, path in fields:
                    # Absent and null both come out None, and both mean "look further".
                    value = first.get(name)
                    if value is None and path is not None:
                        value = path(first)
                    if value is None:
                        if second is None:
                            continue
                        if other is None:
                            other = _object(second)
                        value = other.get(name)
                        if value is None and path is not None:
                            value = path(other)
                        if value is None:
                            continue
                    if type(value) is str and value.isprintable() and " " not in value:
                        shown = f"{shown}{prefix}{value}"
                    else:
                        shown = f"{shown}{prefix}{dumps(value).decode()}"
            if shown:
                append(f"{moment}{head}{key}{before_fields}{shown}\n")
            else:
                append(f"{moment}{head}{key}{ending}")
        return ["".join(rows).encode("utf-8", "backslashreplace")] if rows else []

    def format_event(self, time: int, raw: bytes) -> bytes:
        """A dimmed input event row (``simulate --show-events``)."""
        text = f"{format_time(time, self._local_time)}  {'event':<9}  {raw.decode('utf-8', 'backslashreplace')}"
        return ((self._paint("dim", text) if self._paint else text) + "\n").encode()


#: Milliseconds as a time shows them, ``000`` to ``999``.
_MILLISECOND_TEXTS = [f"{millisecond:03d}" for millisecond in range(1000)]

#: Pay latencies whose detail texts a HumanFormatter keeps (~1 MB at most): with a
#: window of 1s a run has at most 1,000 of them.
_DETAIL_CACHE_SIZE = 1 << 12


def _reminder_detail(reminder: Reminder) -> str:
    """``15m after create, 45m left``."""
    return (f"{_duration_text(reminder.due - reminder.created)} after create, "
            f"{_duration_text(reminder.deadline - reminder.due)} left")


def _detail_columns(detail: str) -> tuple[str, str]:
    """A row's detail with what surrounds it: as the end of a row, and padded to its
    column with the space before the fields (each field brings its own space)."""
    return f"  {detail}\n", f"  {detail:<{HumanFormatter.DETAIL_WIDTH}} "


def _duration_columns(before: str, milliseconds: int, after: str) -> tuple[str, str]:
    """:func:`_detail_columns` of a detail naming a duration."""
    return _detail_columns(f"{before}{_duration_text(milliseconds)}{after}")


def _path_or_none(get: Callable[[dict], object]) -> Callable[[dict], object]:
    """A dotted field's getter that gives None for a missing field."""

    def lookup(obj: dict) -> object:
        value = get(obj)
        return None if value is _ABSENT else value

    return lookup


def _object(raw: bytes) -> dict:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return obj if type(obj) is dict else {}


def _field_text(value) -> str:
    """A field's value as a person reads it: text bare, anything else as JSON."""
    if isinstance(value, str):
        return value if value.isprintable() and " " not in value else orjson.dumps(value).decode()
    return orjson.dumps(value).decode()

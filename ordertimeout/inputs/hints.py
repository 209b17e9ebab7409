"""Hints for runs that worked but probably not as meant: a new user's usual mistakes give
results with exit 0, so the run says what it saw and which option fixes it.

- No time field in the first event (``"timestamp"`` where ``--time-field`` says ``ts``):
  the run matched by arrival time. Said once the input has ended (a finished file or
  stdin), before the wait for the last deadlines, unless ``--processing-time`` asked for it.
- Many late events: how late they were, and the ``--lateness`` that would have kept them.
- Numeric times that only make sense in another unit (epoch seconds read as milliseconds
  give 1970 dates): the ``--time-unit`` that fits.

Each function returns the hint's text, or None; the command prints it. Nothing here
touches the matching: it reads counters and the line that decided the time mode.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from ..rules.durations import format_duration
from ..rules.events import MISSING, TIME_UNITS, field_getter

__all__ = ["processing_time_hint", "late_hint", "unit_hint", "time_unit_hint", "time_like_fields"]

#: A share of late events from which a run gets the --lateness hint (1 in 100).
LATE_SHARE = 0.01
#: Epoch milliseconds a real shop's events fall in: 2000-01-01 to 2100-01-01 (UTC).
PLAUSIBLE_MS = (946_684_800_000, 4_102_444_800_000)
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
#: Field names (lower case, without ``_`` and ``-``) that usually hold a time.
_TIME_NAMES = ("ts", "timestamp", "time", "at", "eventtime", "datetime", "date", "createdat", "when")


def processing_time_hint(first_event: bytes | None, time_field: str) -> str | None:
    """The hint for a run that went to processing time because its first event had no
    time field (call it only when ``--processing-time`` was not given): ``no 'ts' field
    in the first event: matching by arrival time; use --time-field NAME (fields that look
    like times: timestamp), or --processing-time to say this is meant``."""
    if first_event is None:
        return None
    text = f"no {time_field!r} field in the first event: matching by arrival time; use --time-field NAME"
    names = time_like_fields(_object(first_event))
    if names:
        text += f" (fields that look like times: {', '.join(names)})"
    return text + ", or --processing-time to say this is meant"


def time_like_fields(obj: dict | None) -> list[str]:
    """The fields of ``obj`` (nested ones as dotted paths) whose name or value says time:
    a name like ``timestamp`` or ``created_at`` with a number or text, or ISO-8601 text."""
    found: list[str] = []

    def walk(value: dict, prefix: str, depth: int) -> None:
        for name, item in value.items():
            path = f"{prefix}{name}"
            if isinstance(item, dict) and depth < 3:
                walk(item, path + ".", depth + 1)
            elif _time_name(str(name)) and isinstance(item, (int, float, str)) and not isinstance(item, bool):
                found.append(path)
            elif isinstance(item, str) and _iso(item):
                found.append(path)

    if isinstance(obj, dict):
        walk(obj, "", 0)
    return found[:5]


def late_hint(events: int, late: int, late_by: int, lateness: int, idle: int | None) -> str | None:
    """When at least :data:`LATE_SHARE` of the events were late: how late, and what would
    have kept them: ``93% of events were late by up to 198ms: try --lateness 200ms``.

    ``late_by`` is the most a late event was behind the largest time before it, so a
    ``--lateness`` of at least that keeps every one of them (rounded up to one significant
    digit). A late event no further behind than ``lateness`` was late because ``--idle``
    moved the watermark with the wall clock: then the hint names ``--idle``.
    """
    if not events or not late or late < events * LATE_SHARE:
        return None
    share = max(1, math.floor(late * 100 / events))
    text = f"{share}% of events were late by up to {format_duration(late_by)}"
    if late_by <= lateness:
        if idle is None:
            return text
        return text + f": the watermark followed the wall clock; try a longer --idle than {format_duration(idle)}"
    return text + f": try --lateness {format_duration(_round_up(late_by))}"


def _round_up(milliseconds: int) -> int:
    """Up to one significant digit: 198 -> 200, 1861 -> 2000, 7 -> 7."""
    step = 10 ** (len(str(milliseconds)) - 1)
    return -(-milliseconds // step) * step


def time_unit_hint(raw: bytes | None, time_field: str, unit: str) -> str | None:
    """:func:`unit_hint` for the time field of the line ``raw`` (a JSON object)."""
    obj = _object(raw) if raw is not None else None
    if obj is None:
        return None
    value = field_getter(time_field)(obj)
    return None if value is MISSING else unit_hint(value, unit)


def unit_hint(value: Any, unit: str) -> str | None:
    """When a numeric time makes sense (a moment of the years 2000 to 2099) in exactly one
    ``--time-unit`` and it is not ``unit``: ``times like 1795000000 read as milliseconds
    are in 1970; as seconds they are recent: try --time-unit s``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    fitting = [name for name in TIME_UNITS if _plausible(value, name)]
    if unit in fitting or len(fitting) != 1:
        return None
    (fits,) = fitting
    return (f"times like {value!r} read as {_UNIT_NAMES[unit]} are {_when(value, unit)}; as {_UNIT_NAMES[fits]} "
            f"they are recent: try --time-unit {fits}")


def _plausible(value: int | float, unit: str) -> bool:
    num, den = TIME_UNITS[unit]
    return PLAUSIBLE_MS[0] <= value * num / den < PLAUSIBLE_MS[1]


def _when(value: int | float, unit: str) -> str:
    num, den = TIME_UNITS[unit]
    ms = value * num / den
    if ms < PLAUSIBLE_MS[0]:
        return "in 1970" if 0 <= ms < 31_536_000_000 else "long ago"
    return "far in the future"


def _time_name(name: str) -> bool:
    normal = name.lower().replace("_", "").replace("-", "")
    if normal in _TIME_NAMES or normal.endswith(("time", "timestamp", "date")):
        return True
    return name.endswith(("_at", "At", "-at", "_ts", "Ts", "-ts"))  # created_at, eventTs (not "amounts")


def _iso(text: str) -> bool:
    if len(text) < 10 or not text[:4].isdigit() or text[4:5] != "-":
        return False
    import datetime as _dt  # only for the hint, once

    try:
        _dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _object(raw: bytes) -> dict | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None

"""Durations: ``1s``, ``250ms``, ``1.5s``, ``1h30m``, ``2d`` to integer milliseconds and back;
and a moment as people read it (``format_instant``).

All times inside ordertimeout are integer milliseconds, so a duration must come to a
whole number of milliseconds; ``1500us`` is refused rather than silently rounded, because
a window that is not what the user typed breaks "correct to the millisecond".
"""

from __future__ import annotations

import datetime as _dt
import functools
import re

__all__ = ["DurationError", "parse_duration", "format_duration", "format_instant"]

#: Nanoseconds per unit, so every supported unit is an exact integer factor.
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_NS_PER_MS = 1_000_000
#: The longest duration taken: 10,000 years. Event times end at the year 9999, so a longer
#: window means nothing, and a deadline past 2**63 ms can be neither saved (SQLite,
#: orjson: `--state` failed with a traceback) nor shown.
MAX_MS = 10_000 * 146_097 * 86_400_000 // 400
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|ms|s|m|h|d)")
_BARE_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")


class DurationError(ValueError):
    """A duration string that cannot be used: malformed, zero, negative, sub-millisecond or
    longer than :data:`MAX_MS`."""


def parse_duration(text: str, *, allow_zero: bool = False) -> int:
    """Parse ``text`` into a whole number of milliseconds.

    Accepts one or more ``<number><unit>`` parts (``1h30m``, ``1.5s``) with units
    ns/us/ms/s/m/h/d, or a bare number meaning seconds. Raises :class:`DurationError`
    when the text is malformed, negative, zero (unless ``allow_zero``), not a whole
    number of milliseconds, or longer than 10,000 years.
    """
    cleaned = text.strip().lower()
    if not cleaned:
        raise DurationError("empty duration")
    if cleaned.startswith("-"):
        raise DurationError(f"{text!r} is negative")
    if _BARE_NUMBER.fullmatch(cleaned):
        total_ns = _exact(cleaned.lstrip("+")) * _UNIT_NS["s"]
    else:
        total_ns = 0
        position = 0
        for part in _PART.finditer(cleaned):
            if part.start() != position:
                break
            total_ns += _exact(part.group(1)) * _UNIT_NS[part.group(2)]
            position = part.end()
        if position != len(cleaned) or position == 0:
            raise DurationError(
                f"{text!r} is not a duration (use e.g. 1s, 250ms, 1.5s, 1h30m; units ns/us/ms/s/m/h/d)"
            )
    if total_ns == 0 and not allow_zero:
        raise DurationError(f"{text!r} is zero; it must be positive")
    milliseconds, remainder = divmod(total_ns, _NS_PER_MS)
    if remainder:
        raise DurationError(f"{text!r} is not a whole number of milliseconds")
    if milliseconds > MAX_MS:
        raise DurationError(f"{text!r} is longer than 10,000 years")
    return int(milliseconds)


def _exact(number: str):
    """The exact value of a decimal numeral: an int, or a Fraction when it has a point
    (imported only then, so start-up with whole-number options never loads fractions)."""
    if "." not in number:
        return int(number)
    from fractions import Fraction

    return Fraction(number)


def format_duration(milliseconds: int) -> str:
    """Render milliseconds compactly for people: ``250ms``, ``1s``, ``1.5s``, ``1m30s``, ``2h``."""
    if milliseconds < 0:
        return "-" + format_duration(-milliseconds)
    if milliseconds < 1000:
        return f"{milliseconds}ms"
    if milliseconds < 60_000:
        seconds = milliseconds / 1000
        return f"{seconds:g}s" if milliseconds % 1000 else f"{milliseconds // 1000}s"
    parts = []
    remainder = milliseconds
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        count, remainder = divmod(remainder, size)
        if count:
            parts.append(f"{count}{unit}")
    if remainder:
        parts.append(format_duration(remainder))
    return "".join(parts)


#: Days from 0001-01-01 (ordinal 1) to 1970-01-01.
_EPOCH_ORDINAL = 719_163


def format_instant(epoch_ms: int) -> str:
    """Epoch milliseconds as the rows show a moment (ISO-8601, UTC, milliseconds):
    ``2026-11-23T10:00:02.500Z``; the bare number beyond the years 1..9999."""
    day, rest = divmod(epoch_ms, 86_400_000)
    date = _date_text(day)
    if date is None:
        return f"{epoch_ms} (epoch ms)"
    hour, rest = divmod(rest, 3_600_000)
    minute, rest = divmod(rest, 60_000)
    second, millisecond = divmod(rest, 1000)
    return f"{date}T{hour:02d}:{minute:02d}:{second:02d}.{millisecond:03d}Z"


@functools.lru_cache(maxsize=64)
def _date_text(day: int) -> str | None:
    """The date of a day since the epoch, worked out once per day (late events of a run
    share a few days, and each late warning names two moments)."""
    try:
        date = _dt.date.fromordinal(_EPOCH_ORDINAL + day)
    except (ValueError, OverflowError):
        return None
    return f"{date.year:04d}-{date.month:02d}-{date.day:02d}"

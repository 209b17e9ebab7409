"""The parser's rejections and the texts of its reasons: ISO-8601 times, JSON types and
decode errors in words (helpers of :mod:`.events`, which exports :class:`RejectedLine`)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import orjson

__all__ = ["RejectedLine"]

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class RejectedLine(ValueError):
    """A line that cannot be used as an event; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _parse_iso(text: str, field: str) -> int:
    """ISO-8601 text to epoch milliseconds; text without an offset is UTC."""
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise RejectedLine(f"time field {field!r} is not ISO-8601: {text[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _describe_decode_error(raw: bytes, error: orjson.JSONDecodeError) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not valid UTF-8 (byte {bad.start + 1})"
    message = str(error).split(":", 1)[0]
    return f"not valid JSON ({message}, column {error.colno})"

"""Diagnostics on stderr, as text for people or as JSON lines for log collectors.

Every warning, error and notice of a run goes through one :class:`Log`. In text form a
message is the familiar ``ordertimeout: <message>`` line. In JSON form (``--log-format
json``) it is one object per line: ``time`` (UTC, ISO-8601 with milliseconds), ``level``
(``error``, ``warning`` or ``info``), ``message`` (the same words as the text form) and
``fields`` (the message's parts as data: line number, reason, counters...).
"""

from __future__ import annotations

import datetime as _dt
import time
from typing import Callable, TextIO

import orjson

__all__ = ["Log", "FORMATS"]

#: The values of ``--log-format``.
FORMATS = ("text", "json")


class Log:
    """Writes diagnostics to ``stream`` in ``format`` (``text`` or ``json``).

    ``clock`` returns the wall-clock time in epoch seconds (injected for tests); it stamps
    JSON lines only.
    """

    def __init__(self, stream: TextIO, format: str = "text", clock: Callable[[], float] = time.time) -> None:
        if format not in FORMATS:
            raise ValueError(f"unknown log format {format!r}")
        self.stream = stream
        self.format = format
        self._clock = clock

    @property
    def is_json(self) -> bool:
        """Whether lines are JSON (so people-only output such as a status line is left out)."""
        return self.format == "json"

    def error(self, message: str, **fields) -> None:
        """Something failed; the run cannot do its job (it usually ends)."""
        self.write("error", message, fields)

    def warning(self, message: str, **fields) -> None:
        """Something was not used or not done; the run goes on."""
        self.write("warning", message, fields)

    def info(self, message: str, **fields) -> None:
        """A notice: the run tells what it did (e.g. its summary)."""
        self.write("info", message, fields)

    def write(self, level: str, message: str, fields: dict) -> None:
        """One diagnostic line."""
        if self.format == "text":
            self.stream.write(f"ordertimeout: {message}\n")
            return
        record = {"time": _iso(self._clock()), "level": level, "message": message, "fields": fields}
        # Fields are plain data; anything else (a path object, bytes) is written as its text.
        line = orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS)
        self.stream.write(line.decode() + "\n")

    def flush(self) -> None:
        """Push written lines out."""
        self.stream.flush()


def _iso(epoch_seconds: float) -> str:
    moment = _dt.datetime.fromtimestamp(epoch_seconds, _dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

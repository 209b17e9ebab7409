"""Sinks: results to stdout as JSON lines or aligned rows, rejected lines to stderr and a file.

Everything for stdout goes through one :class:`OutputBuffer`: lines collect in memory and
leave in one write per flush. The runtime flushes after each chunk of input and each timer
firing, so a pipe sees results promptly without one system call per line.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
from typing import BinaryIO, Callable, Iterable, Sequence, TextIO

import orjson

from .durations import format_duration
from .histogram import LatencyCounts
from .events import MISSING as _ABSENT, field_getter
from .logs import Log
from .matcher import Cancelled, PaidLate, Result, Success, Timeout

__all__ = [
    "OutputBuffer",
    "json_line",
    "json_lines",
    "JsonFormatter",
    "HumanFormatter",
    "ResultWriter",
    "RejectReporter",
    "SinkError",
    "format_time",
    "reason_class",
]

#: Result kinds by the name ``--only`` uses.
RESULT_TYPES = {"success": Success, "timeout": Timeout, "cancelled": Cancelled, "paid_late": PaidLate}

#: Buffered bytes that force a write even before the next flush point.
FLUSH_BYTES = 1 << 16


class OutputBuffer:
    """Collects output bytes and writes them to ``stream`` in one call per flush."""

    def __init__(self, stream: BinaryIO, flush_bytes: int = FLUSH_BYTES) -> None:
        self._stream = stream
        self._parts: list[bytes] = []
        self._size = 0
        self._flush_bytes = flush_bytes
        #: Called around each write, e.g. to lift a status line off a shared terminal.
        self.before_write: Callable[[], None] | None = None
        self.after_write: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        """Queue ``data``; write out when the buffer is large."""
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self._flush_bytes:
            self.flush()

    def write_lines(self, lines: list[bytes]) -> None:
        """Queue several pieces at once; write out when the buffer is large."""
        self._parts += lines
        self._size += sum(map(len, lines))
        if self._size >= self._flush_bytes:
            self.flush()

    def flush(self) -> None:
        """Write everything queued so far (raises ``BrokenPipeError`` if the reader left)."""
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        if self.before_write is not None:
            self.before_write()
        self._stream.write(data)
        self._stream.flush()
        if self.after_write is not None:
            self.after_write()


#: Characters a key may hold and still appear as it is both in a JSON string and in the
#: result id (see matcher.result_id, which percent-encodes everything else).
_PLAIN_KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~@"

# The JSON lines of results whose key is plain, one %-format each: the same bytes as
# _json_line_any_key (a property test holds them to it), without escaping the key twice.
_PLAIN_SUCCESS = b'{"result":"success","id":"success:%b:%d:%d","key":"%b","created":%d,"paid":%d,"deadline":%d,"create":%b,"pay":%b}\n'
_PLAIN_TIMEOUT = b'{"result":"timeout","id":"timeout:%b:%d:%d","key":"%b","created":%d,"deadline":%d,"create":%b}\n'


def json_line(result: Result) -> bytes:
    """One result as one JSON line; the original create/pay objects are embedded unchanged."""
    return json_lines((result,))[0]


def json_lines(results: Iterable[Result]) -> list[bytes]:
    """The JSON line of each result (see :func:`json_line`), in one loop.

    The hot path of ``--json``: a success or timeout whose key is plain is one %-format;
    the names it needs are looked up once per batch rather than once per result.
    """
    lines: list[bytes] = []
    append = lines.append
    success, timeout, plain = Success, Timeout, _PLAIN_KEY_CHARS
    success_line, timeout_line, any_key = _PLAIN_SUCCESS, _PLAIN_TIMEOUT, _json_line_any_key
    for result in results:
        kind = type(result)
        key = result[0]
        # isascii and isalnum accept the usual key at half the cost of strip.
        if (kind is success or kind is timeout) and (key.isascii() and key.isalnum() or not key.strip(plain)):
            key_bytes = key.encode()
            if kind is success:
                _, created, paid, deadline, create, pay, seq = result
                append(success_line % (key_bytes, created, seq, key_bytes, created, paid, deadline, create, pay))
                continue
            _, created, deadline, create, recovered, seq = result
            if not recovered:
                append(timeout_line % (key_bytes, created, seq, key_bytes, created, deadline, create))
                continue
        append(any_key(result))
    return lines


def _json_line_any_key(result: Result) -> bytes:
    """json_line for any key: JSON-escaped, percent-encoded in the id."""
    key = orjson.dumps(result.key)
    # The id is plain ASCII without quotes or backslashes (see result_id): no escaping.
    rid = result.id.encode()
    if type(result) is Success:
        return b'{"result":"success","id":"%b","key":%b,"created":%d,"paid":%d,"deadline":%d,"create":%b,"pay":%b}\n' % (
            rid,
            key,
            result.created,
            result.paid,
            result.deadline,
            result.create,
            result.pay,
        )
    if type(result) is Timeout:
        recovered = b',"recovered":true' if result.recovered else b""
        return b'{"result":"timeout","id":"%b","key":%b,"created":%d,"deadline":%d%b,"create":%b}\n' % (
            rid,
            key,
            result.created,
            result.deadline,
            recovered,
            result.create,
        )
    if type(result) is PaidLate:
        return b'{"result":"paid_late","id":"%b","key":%b,"created":%d,"deadline":%d,"paid":%d,"create":%b,"pay":%b}\n' % (
            rid,
            key,
            result.created,
            result.deadline,
            result.paid,
            result.create,
            result.pay,
        )
    return b'{"result":"cancelled","id":"%b","key":%b,"created":%d,"cancelled":%d,"deadline":%d,"create":%b,"cancel":%b}\n' % (
        rid,
        key,
        result.created,
        result.cancelled,
        result.deadline,
        result.create,
        result.cancel,
    )


class JsonFormatter:
    """Results as JSON lines, for jq and other programs."""

    #: The JSON line of one result.
    format = staticmethod(json_line)
    #: The JSON lines of a list of results (what :class:`ResultWriter` calls).
    format_all = staticmethod(json_lines)


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
    while True:
        try:
            moment = _EPOCH + _dt.timedelta(milliseconds=epoch_ms - cycles * _CYCLE_MS)
            if local:
                moment = moment.replace(tzinfo=_dt.timezone.utc).astimezone()
            break
        except OverflowError:
            cycles += 1 if epoch_ms > 0 else -1
    year = moment.year + 400 * cycles
    text = f"{year:04d}" if 0 < year <= 9999 else f"{year:+05d}"
    text += moment.strftime("-%m-%dT%H:%M:%S.")
    if not local:
        return text, "Z"
    offset = moment.strftime("%z")
    return text, offset[:3] + ":" + offset[3:]


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
            detail = f"no pay within {self._within_text}"
            if result.recovered:
                detail += " (recovered after restart)"
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
                ending, before_fields = timeout_details[result[4]]
            elif kind is Success:
                head, time, create, second = "  success    ", result[2], result[4], result[5]
                latency = result[2] - result[1]
                texts = details.get(latency)
                if texts is None:
                    texts = details[latency] = _duration_columns("paid after ", latency, "")
                ending, before_fields = texts
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


class ResultWriter:
    """Formats results into an :class:`OutputBuffer`, keeping only the kinds asked for.

    It sees every result, printed or not, so it also records pay latencies (``paid -
    created`` of each success) for the exit summary.
    """

    def __init__(self, out: OutputBuffer, formatter, only: str | None = None) -> None:
        self.out = out
        self.formatter = formatter
        # A formatter may format a whole list at once (format_all), for speed.
        self._format_all = getattr(formatter, "format_all", None)
        self._keep = RESULT_TYPES[only] if only else None
        self.latencies = LatencyCounts()

    def write(self, results: Iterable[Result]) -> None:
        """Queue the lines of ``results``."""
        results = results if isinstance(results, list) else list(results)
        keep = self._keep
        self.latencies.extend([result[2] - result[1] for result in results if type(result) is Success])
        if keep is not None:
            results = [result for result in results if type(result) is keep]
        if self._format_all is not None:
            self.out.write_lines(self._format_all(results))
        else:
            fmt = self.formatter.format
            self.out.write_lines([fmt(result) for result in results])


    def flush(self) -> None:
        """Send queued lines on."""
        self.out.flush()


#: Reason classes of rejected lines, by the start of the reason text (the words of
#: events.py, pipeline.py and runtime.py): a short, fixed set for counting and labels.
_REASON_CLASSES = (
    ("late:", "late"),
    ("line longer than", "too_long"),
    ("not valid UTF-8", "not_utf8"),
    ("not valid JSON", "not_json"),
    ("not a JSON object", "not_object"),
    ("no key field", "bad_key"),
    ("key field", "bad_key"),
    ("no type field", "bad_type"),
    ("type field", "bad_type"),
    ("no time field", "bad_time"),
    ("time field", "bad_time"),
)


def reason_class(reason: str) -> str:
    """The class of a rejection reason: ``late``, ``not_json``, ``bad_key``... or ``other``."""
    for start, name in _REASON_CLASSES:
        if reason.startswith(start):
            return name
    return "other"


class RejectReporter:
    """Reports unused lines: a warning on stderr (the first few), a line in ``--rejects``.

    After ``max_warnings`` warnings one line says further ones are only counted; the
    rejects file still gets every line, so nothing read is lost.
    """

    def __init__(
        self,
        err: TextIO,
        rejects: BinaryIO | None = None,
        max_warnings: int = 10,
        show_source: bool = False,
        rejects_name: str = "rejects file",
        log: Log | None = None,
    ) -> None:
        self._err = err
        self._log = log or Log(err)
        #: Rejected lines per reason class (see :func:`reason_class`), for --stats and /metrics.
        self.by_reason: dict[str, int] = {}
        self._rejects = rejects
        self._rejects_name = rejects_name
        self._max_warnings = max_warnings
        self._show_source = show_source
        self.count = 0

    def warning_text(self, source: str, line: int, reason: str) -> str:
        """The one-line message for a rejected line."""
        return f"ordertimeout: {self._where(source, line)}: {reason}"

    def _where(self, source: str, line: int) -> str:
        return f"{source}:{line}" if self._show_source else f"line {line}"

    def report(self, source: str, line: int, reason: str, raw: bytes) -> None:
        """Record one unused line."""
        self.count += 1
        kind = reason_class(reason)
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        if self.count <= self._max_warnings:
            self._log.warning(f"{self._where(source, line)}: {reason}",
                              source=source, line=line, reason=reason, reason_class=kind)
        elif self.count == self._max_warnings + 1:
            self._log.warning(
                "further rejected lines are only counted"
                + (" (all are in the --rejects file)" if self._rejects else ""),
                rejected=self.count,
            )
        if self._rejects is not None:
            record = {
                "line": line,
                "reason": reason,
                "raw": raw.decode("utf-8", "backslashreplace"),
            }
            if self._show_source:
                record["source"] = source
            with self._writing():
                self._rejects.write(orjson.dumps(record) + b"\n")

    def flush(self) -> None:
        """Push the rejects file to disk at flush points."""
        if self._rejects is not None:
            with self._writing():
                self._rejects.flush()
        self._err.flush()

    def close(self) -> None:
        """Flush and close the rejects file."""
        try:
            self.flush()
        finally:
            rejects, self._rejects = self._rejects, None
            if rejects is not None:
                with contextlib.suppress(OSError):  # a failed flush was raised just above
                    rejects.close()

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except OSError as error:
            raise SinkError(f"cannot write {self._rejects_name}: {error.strerror or error}") from None


class SinkError(Exception):
    """An output file (``--rejects``) cannot be written; the message names it."""

"""Sinks: results to stdout as JSON lines or as rows (see :mod:`.rows`), rejected lines to stderr and a file.

Everything for stdout goes through one :class:`OutputBuffer`: lines collect in memory and
leave in one write per flush. The runtime flushes after each chunk of input and each timer
firing, so a pipe sees results promptly without one system call per line. A flush reaches
the file descriptor through :func:`write_all`, never through Python's buffered stdout,
which drops the unwritten rest of a write a signal interrupted.
"""

from __future__ import annotations

import contextlib
import os
import select
from typing import BinaryIO, Callable, Iterable, TextIO

import orjson

from ..observe.histogram import LatencyCounts
from ..observe.logs import Log
from ..rules.matcher import Cancelled, PaidLate, Reminder, Result, Success, Timeout

__all__ = [
    "OutputBuffer",
    "FdStream",
    "write_all",
    "json_line",
    "json_lines",
    "JsonFormatter",
    "ResultWriter",
    "RejectReporter",
    "SinkError",
    "reason_class",
]

#: Result kinds by the name ``--only`` uses.
RESULT_TYPES = {"success": Success, "timeout": Timeout, "cancelled": Cancelled, "paid_late": PaidLate, "reminder": Reminder}

#: Buffered bytes that force a write even before the next flush point.
FLUSH_BYTES = 1 << 16


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to the file descriptor ``fd``, or raise ``OSError``.

    A write to a pipe that a signal interrupts returns the count written so far; a signal
    before the first byte is retried by Python once its handler returned (PEP 475). So
    this loops until nothing is left: bytes reach the reader whole, in order, exactly
    once, however many signals arrive while it waits. An ``fd`` left non-blocking by
    whoever opened it is waited on rather than spun on.
    """
    view = memoryview(data)
    done, total = 0, len(view)
    while done < total:
        try:
            done += os.write(fd, view[done:])
        except BlockingIOError:
            select.select([], [fd], [])


class FdStream:
    """A binary stream over a file descriptor (stdout's): :meth:`write` returns only once
    every byte was written (see :func:`write_all`); nothing is buffered, so :meth:`flush`
    has nothing to do."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> int:
        """Write all of ``data``; returns its length."""
        write_all(self.fd, data)
        return len(data)

    def flush(self) -> None:
        """Nothing is held back: every write already reached the descriptor."""


class OutputBuffer:
    """Collects output bytes and writes them to ``stream`` in one call per flush.

    ``before_flush``, if set, runs before any queued byte is written, however the flush
    came (explicit, or the buffer being full): a host that must record results elsewhere
    before they are shown (the notify outbox) hooks in there.
    """

    def __init__(self, stream: BinaryIO, flush_bytes: int = FLUSH_BYTES) -> None:
        self._stream = stream
        self._parts: list[bytes] = []
        self._size = 0
        self._flush_bytes = flush_bytes
        #: Called around each write, e.g. to lift a status line off a shared terminal.
        self.before_write: Callable[[], None] | None = None
        self.after_write: Callable[[], None] | None = None
        self.before_flush: Callable[[], None] | None = None

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
        """Write everything queued so far (raises ``BrokenPipeError`` if the reader left).

        If ``before_flush`` raises, nothing is written and the lines stay queued."""
        if self.before_flush is not None:
            self.before_flush()
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
_PLAIN_REMINDER = (b'{"result":"reminder","id":"reminder:%b:%d:%d:%d","key":"%b","created":%d,"due":%d,"deadline":%d,'
                   b'"stage":%d,"create":%b}\n')


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
    success, timeout, reminder, plain = Success, Timeout, Reminder, _PLAIN_KEY_CHARS
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
        elif kind is reminder and (key.isascii() and key.isalnum() or not key.strip(plain)):
            key_bytes = key.encode()
            _, created, due, deadline, create, stage, seq = result
            append(_PLAIN_REMINDER % (key_bytes, created, seq, stage, key_bytes, created, due, deadline, stage, create))
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
    if type(result) is Reminder:
        return b'{"result":"reminder","id":"%b","key":%b,"created":%d,"due":%d,"deadline":%d,"stage":%d,"create":%b}\n' % (
            rid, key, result.created, result.due, result.deadline, result.stage, result.create,
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
    ("from the future", "future"),
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
    ("no window for", "no_window"),
    ("deadline field", "bad_deadline"),
    ("no deadline field", "no_window"),
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

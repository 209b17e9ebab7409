"""The run's output streams, as the commands see them: stdout for results (telling a full
disk apart from a reader that left), the reject reporter that also remembers why lines
were unusable, and quieting stdout after it failed."""

from __future__ import annotations

import io
import os
import sys
from collections import Counter

from ..notify.outbox import OutboxError
from ..outputs.sinks import FdStream, OutputBuffer, RejectReporter, SinkError

__all__ = ["StdoutError"]


class StdoutError(SinkError):
    """stdout cannot be written for a reason other than its reader leaving (a full disk)."""


class _Stdout:
    """stdout for the results, telling its own failures apart from those of other files
    (stderr, --rejects): a full disk here is named as stdout's. A reader that left stays a
    ``BrokenPipeError``, which ends the run with 141.

    Results go straight to file descriptor 1 (:class:`~.sinks.FdStream`), not through
    ``sys.stdout.buffer``: its buffered write drops the rest of a write that a signal
    interrupted (a stop while the reader is slow), and still reports success. A stream
    with no descriptor (a test runner's) is written as it is."""

    def __init__(self, stream) -> None:
        try:
            fd = stream.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):
            self._stream = stream
        else:
            stream.flush()  # anything written the usual way before the run goes first
            self._stream = FdStream(fd)

    def write(self, data: bytes) -> int:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise StdoutError(f"cannot write the results to stdout: {error.strerror or error}") from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise StdoutError(f"cannot write the results to stdout: {error.strerror or error}") from None


class _DiagnosingReporter(RejectReporter):
    """The reject reporter, also keeping what it takes to say why no line was usable:
    the count of each reason and the first few rejected lines."""

    SAMPLES = 20
    #: Distinct reason texts tallied. Texts carry numbers (a late event's time, a column),
    #: so a run of days with late events would otherwise keep one entry per event; the
    #: diagnosis only needs the most common reason of a run with nothing usable.
    REASONS = 1000

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reasons: Counter = Counter()
        self.samples: list[bytes] = []
        #: The inputs whose lines were rejected (a hint names the file to convert).
        self.sources: set[str] = set()

    def report(self, source: str, line: int, reason: str, raw: bytes) -> None:
        if len(self.sources) < 2:
            self.sources.add(source)
        if reason in self.reasons or len(self.reasons) < self.REASONS:
            self.reasons[reason] += 1
        if len(self.samples) < self.SAMPLES:
            self.samples.append(bytes(raw))
        super().report(source, line, reason, raw)


def _flush_quietly(out: OutputBuffer) -> None:
    try:
        out.flush()
    except (BrokenPipeError, StdoutError):
        _silence_stdout()  # a full disk: the error being raised already says so
    except OutboxError:
        pass  # results the outbox could not take are not shown (the error says why)


def _silence_stdout() -> None:
    """After stdout failed (its reader left, its disk is full), point fd 1 at /dev/null so
    the interpreter's exit flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (e.g. under a test runner): nothing to silence

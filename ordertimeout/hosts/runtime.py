"""The runtime: the asyncio shell around the pipeline. It only reads, feeds and sleeps.

One loop takes chunks from the reader and waits, at most, until the pipeline's next
timer (a deadline in processing time, the --idle watermark in event time) so timeouts
fire on time with no other input. A chunk's lines are worked at the moment the chunk
arrived (the reader's stamp), never before a moment already worked at. Every rule lives
in the pipeline and the matcher; this module owns waiting, flushing, checkpointing and
stopping. Results are always flushed before the checkpoint that counts their input as
done, so a crash repeats a result rather than losing it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Callable, Iterable, Protocol

from ..rules.clocks import Clock, elapsed_ms
from ..rules.events import RejectedLine
from ..observe.histogram import TIMER_LATENESS_BOUNDS_MS, Buckets
from ..rules.matcher import Timeout
from ..rules.pipeline import Pipeline, TimeMode
from ..outputs.sinks import RejectReporter, ResultWriter
from ..inputs.files import FileIdentity, SavedPosition
from ..inputs.framing import LineSplitter, Overlong
from ..inputs.sources import DRAINED, END, ROTATED, HandedOver

#: Longest line accepted by default (``--max-line-bytes``); longer ones are rejected unread.
MAX_LINE_BYTES = 1 << 20

#: Lines fed to the pipeline at a time (see Runtime._feed_lines).
BATCH_LINES = 512
#: Timeouts written at a time when a burst of them falls due (see Runtime._emit_due).
EMIT_SLICE = 256

__all__ = ["Runtime", "StrictStop", "Reader"]


class StrictStop(Exception):
    """``--strict``: the first rejected line ends the run; the message is its warning."""


class Reader(Protocol):
    """What the runtime needs from a source of chunks (see :class:`~.sources.ChunkReader`).

    ``get`` gives ``(name, chunk, arrival)``: ``arrival`` is the epoch-ms moment the chunk
    was read on the runtime's clock (None: now). ``identity(name)`` is the file an input
    is reading, or None when it is no file that a later run could resume. Marker chunks:
    ``ROTATED`` (the input starts over from byte 0), a ``HandedOver`` (the file read under
    ``name`` was rotated away: its rest goes on under ``chunk.rest``, ``name`` starts
    over with the new file) and ``DRAINED`` (a rotated file is done: its end is kept).
    """

    def start(self, clock: Clock) -> None: ...

    def stop(self) -> None: ...

    async def get(self, timeout: float | None = None): ...

    def identity(self, name: str) -> FileIdentity | None: ...

    def reading_since(self) -> int | None:
        """When reading began, if before :meth:`start` (optional: None)."""


class Runtime:
    """Drives one pipeline from a reader or a simulator, writing results as they are decided."""

    def __init__(
        self,
        pipeline: Pipeline,
        clock: Clock,
        writer: ResultWriter,
        reporter: RejectReporter,
        *,
        strict: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
        checkpointer: Callable[[Pipeline, dict[str, SavedPosition]], None] | None = None,
        checkpoint_every: int = 1000,
        final: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.max_line_bytes = max_line_bytes
        #: Called with (pipeline, resume points by file path) to save a checkpoint (``--state``).
        self.checkpointer = checkpointer
        self.checkpoint_every = checkpoint_every
        self._last_checkpoint = float("-inf")
        #: Per input name: (byte offset, line number) just after the last processed line.
        self.positions: dict[str, tuple[int, int]] = {}
        #: Per input name: the file it was reading (inputs a later run can resume).
        self.files: dict[str, FileIdentity] = {}
        #: End of input is the end of time: open orders are settled and a last line
        #: without its newline is read. False (``--state`` without ``--final``): the input
        #: goes on in a later run, so open orders stay pending in the checkpoint and a
        #: file's unfinished last line is left for the run that sees it whole.
        self.final = final
        self.clock = clock
        self.writer = writer
        self.reporter = reporter
        self.strict = strict
        self.started_ms: int | None = None
        self.finished_ms: int | None = None
        self._handled_ms: int | float = float("-inf")  # the latest moment worked at
        # Observability (--stats, /metrics): lines read, and how late timer-driven
        # timeouts went out after their deadline.
        self.lines_read = 0
        self.timer_lateness = Buckets(TIMER_LATENESS_BOUNDS_MS)

    @property
    def elapsed_ms(self) -> int:
        """Milliseconds from the start of the run to its end (or to now)."""
        return elapsed_ms(self.clock, self.started_ms, self.finished_ms)

    # -- watch ---------------------------------------------------------------------

    async def watch(self, reader: Reader) -> None:
        """Run every line of ``reader`` through the pipeline, then settle what is open
        (or, not ``final``, leave it pending in the last checkpoint)."""
        self.started_ms = self.clock.now_ms()
        reader.start(self.clock)
        try:
            # Stdin read since before the run (a prefetch) has chunks stamped earlier than
            # now: the run begins when reading did, so none of them is moved later.
            since = getattr(reader, "reading_since", None)
            self._recover(since() if since is not None else None)
            await self._read_until_end(reader)
            if self.final:
                await self._settle()
        except asyncio.CancelledError:
            self.checkpoint(force=True)  # stopped by a signal: keep what was decided
            raise
        else:
            self.checkpoint(force=True)
        finally:
            reader.stop()
            self.finished_ms = self.clock.now_ms()

    def _recover(self, since: int | None = None) -> None:
        """After a restart, orders whose deadline passed while the tool was down (in
        processing time, or in event time moved by ``--idle``) time out at once (at
        ``since``, when reading began, or now), stamped with their deadline and marked
        recovered."""
        results = self.pipeline.advance(self._moment(since))
        self._emit([result._replace(recovered=True) if type(result) is Timeout else result for result in results])

    def _moment(self, arrival: int | None) -> int:
        """The time to work at: a chunk's arrival stamp, or now; never before a moment
        already worked at (a timer that fired while the chunk waited in the queue)."""
        now = self.clock.now_ms() if arrival is None else arrival
        if now < self._handled_ms:
            return self._handled_ms
        self._handled_ms = now
        return now

    async def _read_until_end(self, reader: Reader) -> None:
        pipeline = self.pipeline
        clock = self.clock
        identity_of = getattr(reader, "identity", lambda name: None)
        # Per input name: its splitter (with the unfinished line) and its line number. A
        # followed file and the file rotated away from it are read in turns.
        reading: dict[str, tuple[LineSplitter, int]] = {}
        while True:
            timer = pipeline.next_timer()
            timeout = None if timer is None else clock.seconds_until(timer)
            try:
                item = await reader.get(timeout)
            except TimeoutError:
                self._emit_due(self._moment(None))
                self.checkpoint()
                continue
            if item is END:
                return
            name, chunk, arrival = item
            if type(chunk) is HandedOver:
                self._hand_over(reading, name, chunk.rest, identity_of)
                self.checkpoint()
                continue
            splitter, line_number = reading.get(name) or self._start_reading(name)
            identity = identity_of(name)
            if chunk:
                lines = splitter.push(chunk)
            elif chunk is ROTATED or chunk is DRAINED or self.final or identity is None:
                lines = splitter.finish()
            else:
                lines = []  # the file may still be growing: its unfinished line waits
            self.lines_read += len(lines)
            now = self._moment(arrival)
            # Timeouts already due go out before this chunk's lines are worked through.
            self._emit_due(now)
            line_number = self._feed_lines(lines, name, line_number, now)
            self.positions[name] = (splitter.offset, line_number)
            if chunk is ROTATED:  # a followed file was replaced: positions restart with it
                splitter, line_number = LineSplitter(self.max_line_bytes), 0
                self.positions[name] = (0, 0)
            reading[name] = (splitter, line_number)
            if chunk is DRAINED:  # a rotated file is done: its end stays in the checkpoint
                del reading[name]
            if identity is not None:
                self.files[name] = identity
            self.writer.flush()
            self.reporter.flush()
            self.checkpoint()

    def _start_reading(self, name: str) -> tuple[LineSplitter, int]:
        """An input's splitter and line number, from where an earlier run left it."""
        offset, line_number = self.positions.get(name, (0, 0))
        return LineSplitter(self.max_line_bytes, offset), line_number

    def _hand_over(self, reading: dict, name: str, rest: str, identity_of) -> None:
        """A followed file was rotated away: what was read of it (its unfinished line, its
        offset and line number, which file it is) goes on under ``rest``; ``name`` starts
        again at the start of the new file, which the checkpoint names from now on."""
        reading[rest] = reading.pop(name, None) or self._start_reading(name)
        self.positions[rest] = self.positions.get(name, (0, 0))
        reading[name] = (LineSplitter(self.max_line_bytes), 0)
        self.positions[name] = (0, 0)
        for each in (name, rest):
            identity = identity_of(each)
            if identity is not None:
                self.files[each] = identity

    def resume_points(self) -> dict[str, SavedPosition]:
        """Where a later run resumes each file read so far, keyed by its resolved path."""
        points = {}
        for name, (offset, line) in self.positions.items():
            identity = self.files.get(name)
            if identity is not None:
                size, digest = identity.fingerprint(offset)
                points[identity.path] = SavedPosition(identity.device, identity.inode, size, digest, offset, line)
        return points

    def _feed_lines(self, lines: list[bytes], name: str, line_number: int, now: int) -> int:
        """Feed a chunk's lines: runs of plain lines through the pipeline's batch path,
        each line it stops at (to reject, late, blank, over-long...) through _feed_each.

        A chunk (up to a megabyte) goes in batches of :data:`BATCH_LINES`: the objects a
        batch makes on its way from line to result then stay in the processor's cache,
        together with the newest open orders. Measured on a 1M-event replay (2 cores):
        3.3 s with whole chunks, 2.6 s in batches of 512 lines.
        """
        if not lines or type(lines[0]) is Overlong or max(map(len, lines)) > self.max_line_bytes:
            return self._feed_each(lines, name, line_number, now)
        for begin in range(0, len(lines), BATCH_LINES):
            line_number = self._feed_batch(lines[begin : begin + BATCH_LINES], name, line_number, now)
        return line_number

    def _feed_batch(self, lines: list[bytes], name: str, line_number: int, now: int) -> int:
        write, count = self.writer.write, len(lines)
        for results, stop in self.pipeline.feed_runs(lines, now):
            if results:
                write(results)
            if stop < count:
                self._feed_each(lines[stop : stop + 1], name, line_number + stop, now)
        return line_number + count

    def _feed_each(self, lines: list[bytes], name: str, line_number: int, now: int) -> int:
        feed = self.pipeline.feed
        write = self.writer.write
        limit = self.max_line_bytes
        for raw in lines:
            line_number += 1
            if len(raw) > limit or type(raw) is Overlong:
                size = raw.size if type(raw) is Overlong else len(raw)
                reason = f"line longer than {limit} bytes ({size} bytes)"
                self.pipeline.refuse()
                self._reject(name, line_number, reason, raw[: LineSplitter.PREFIX_BYTES])
                continue
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw or raw.isspace():
                continue
            if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte order mark is not part of the first event
            try:
                results = feed(raw, now)
            except RejectedLine as rejected:
                self._reject(name, line_number, rejected.reason, raw)
                continue
            if results:
                write(results)
        return line_number

    def checkpoint(self, force: bool = False) -> None:
        """Save state if a checkpointer is set and the interval has passed (or ``force``).

        Results are flushed first, so a result is on its way out before the checkpoint that
        makes its input count as processed: after a crash it may come twice, never zero times.
        """
        if self.checkpointer is None:
            return
        now = self.clock.now_ms()
        if not force and now - self._last_checkpoint < self.checkpoint_every:
            return
        self.writer.flush()
        self.reporter.flush()
        self.checkpointer(self.pipeline, self.resume_points())
        self._last_checkpoint = now

    def _reject(self, name: str, line_number: int, reason: str, raw: bytes) -> None:
        self.reporter.report(name, line_number, reason, raw)
        if self.strict:
            self.writer.flush()
            self.reporter.flush()
            raise StrictStop(self.reporter.warning_text(name, line_number, reason))

    async def _settle(self) -> None:
        """End of input: event time settles at once; processing time waits for deadlines."""
        self._emit(self.pipeline.finish())
        while (timer := self.pipeline.next_timer()) is not None:
            await self.clock.sleep_until(timer)
            self._emit_due(self._moment(None))

    def _emit_due(self, now: int) -> None:
        """Write every timeout due at ``now``. In processing time a burst (thousands of
        orders read in the same millisecond at start-up) goes out in slices of
        :data:`EMIT_SLICE`, each written as soon as it is decided, so the first of a
        burst does not wait for the last."""
        if self.pipeline.time_mode is not TimeMode.PROCESSING:
            self._emit(self.pipeline.advance(now))
            return
        decided = []
        while True:
            results = self.pipeline.advance(now, EMIT_SLICE)
            self._emit(results)
            decided += results
            if len(results) < EMIT_SLICE:
                break
        self._record_lateness(decided)  # after the writes: how late they really went out

    def _emit(self, results) -> None:
        if results:
            self.writer.write(results)
        self.writer.flush()

    # -- simulate ------------------------------------------------------------------

    async def simulate(self, events: Iterable[tuple[int, bytes]], show_event=None) -> None:
        """Feed scheduled ``(time, raw)`` events at their times, firing timeouts between them.

        The watermark follows the schedule: at a deadline that comes before the next event,
        everything up to the deadline is settled, so each timeout prints when it is due.
        """
        self.started_ms = self.clock.now_ms()
        try:
            for time, raw in events:
                await self._fire_deadlines_until(time)
                await self.clock.sleep_until(time)
                if show_event is not None:
                    show_event(time, raw)
                self._emit(self.pipeline.feed(raw, self.clock.now_ms()))
            await self._fire_deadlines_until(float("inf"))
        finally:
            self.finished_ms = self.clock.now_ms()

    async def _fire_deadlines_until(self, limit: int | float) -> None:
        pipeline = self.pipeline
        while (deadline := pipeline.next_deadline()) is not None and deadline <= limit:
            await self.clock.sleep_until(deadline)
            results = pipeline.advance_frontier(deadline)
            self._emit(results)
            self._record_lateness(results)

    def _record_lateness(self, timeouts) -> None:
        """Timeouts fired by a timer: how long after their deadline they went out."""
        if timeouts:
            now = self.clock.now_ms()
            # A burst shares a few deadlines: count each distinct lateness once.
            lateness = Counter([now - result[2] for result in timeouts if type(result) is Timeout])
            for value, count in lateness.items():
                self.timer_lateness.observe(value, count)

"""The runtime: the asyncio shell around the pipeline. It only reads, feeds and sleeps.

One loop takes chunks from the reader and waits, at most, until the pipeline's next
timer (a deadline in processing time, the --idle watermark in event time) so timeouts
fire on time with no other input. With --idle the wall clock moves the watermark only
while the reader is caught up (its last read found nothing new), so a restart reads its
backlog in event time. A chunk's lines are worked at the moment the chunk arrived (the
reader's stamp), never before a moment already worked at. Every rule lives
in the pipeline and the matcher; this module owns waiting, flushing, checkpointing and
stopping. Results are always flushed before the checkpoint that counts their input as
done, so a crash repeats a result rather than losing it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Callable, Iterator, Protocol

from ..rules.clocks import Clock, elapsed_ms
from .feeding import LineFeed, StrictStop  # noqa: F401  (StrictStop re-exported)
from .scheduled import ScheduledFeed
from ..observe.histogram import TIMER_LATENESS_BOUNDS_MS, Buckets
from ..rules.matcher import Timeout
from ..rules.pipeline import Pipeline, TimeMode
from ..outputs.sinks import RejectReporter, ResultWriter
from ..inputs.files import FileIdentity, SavedPosition
from ..inputs.framing import LineSplitter
from ..inputs.sources import DRAINED, END, ROTATED, HandedOver

#: Longest line accepted by default (``--max-line-bytes``); longer ones are rejected unread.
MAX_LINE_BYTES = 1 << 20

#: Timeouts written at a time when a burst of them falls due (see Runtime._emit_due).
EMIT_SLICE = 256
#: Results decided at once when everything open is settled (see :meth:`Runtime._slices`).
SETTLE_SLICE = 4096
#: Event time with --idle, while lines may be unread: how long a read must find nothing
#: new before the runtime asks the reader whether it is caught up.
CATCH_UP_POLL_SECONDS = 0.05

__all__ = ["Runtime", "StrictStop", "Reader"]


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

    def caught_up(self) -> bool:
        """Asked after a ``get`` that timed out: whether nothing is left unread now (every
        input waits for new data). Optional: a reader without it is caught up then."""


class Runtime(LineFeed, ScheduledFeed):
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
        self._unsaved = False  # a checkpoint was put off by --checkpoint-every
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
        self._resumed = False  # event time with --idle: the first catch-up finds what the downtime decided
        # Observability (--stats, /metrics): lines read, and how late timer-driven
        # timeouts went out after their deadline.
        self.lines_read = 0
        self.timer_lateness = Buckets(TIMER_LATENESS_BOUNDS_MS)
        #: Called once when the input has ended, before open orders are settled (the
        #: command's hints about the run come then, not after a wait for deadlines).
        self.on_input_end: Callable[[], None] | None = None

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
            if self.on_input_end is not None:
                self.on_input_end()
            if self.final:
                await self._settle()
        except asyncio.CancelledError:
            # Stopped by a signal: the wall clock's part of time (--idle, processing time)
            # is worked up to this moment, so the state kept does not depend on when a
            # timer or checkpoint last happened to run; then keep what was decided.
            self._emit_due(self._moment(None))
            self.checkpoint(force=True)
            raise
        else:
            self.checkpoint(force=True)
        finally:
            reader.stop()
            self.finished_ms = self.clock.now_ms()

    def _recover(self, since: int | None = None) -> None:
        """After a restart, orders whose deadline passed while the tool was down time out
        stamped with their deadline and marked recovered: in processing time at once (at
        ``since``, when reading began, or now); in event time with ``--idle`` once the
        backlog is read (see :meth:`_catch_up`)."""
        self._resumed = self.pipeline.wall.arrival is not None
        moment = self._moment(since)
        for results in self._slices(lambda limit: self.pipeline.advance(moment, limit)):
            self._emit(_recovered(results))

    def _waits_to_catch_up(self) -> bool:
        """Event time with ``--idle``, and lines came in since a read last found nothing new."""
        pipeline = self.pipeline
        return pipeline.idle is not None and pipeline.time_mode is not TimeMode.PROCESSING and not pipeline.caught_up

    def _catch_up(self, now: int) -> None:
        """Every input was read to its end: the wall clock moves event time until lines come
        (in slices: after a long downtime every open order may be due at once)."""
        if self._waits_to_catch_up():
            resumed = self._resumed
            for results in self._slices(lambda limit: self.pipeline.catch_up(now, limit)):
                self._emit(_recovered(results) if resumed else results)
            self._resumed = False  # (only the first catch-up ends a downtime)

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
        caught_up = getattr(reader, "caught_up", lambda: True)
        # Per input name: its splitter (with the unfinished line) and its line number. A
        # followed file and the file rotated away from it are read in turns.
        reading: dict[str, tuple[LineSplitter, int]] = {}
        while True:
            timer = pipeline.next_timer()
            checkpoint_at = self._checkpoint_due()
            if checkpoint_at is not None and (timer is None or checkpoint_at < timer):
                timer = checkpoint_at  # (the timeout below saves it)
            timeout = None if timer is None else clock.seconds_until(timer)
            waiting = self._waits_to_catch_up()
            if waiting:  # a read that finds nothing new for a moment is caught up
                timeout = CATCH_UP_POLL_SECONDS if timeout is None else min(timeout, CATCH_UP_POLL_SECONDS)
            try:
                item = await reader.get(timeout)
            except TimeoutError:
                now = self._moment(None)
                if waiting and caught_up():
                    self._catch_up(now)
                self._emit_due(now)
                self.checkpoint()
                continue
            if item is END:
                now = self._moment(None)
                self._catch_up(now)
                self._emit_due(now)  # (worked up to the end, as a stop is)
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
            if chunk:  # a read found lines: more may be unread, the --idle clock waits
                pipeline.behind()
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

    def checkpoint(self, force: bool = False) -> None:
        """Save state if a checkpointer is set and the interval has passed (or ``force``).

        Results are flushed first, so a result is on its way out before the checkpoint that
        makes its input count as processed: after a crash it may come twice, never zero times.
        """
        if self.checkpointer is None:
            return
        now = self.clock.now_ms()
        if not force and now - self._last_checkpoint < self.checkpoint_every:
            self._unsaved = True  # saved when the interval ends, even if nothing else comes
            return
        self.writer.flush()
        self.reporter.flush()
        self.checkpointer(self.pipeline, self.resume_points())
        self._last_checkpoint = now
        self._unsaved = False

    def _checkpoint_due(self) -> int | None:
        """When a checkpoint put off by the interval is due (on the run's clock), if one is:
        a quiet followed file must not keep what was read out of the state for ever."""
        if self.checkpointer is None or not self._unsaved:
            return None
        return self._last_checkpoint + self.checkpoint_every

    async def _settle(self) -> None:
        """End of input: event time settles at once; processing time waits for deadlines."""
        for results in self._slices(self.pipeline.finish):
            self._emit(results)
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

    @staticmethod
    def _slices(step: Callable[[int], list]) -> Iterator[list]:
        """The results of ``step(limit)`` called until it decides less than a slice of
        :data:`SETTLE_SLICE`: settling a million open orders (end of input, ``--final``,
        a restart after their deadlines passed) holds one slice of results at a time."""
        while True:
            results = step(SETTLE_SLICE)
            yield results
            if len(results) < SETTLE_SLICE:
                return

    def _emit(self, results) -> None:
        if results:
            self.writer.write(results)
        self.writer.flush()

    def _record_lateness(self, timeouts) -> None:
        """Timeouts fired by a timer: how long after their deadline they went out."""
        if timeouts:
            now = self.clock.now_ms()
            # A burst shares a few deadlines: count each distinct lateness once.
            lateness = Counter([now - result[2] for result in timeouts if type(result) is Timeout])
            for value, count in lateness.items():
                self.timer_lateness.observe(value, count)


def _recovered(results: list) -> list:
    """``results`` with their timeouts marked as found at a restart."""
    return [result._replace(recovered=True) if type(result) is Timeout else result for result in results]

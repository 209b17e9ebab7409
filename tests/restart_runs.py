"""One ``watch --state`` run on a virtual clock, through the library: what the restart
tests (test_restarts, test_rotation) cut an input into."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline
from ordertimeout.hosts.runtime import Runtime
from ordertimeout.inputs.sources import ChunkReader, Input, resume_inputs
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from ordertimeout.state.store import StateStore


EPOCH = 1_700_000_000_000
KEYS = ("a", "b", "c")
KINDS = ("create", "create", "create", "pay", "pay", "other", "cancel")


@dataclass(frozen=True)
class Options:
    """The options of one scenario (what ``watch`` would be given)."""

    mode: str
    event_time: bool
    within: int
    lateness: int = 0
    idle: int | None = None
    paid_late: int | None = None
    checkpoint_every: int = 0
    chunk_bytes: int = 64
    rotate_wait: int = 1500
    #: Issue 21: windows by the field "m" ((value, ms) pairs) and reminders.
    windows: tuple = ()
    remind: tuple = ()
    remind_before: tuple = ()

    @property
    def schema(self) -> EventSchema:
        return EventSchema(cancel_type="cancel" if self.mode == "each" else None, within=self.within,
                           within_by="m" if self.windows else None, windows=self.windows)

    @property
    def config(self) -> dict:
        return {"within_ms": self.within, "match": self.mode, "lateness_ms": self.lateness,
                "paid_late_ms": self.paid_late, "windows": [[value, ms] for value, ms in self.windows]}

    def matcher(self) -> Matcher:
        return Matcher(self.within, self.mode, self.paid_late, tuple(ms for _, ms in self.windows),
                       self.remind, self.remind_before)


#: Noted in a run's log beside the lines fed (--idle): the run caught up with its input;
#: bytes came that were no whole line yet (a line written in pieces: the --idle clock
#: waits from then on); and the run ended (its successor reads its backlog in event time
#: until it catches up).
CAUGHT_UP, BEHIND, ENDED = "caught up", "behind", "ended"


class RecordingPipeline(Pipeline):
    """A pipeline that notes every line it is fed with the moment it was fed, and when it
    caught up with its input."""

    def __init__(self, *args, log, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log
        self.moment = None

    def feed(self, raw, now):
        self.log.append((now, bytes(raw)))
        return super().feed(raw, now)

    def feed_lines(self, lines, now, start=0):  # the runtime's batch path
        results, stop = super().feed_lines(lines, now, start)
        self.log.extend((now, bytes(raw)) for raw in lines[start:stop])
        return results, stop

    def advance(self, now, limit=None):
        self.moment = now  # (the runtime works at a chunk's moment before it says behind())
        return super().advance(now, limit)

    def behind(self):
        if self.caught_up:
            self.log.append((self.moment, BEHIND))
        super().behind()

    def catch_up(self, now, limit=None):
        # Every moment the run found its input read (not only the first of a quiet spell):
        # while caught up, each one moves the watermark by the wall clock (--idle), and
        # where it stands when the run stops is what the next run goes on from. (A settle
        # in slices calls again at one moment while a slice comes back full: noted once.)
        if not self.caught_up or self.log[-1] != (now, CAUGHT_UP):
            self.log.append((now, CAUGHT_UP))
        return super().catch_up(now, limit)


class Sink(io.RawIOBase):
    """A stdout that keeps what reached it; once ``dead`` (kill -9) nothing more does."""

    def __init__(self):
        self.data = bytearray()
        self.dead = False

    def writable(self):
        return True

    def write(self, data):
        if not self.dead:
            self.data += data
        return len(data)


def build(options: Options, clock, sink: Sink, log: list, *, final: bool, checkpointer=None):
    pipeline = RecordingPipeline(
        EventParser(options.schema), options.matcher(), log=log,
        time_mode=None, lateness=options.lateness, idle=options.idle,
    )
    writer = ResultWriter(OutputBuffer(sink), JsonFormatter())
    return Runtime(pipeline, clock, writer, RejectReporter(io.StringIO()), checkpointer=checkpointer,
                   checkpoint_every=options.checkpoint_every, final=final)


async def one_run(path, state_path, options, clock, log, *, follow, final, stop_at=None, kill=False):
    """One ``watch PATH --state STATE`` on the shared virtual clock; returns its stdout.

    ``stop_at``: the moment a signal stops it (``kill``: SIGKILL, so nothing it would
    write or save from then on gets out)."""
    sink = Sink()
    store = StateStore(str(state_path), options.config)
    checkpoint = store.open()

    def checkpointer(pipeline, offsets):
        if not sink.dead:
            store.save(pipeline, offsets)

    runtime = build(options, clock, sink, log, final=final, checkpointer=checkpointer)
    inputs = [Input(str(path), path=str(path), follow=follow)]
    if checkpoint is not None:
        runtime.pipeline.restore(checkpoint["pipeline"])
        inputs, positions, notices = resume_inputs(checkpoint["offsets"], inputs, options.rotate_wait)
        assert all("was rotated to" in notice for notice in notices), notices  # it only grew, or was rotated
        runtime.positions.update(positions)
    reader = ChunkReader(inputs, chunk_bytes=options.chunk_bytes, rotate_wait_ms=options.rotate_wait)
    task = asyncio.ensure_future(runtime.watch(reader))
    if stop_at is not None:
        done, _ = await asyncio.wait({task}, timeout=clock.seconds_until(stop_at))
        assert not done, "a followed file never ends by itself"
        sink.dead = kill
        task.cancel()  # what the CLI's signal handler does
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        store.close()
    log.append((clock.now_ms(), ENDED))
    return bytes(sink.data), runtime.pipeline

"""Cutting the input into runs never changes the results (issue 9's invariant).

One run over a whole input, or several runs over the same file while it grows, each
continuing from the last one's ``--state`` (ended at end of input, stopped by a signal,
or killed at a random moment), give the same set of results; each result exactly once,
except that after a kill the results decided since the last checkpoint may come again,
with the same id. Most cases run through the library on a virtual clock with real files
and real SQLite state files; a bounded number through real processes and real signals.
"""

from __future__ import annotations

import asyncio
import collections
import io
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.clocks import LoopClock
from ordertimeout.runtime import Runtime
from ordertimeout.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from ordertimeout.sources import END, ChunkReader, Input, resume_inputs
from ordertimeout.state import StateStore

from .helpers import COMMAND
from .virtual_time import run_virtual

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
    checkpoint_every: int = 0
    chunk_bytes: int = 64

    @property
    def schema(self) -> EventSchema:
        return EventSchema(cancel_type="cancel" if self.mode == "each" else None)

    @property
    def config(self) -> dict:
        return {"within_ms": self.within, "match": self.mode, "lateness_ms": self.lateness}


class RecordingPipeline(Pipeline):
    """A pipeline that notes every line it is fed with the moment it was fed."""

    def __init__(self, *args, log, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def feed(self, raw, now):
        self.log.append((now, bytes(raw)))
        return super().feed(raw, now)

    def feed_lines(self, lines, now, start=0):  # the runtime's batch path
        results, stop = super().feed_lines(lines, now, start)
        self.log.extend((now, bytes(raw)) for raw in lines[start:stop])
        return results, stop


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
        EventParser(options.schema), Matcher(options.within, options.mode), log=log,
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
        inputs, positions, notices = resume_inputs(checkpoint["offsets"], inputs)
        assert notices == []  # the file only grew
        runtime.positions.update(positions)
    task = asyncio.ensure_future(runtime.watch(ChunkReader(inputs, chunk_bytes=options.chunk_bytes)))
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
    return bytes(sink.data), runtime.pipeline


async def append_all(path, clock, pieces):
    for at, piece in pieces:
        await clock.sleep_until(at)
        with open(path, "ab") as handle:
            handle.write(piece)


async def scenario(tmp, options, pieces, runs, final_at):
    """The input ``pieces`` appended at their times while ``runs`` come and go; then one
    ``--final`` run. Returns (stdout of all runs, what was fed, the last pipeline)."""
    path, state = tmp / "events.jsonl", tmp / "state.db"
    path.write_bytes(b"")
    clock = LoopClock(EPOCH)
    clock.now_ms()  # anchor it at the loop's start
    writer = asyncio.ensure_future(append_all(path, clock, pieces))
    out, log = b"", []
    for start, stop, kind in runs:
        await clock.sleep_until(start)
        if kind == "eof":
            data, _ = await one_run(path, state, options, clock, log, follow=False, final=False)
        else:
            data, _ = await one_run(path, state, options, clock, log, follow=True, final=False,
                                    stop_at=stop, kill=kind == "kill")
        out += data
    await writer
    await clock.sleep_until(final_at)
    data, pipeline = await one_run(path, state, options, clock, log, follow=False, final=True)
    return out + data, log, pipeline, path.read_bytes()


class ScriptedReader:
    """The reference run's input: each line at the moment the cut runs fed it."""

    def __init__(self, clock, script, end_at):
        self.clock, self.script, self.end_at = clock, list(script), end_at

    def start(self, clock=None):
        pass

    def stop(self):
        pass

    def identity(self, name):
        return None

    async def get(self, timeout=None):
        at, item = self.script[0] if self.script else (self.end_at, END)
        if timeout is not None and at > self.clock.now_ms() + timeout * 1000:
            await asyncio.sleep(timeout)
            raise TimeoutError
        await self.clock.sleep_until(at)
        if self.script:
            self.script.pop(0)
        return item


async def reference_run(options, data=None, fed=None, end_at=None):
    """One run without state: over the whole file at once, or (when arrival times matter:
    processing time, --idle) fed each line at the moment the cut runs fed it."""
    clock = LoopClock(EPOCH)
    clock.now_ms()
    sink = Sink()
    runtime = build(options, clock, sink, [], final=True)
    if fed is None:
        reader = ScriptedReader(clock, [(EPOCH, ("whole", data, None)), (EPOCH, ("whole", b"", None))], EPOCH)
    else:
        reader = ScriptedReader(clock, [(at, ("whole", raw + b"\n", at)) for at, raw in fed], end_at)
    await runtime.watch(reader)
    return bytes(sink.data), runtime.pipeline


def results(data: bytes) -> list[bytes]:
    """Result lines, without the "recovered" mark (a result found at a restart is the same result)."""
    return [line.replace(b',"recovered":true', b"") for line in data.splitlines()]


# -- the generated cases ----------------------------------------------------------------


@st.composite
def cases(draw, kills: bool):
    event_time = draw(st.booleans())
    within = draw(st.sampled_from([50, 120, 300]))
    lateness = draw(st.sampled_from([0, 0, 20, 80])) if event_time else 0
    idle = draw(st.sampled_from([None, None, 40, 200])) if event_time and not kills else None
    options = Options(
        mode=draw(st.sampled_from(["each", "next", "followed-by"])), event_time=event_time, within=within,
        lateness=lateness, idle=idle, checkpoint_every=draw(st.sampled_from([0, 10, 60])),
        chunk_bytes=draw(st.sampled_from([16, 64, 1 << 16])),
    )
    count = draw(st.integers(min_value=4, max_value=40))
    pieces, at, ts = [], EPOCH, EPOCH - 5000
    for _ in range(count):
        key, kind = draw(st.sampled_from(KEYS)), draw(st.sampled_from(KINDS))
        at += draw(st.sampled_from([0, 0, 1, 10, 40, 150]))
        ts += draw(st.sampled_from([0, 0, 1, 10, 40, 150]))
        fields = {"userId": key, "type": kind}
        if event_time:
            fields["ts"] = ts - draw(st.sampled_from([0, 0, 0, 15, 60, 200]))  # some disorder, some late
        line = orjson.dumps(fields) + b"\n"
        cut = draw(st.integers(min_value=0, max_value=len(line)))
        if 0 < cut < len(line) and draw(st.booleans()):  # a line written in two pieces
            pieces += [(at, line[:cut]), (at + draw(st.sampled_from([0, 5, 70])), line[cut:])]
        else:
            pieces.append((at, line))
    pieces.sort(key=lambda piece: piece[0])
    span = pieces[-1][0] - EPOCH + 100
    moments = sorted(draw(st.lists(st.integers(min_value=0, max_value=span), min_size=2, max_size=12, unique=True)))
    stops = ["eof", "signal"] + (["kill"] * 2 if kills else [])
    runs = []
    for start, stop in zip(moments[::2], moments[1::2]):
        kind = draw(st.sampled_from(stops))
        runs.append((EPOCH + start, EPOCH + stop, kind))
    final_at = max(pieces[-1][0], runs[-1][1]) + draw(st.sampled_from([0, 30, 1000]))
    return options, pieces, runs, final_at


def check(tmp, options, pieces, runs, final_at):
    cut_out, fed, cut_pipeline, data = run_virtual(scenario(tmp, options, pieces, runs, final_at))
    killed = any(kind == "kill" for _, _, kind in runs)
    if not killed:
        # Graceful stops: every line read exactly once, in order, whatever the cuts.
        assert [raw for _, raw in fed] == [line for line in data.split(b"\n") if line]
    if options.event_time and options.idle is None:
        whole_out, whole_pipeline = run_virtual(reference_run(options, data=data))
    else:  # arrival times matter: feed the reference each line when the cut runs did
        whole_out, whole_pipeline = run_virtual(reference_run(options, fed=fed, end_at=final_at))
    whole, cut = results(whole_out), results(cut_out)
    assert len(set(whole)) == len(whole)  # ids are unique
    assert set(cut) == set(whole)
    if not killed:
        assert sorted(cut) == sorted(whole)  # each exactly once
    ids = collections.Counter(orjson.loads(line)["id"] for line in cut)
    assert all(count == 1 for count in ids.values()) or killed
    # The counters describe the whole history once, repeats after a kill included.
    assert cut_pipeline.stats() == whole_pipeline.stats()


PROFILE = settings(
    max_examples=int(os.environ.get("ORDERTIMEOUT_RESTART_EXAMPLES", "150")), deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROFILE
@given(cases(kills=False))
def test_graceful_cuts_give_each_result_exactly_once(tmp_path_factory, case):
    check(tmp_path_factory.mktemp("cuts"), *case)


@PROFILE
@given(cases(kills=True).filter(lambda case: case[0].event_time))
def test_kill_9_cuts_give_the_same_results_repeats_allowed(tmp_path_factory, case):
    check(tmp_path_factory.mktemp("kills"), *case)

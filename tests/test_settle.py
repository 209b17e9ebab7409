"""Settling what is open (end of input, --final, a restart after the deadlines passed)
goes out in slices: the runtime never holds every result of a big settle at once."""

import io

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.hosts.runtime import SETTLE_SLICE, Runtime
from ordertimeout.inputs.sources import END
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from ordertimeout.rules.clocks import LoopClock
from ordertimeout.rules.pipeline import LateEvent

from .helpers import event
from .virtual_time import run_virtual

EPOCH = 1_700_000_000_000


class CountingWriter(ResultWriter):
    """A ResultWriter that notes how many results each write handed it."""

    def __init__(self):
        self.stream = io.BytesIO()
        super().__init__(OutputBuffer(self.stream), JsonFormatter())
        self.sizes = []

    def write(self, results):
        self.sizes.append(len(results))
        super().write(results)

    def results(self):
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines()]


class OneChunk:
    """A reader that gives one chunk, then ends."""

    def __init__(self, data):
        self.items = [("events", data, None), ("events", b"", None), END]

    def start(self, clock=None):
        pass

    def stop(self):
        pass

    async def get(self, timeout=None):
        return self.items.pop(0)


def settle(lines, *, lateness=0, idle=None, final=True):
    writer = CountingWriter()
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(1000), time_mode=TimeMode.EVENT, lateness=lateness,
                        idle=idle)
    runtime = Runtime(pipeline, LoopClock(EPOCH), writer, RejectReporter(io.StringIO()), final=final)
    run_virtual(runtime.watch(OneChunk(b"".join(line + b"\n" for line in lines))))
    return writer, pipeline


def test_a_big_settle_goes_out_in_slices_and_times_every_order_out_once():
    count = 3 * SETTLE_SLICE + 17
    writer, pipeline = settle([event(f"u{i}", "create", i) for i in range(count)])
    results = writer.results()
    assert [r["key"] for r in results] == [f"u{i}" for i in range(count)]  # each once, in deadline order
    assert {r["result"] for r in results} == {"timeout"}
    assert max(writer.sizes) <= SETTLE_SLICE
    assert pipeline.pending == 0
    assert pipeline.frontier == count - 1  # the watermark reads what the events showed


@settings(max_examples=60, deadline=None)
@given(times=st.lists(st.integers(0, 3000), min_size=1, max_size=300), lateness=st.sampled_from([0, 200]),
       kinds=st.lists(st.sampled_from(["create", "create", "pay"]), min_size=300, max_size=300))
def test_sliced_settle_gives_exactly_the_results_of_a_whole_one(times, lateness, kinds):
    lines = [event(f"u{i % 5}", kind, at) for i, (at, kind) in enumerate(zip(times, kinds))]

    def feed(pipeline):
        out = []
        for line in lines:
            try:
                out += pipeline.feed(line, 0)
            except LateEvent:
                pass  # the same lines are late for both
        return [orjson.loads(JsonFormatter.format(result)) for result in out]

    whole = Pipeline(EventParser(EventSchema()), Matcher(1000), time_mode=TimeMode.EVENT, lateness=lateness)
    expected = feed(whole) + [orjson.loads(JsonFormatter.format(result)) for result in whole.finish()]
    sliced = Pipeline(EventParser(EventSchema()), Matcher(1000), time_mode=TimeMode.EVENT, lateness=lateness)
    got = feed(sliced)
    while True:
        part = sliced.finish(limit=3)
        got += [orjson.loads(JsonFormatter.format(result)) for result in part]
        if len(part) < 3:
            break
    assert got == expected
    assert sliced.frontier == whole.frontier and sliced.pending == 0

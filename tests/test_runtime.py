"""The asyncio runtime on virtual time: timers fire at their deadline, with no other input."""

import asyncio
import io

import orjson

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.rules.clocks import LoopClock
from ordertimeout.hosts.runtime import Runtime
from ordertimeout.inputs.simulator import cycle_events
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from ordertimeout.inputs.sources import END

from .helpers import EXPECTED
from .virtual_time import run_virtual

EPOCH = 1_700_000_000_000


class RecordingStream(io.RawIOBase):
    """A stdout that notes the clock time of every write."""

    def __init__(self, clock):
        self.clock = clock
        self.writes = []

    def writable(self):
        return True

    def write(self, data):
        self.writes.append((self.clock.now_ms(), bytes(data)))
        return len(data)

    def lines(self):
        return [(at, orjson.loads(line)) for at, data in self.writes for line in data.splitlines()]


class ScriptedReader:
    """Chunks that arrive at given clock times (and are stamped so); the input stays open
    until ``end_at``. ``files`` names the inputs that are files a later run could resume."""

    def __init__(self, clock, script, end_at, files=None):
        self.clock = clock
        self.script = [(at, item if item is None or len(item) == 3 else (*item, at)) for at, item in script]
        self.end_at = end_at
        self.files = files or {}

    def start(self, clock=None):
        pass

    def stop(self):
        pass

    def identity(self, name):
        return self.files.get(name)

    async def get(self, timeout=None):
        at, item = self.script[0] if self.script else (self.end_at, END)
        now = self.clock.now_ms()
        if timeout is not None and at > now + timeout * 1000:
            await asyncio.sleep(timeout)
            raise TimeoutError
        await self.clock.sleep_until(at)
        if self.script:
            self.script.pop(0)
        return item


def make_runtime(clock, time_mode=None, within=1000, mode="each"):
    stream = RecordingStream(clock)
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(within, mode), time_mode=time_mode)
    writer = ResultWriter(OutputBuffer(stream), JsonFormatter())
    runtime = Runtime(pipeline, clock, writer, RejectReporter(io.StringIO()))
    return runtime, stream


def test_processing_time_timeout_fires_at_deadline_while_input_is_quiet():
    clock = LoopClock(EPOCH)
    runtime, stream = make_runtime(clock)
    script = [
        (EPOCH + 100, ("<stdin>", b'{"userId":"1","type":"create"}\n')),
        (EPOCH + 400, ("<stdin>", b'{"userId":"2","type":"create"}\n')),
        (EPOCH + 900, ("<stdin>", b'{"userId":"2","type":"pay"}\n')),
    ]
    # The input stays open for an hour: the timeout must not wait for it.
    run_virtual(runtime.watch(ScriptedReader(clock, script, end_at=EPOCH + 3_600_000)))
    (success_at, success), (timeout_at, timeout) = stream.lines()
    assert success["result"] == "success" and success_at == EPOCH + 900
    assert (success["created"], success["paid"]) == (EPOCH + 400, EPOCH + 900)
    assert timeout["result"] == "timeout"
    assert timeout_at == timeout["deadline"] == EPOCH + 1100
    assert runtime.pipeline.time_mode is TimeMode.PROCESSING


def test_processing_time_end_of_input_waits_for_open_deadlines():
    clock = LoopClock(EPOCH)
    runtime, stream = make_runtime(clock, within=60_000)
    script = [(EPOCH + 5, ("<stdin>", b'{"userId":"1","type":"create"}'))]  # no final newline
    run_virtual(runtime.watch(ScriptedReader(clock, [*script, (EPOCH + 6, ("<stdin>", b""))], end_at=EPOCH + 7)))
    ((at, timeout),) = stream.lines()
    # The line is complete only when its input ends (at +6), so that is its arrival time.
    assert timeout["created"] == EPOCH + 6
    assert at == timeout["deadline"] == EPOCH + 60_006
    assert runtime.elapsed_ms == 60_006
    assert runtime.pipeline.pending == 0


def test_a_chunk_stamped_before_a_timer_that_already_fired_is_worked_at_the_timer():
    """A chunk stamped at +990 waited in the queue while the timer of +1000 fired; taken at
    +1100, it is worked at +1000, never back before a moment already worked at: the
    results stay in time order and an order it opens is not created in the past."""
    clock = LoopClock(EPOCH)
    runtime, stream = make_runtime(clock)
    script = [
        (EPOCH, ("<stdin>", b'{"userId":"1","type":"create"}\n')),
        (EPOCH + 1100, ("<stdin>", b'{"userId":"2","type":"create"}\n{"userId":"2","type":"pay"}\n', EPOCH + 990)),
    ]
    run_virtual(runtime.watch(ScriptedReader(clock, script, end_at=EPOCH + 1200)))
    (timeout_at, timeout), (success_at, success) = stream.lines()
    assert (timeout["key"], timeout["result"]) == ("1", "timeout") and timeout_at == timeout["deadline"] == EPOCH + 1000
    assert (success["key"], success["result"]) == ("2", "success") and success_at == EPOCH + 1100
    assert success["created"] == success["paid"] == EPOCH + 1000


def test_simulation_prints_each_result_when_due_and_matches_the_probe():
    clock = LoopClock(EPOCH)
    runtime, stream = make_runtime(clock, time_mode=TimeMode.EVENT, within=1500)
    run_virtual(runtime.simulate(cycle_events(EPOCH + 1000, 1000, 30)))
    lines = stream.lines()
    expected = [orjson.loads(line) for line in (EXPECTED / "a_cycle__each__within1500.jsonl").read_bytes().splitlines()]
    shifted = [
        {name: (value - EPOCH if isinstance(value, int) else value)
         for name, value in result.items() if name not in ("create", "pay", "id")}
        for _, result in lines
    ]
    assert shifted == expected
    for at, result in lines:  # printed the moment it was decided, not later
        assert at == (result["paid"] if result["result"] == "success" else result["deadline"])


def test_simulation_with_the_original_window_times_out_every_order():
    clock = LoopClock(EPOCH)
    runtime, stream = make_runtime(clock, time_mode=TimeMode.EVENT, within=1000)
    run_virtual(runtime.simulate(cycle_events(EPOCH, 1000, 9)))
    results = [result for _, result in stream.lines()]
    assert [r["result"] for r in results] == ["timeout"] * 6
    assert runtime.pipeline.matcher.unmatched_pays == 3

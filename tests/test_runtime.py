"""The asyncio runtime on virtual time: timers fire at their deadline, with no other input."""

import asyncio
import contextlib
import io

import orjson

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.hosts.runtime import Runtime
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from ordertimeout.rules.clocks import LoopClock
from ordertimeout.inputs.simulator import cycle_events

from .helpers import EPOCH, EXPECTED, ScriptedReader, make_runtime
from .virtual_time import run_virtual

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


def test_a_checkpoint_put_off_by_the_interval_is_saved_when_it_ends_though_nothing_else_comes():
    """A followed file that goes quiet right after a chunk: that chunk's state is saved
    --checkpoint-every later, not only at the stop (readers of the state file, and a
    crash, would otherwise see the run as it was before the chunk)."""
    clock = LoopClock(EPOCH)
    runtime, _ = make_runtime(clock, time_mode=TimeMode.EVENT, within=3_600_000)
    saved = []
    runtime.checkpointer = lambda pipeline, offsets: saved.append((clock.now_ms(), pipeline.pending))
    runtime.checkpoint_every = 1000
    script = [
        (EPOCH, ("events", b"", None)),  # an empty first read: checkpointed at once
        (EPOCH + 10, ("events", b'{"userId":"1","type":"create","ts":5}\n{"userId":"2","type":"create","ts":6}\n')),
    ]
    run_virtual(runtime.watch(ScriptedReader(clock, script, end_at=EPOCH + 3_600_000)))
    assert saved[0] == (EPOCH, 0)
    assert saved[1] == (EPOCH + 1000, 2)  # when the put-off checkpoint was due, not at the end


def test_a_stop_works_event_time_up_to_its_moment_whatever_the_timers_did():
    """With --idle, while the input is caught up the watermark follows the wall clock; a
    stop keeps it as it stands at the stop, not as the last timer or poll left it (what the
    next run judges late must not depend on when those happened to run)."""
    clock = LoopClock(EPOCH)
    pipeline = Pipeline(EventParser(EventSchema()), Matcher(3_600_000), time_mode=TimeMode.EVENT, idle=40)
    runtime = Runtime(pipeline, clock, ResultWriter(OutputBuffer(io.BytesIO()), JsonFormatter()),
                      RejectReporter(io.StringIO()))
    saved = []
    runtime.checkpointer = lambda pipeline, offsets: saved.append((clock.now_ms(), pipeline.frontier))
    script = [(EPOCH, ("events", b'{"userId":"1","type":"create","ts":5}\n'))]

    async def stopped_at_one_second():
        clock.now_ms()  # anchored at the loop's start
        task = asyncio.ensure_future(runtime.watch(ScriptedReader(clock, script, end_at=EPOCH + 3_600_000)))
        await clock.sleep_until(EPOCH + 1000)
        task.cancel()  # what the CLI's signal handler does
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_virtual(stopped_at_one_second())
    # The largest time (5) was known at EPOCH: frontier = 5 + (now - EPOCH) - idle.
    assert saved[-1] == (EPOCH + 1000, 5 + 1000 - 40)

"""The seam between runtime and delivery: every result reaches the outbox as it reaches
stdout, and a full outbox pauses reading (never dropping) while matching goes on."""

import asyncio
import random

import orjson

from ordertimeout.rules.clocks import LoopClock
from ordertimeout.notify.delivery import DELIVERED, Outcome
from ordertimeout.notify.notifier import Notifier
from ordertimeout.outputs.terminal import delivery_status, summary_text

from .helpers import EPOCH, Scripted, ScriptedReader, event, make_runtime
from .virtual_time import run_virtual

PAIRS = 60


def pairs():
    """One chunk per paid order: each chunk decides one success."""
    return [(EPOCH, ("<stdin>", event(f"u{n}", "create", 10 * n) + b"\n" + event(f"u{n}", "pay", 10 * n + 1) + b"\n"))
            for n in range(PAIRS)]


def test_a_full_outbox_pauses_reading_and_nothing_is_dropped():
    clock = LoopClock(EPOCH)
    up_at = EPOCH + 60_000
    sender = Scripted(lambda item, n: DELIVERED if clock.now_ms() >= up_at else Outcome(False, "HTTP 503"),
                      0.01, clock)
    sender.name = "webhook"
    notifier = Notifier([sender], clock=clock, rng=random.Random(3), limit=10)
    runtime, stream = make_runtime(clock)
    runtime.writer = notifier.writer(runtime.writer)
    script = pairs()
    reader = ScriptedReader(clock, script, end_at=EPOCH)
    seen = {}

    async def scenario():
        await notifier.start(on_error=lambda: None)
        watching = asyncio.create_task(runtime.watch(notifier.paced(reader)))
        await asyncio.sleep(30)  # the endpoint is down: the outbox fills up to its limit
        seen["read while down"] = PAIRS - len(reader.script)
        seen["pending while down"] = notifier.stats()["pending"]
        await watching
        await notifier.finish(3600)
        seen["end"] = clock.now_ms()

    run_virtual(scenario())
    assert seen["read while down"] == 11 and seen["pending while down"] == 11  # one chunk past the limit
    stats = notifier.stats()
    assert (stats["delivered"], stats["pending"], stats["dead"]) == (PAIRS, 0, 0)
    assert len(stream.lines()) == PAIRS  # stdout got every result too
    assert {item for _, item in sender.calls} == {f"success:u{n}:{10 * n}:0" for n in range(PAIRS)}


def test_only_limits_the_outbox_not_what_stdout_would_get():
    clock = LoopClock(EPOCH)
    sender = Scripted(lambda item, n: DELIVERED, 0.001, clock)
    sender.name = "exec"
    notifier = Notifier([sender], clock=clock, only="timeout")
    runtime, stream = make_runtime(clock)
    runtime.writer = notifier.writer(runtime.writer)
    lines = event("a", "create", 0) + b"\n" + event("b", "create", 5) + b"\n" + event("a", "pay", 10) + b"\n"

    async def scenario():
        await notifier.start(on_error=lambda: None)
        await runtime.watch(notifier.paced(ScriptedReader(clock, [(EPOCH, ("<stdin>", lines))], end_at=EPOCH)))
        await notifier.finish(60)

    run_virtual(scenario())
    assert [line["result"] for _, line in stream.lines()] == ["success", "timeout"]
    ((_, delivered),) = sender.calls
    assert delivered == "timeout:b:5:0"


def test_status_and_summary_show_deliveries():
    figures = {"delivered": 1200, "retried": 30, "dead": 2, "pending": 45, "oldest_pending_age_ms": 125_000,
               "failures_in_row": 7, "dead_letters": 3, "failing_since": EPOCH, "sinks_down": ["webhook"]}
    status = delivery_status(figures).plain
    assert status == " ↗1,200 pending 45 (oldest 2m5s) failing 7x dead 3"
    stats = {"events": 10, "success": 1, "timeout": 2, "late": 0, "rejected": 0, "pending": 0, "time_mode": "event",
             "elapsed_s": 1.0, "deliveries": figures}
    assert "deliveries 1,200 delivered, 30 retried, 2 dead, 45 pending" in summary_text(stats, [])
    # The figures above have the shape a real notifier reports: the same names, plain
    # integers that --stats (JSON) and the metrics take as they are.
    sender = Scripted(lambda item, n: DELIVERED, 0.01, LoopClock(EPOCH))
    sender.name = "webhook"
    real = Notifier([sender], clock=LoopClock(EPOCH)).stats()
    assert set(real) == set(figures)
    counters = {name: value for name, value in real.items() if name not in ("failing_since", "sinks_down")}
    assert all(type(value) is int for value in counters.values())
    assert real["failing_since"] is None and real["sinks_down"] == []  # (an epoch ms and names while failing)
    assert orjson.loads(orjson.dumps(real)) == real

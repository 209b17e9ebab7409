"""The relay: backoff and retry decisions (pure), and the relay's schedule on virtual time."""

import asyncio
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ordertimeout.rules.clocks import LoopClock
from ordertimeout.notify.delivery import BACKOFF_BASE_MS, PROBE_MAX_MS, DELIVERED, Outcome, Relay, after_failure, backoff_ms
from ordertimeout.notify.outbox import Entry, MemoryOutbox

from .helpers import Scripted
from .virtual_time import run_virtual

HOUR = 3_600_000


def entry(number=0, enqueued=0):
    return Entry("scripted", f"timeout:u{number}:1000:0", f"u{number}", b'{"n":%d}' % number, enqueued,
                 next_attempt=enqueued)


# -- the pure decisions ----------------------------------------------------------------


@settings(max_examples=200)
@given(st.integers(1, 80), st.integers(0, 2**32))
def test_backoff_is_full_jitter_under_a_capped_exponential_bound(attempts, seed):
    delay = backoff_ms(attempts, random.Random(seed))
    assert 0 <= delay <= min(PROBE_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempts - 1))


def test_backoff_spreads_over_its_whole_range():
    delays = [backoff_ms(4, random.Random(seed)) for seed in range(400)]
    bound = BACKOFF_BASE_MS * 8
    assert min(delays) < bound * 0.1 and max(delays) > bound * 0.9  # jitter, not a fixed step


@settings(max_examples=200)
@given(st.integers(0, 10 * HOUR), st.integers(0, 60), st.one_of(st.none(), st.integers(0, 3 * HOUR)),
       st.integers(1, 2 * HOUR), st.integers(0, 2**32))
def test_a_retry_is_never_before_now_nor_after_the_maximum_age(elapsed, attempts, retry_after, max_age, seed):
    item = entry()
    item.attempts = attempts
    retried = after_failure(item, Outcome(False, "HTTP 503", retry_after_ms=retry_after), elapsed,
                            random.Random(seed), max_age)
    assert item.attempts == attempts + 1
    assert retried == (elapsed < max_age)
    if retried:
        assert elapsed <= item.next_attempt <= max_age
        if retry_after is not None:
            assert item.next_attempt == min(elapsed + retry_after, max_age)
    else:
        assert "older than the maximum age" in item.last_error


def test_a_permanent_failure_is_dead_at_once():
    item = entry()
    assert not after_failure(item, Outcome(False, "HTTP 400", permanent=True), 10, random.Random(0), HOUR)
    assert item.last_error == "HTTP 400" and item.attempts == 1


# -- the relay on virtual time -----------------------------------------------------------


def relay_run(outcome, entries, *, seconds=0.01, until=None, drain=3600.0, **settings):
    """Run a relay over ``entries`` until drained (or ``drain`` seconds); return (relay, sender)."""
    clock = LoopClock(epoch_ms=0)
    sender = Scripted(outcome, seconds, clock)
    outbox = MemoryOutbox()
    relay = Relay(outbox, {"scripted": sender}, clock, rng=random.Random(1), **settings)

    async def scenario():
        task = asyncio.create_task(relay.run())
        relay.add_entries(entries)
        relay.drained = await relay.drain(drain)
        relay.final = relay.stats()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(scenario())
    return relay, sender


def test_failing_attempts_are_retried_with_growing_jittered_gaps_until_delivered():
    relay, sender = relay_run(lambda item, n: DELIVERED if n == 6 else Outcome(False, "HTTP 503"), [entry()])
    times = [moment for moment, _ in sender.calls]
    assert len(times) == 7 and relay.drained
    for attempt, (before, after) in enumerate(zip(times, times[1:]), start=1):
        gap = after - before - 10  # each attempt takes 10 ms
        assert 0 <= gap <= min(PROBE_MAX_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1)) + 1
    assert relay.final | {"oldest_pending_age_ms": 0} == {
        "delivered": 1, "retried": 6, "dead": 0, "pending": 0, "oldest_pending_age_ms": 0, "failures_in_row": 0,
        "dead_letters": 0, "failing_since": None, "sinks_down": []}


def test_retry_after_is_honoured_exactly():
    relay, sender = relay_run(
        lambda item, n: DELIVERED if n else Outcome(False, "HTTP 429", retry_after_ms=30_000), [entry()])
    (first, _), (second, _) = sender.calls
    assert second - first == 30_000 + 10


def test_an_endpoint_down_longer_than_the_maximum_age_makes_dead_letters():
    relay, sender = relay_run(lambda item, n: Outcome(False, "connection failed (Connection refused)"),
                              [entry(0), entry(1)], max_age_ms=HOUR, drain=7200.0)
    assert relay.drained and relay.final["dead"] == 2 and relay.final["pending"] == 0
    last_attempt = max(moment for moment, _ in sender.calls)
    assert HOUR <= last_attempt <= HOUR + 10  # the last try is at the maximum age, not later
    assert relay.outbox.dead[0].last_error.startswith("connection failed (Connection refused) (gave up after")
    assert relay.failures_in_row == len(sender.calls)


def test_a_permanent_failure_goes_dead_and_the_others_are_delivered():
    relay, sender = relay_run(
        lambda item, n: Outcome(False, "HTTP 400", permanent=True) if item.key == "u3" else DELIVERED,
        [entry(n) for n in range(6)])
    stats = relay.final
    assert (stats["delivered"], stats["dead"], len(sender.calls)) == (5, 1, 6)
    assert relay.last_dead_error == "HTTP 400"


def test_attempts_in_flight_never_exceed_the_concurrency():
    relay, sender = relay_run(lambda item, n: DELIVERED, [entry(n) for n in range(50)], seconds=1.0, concurrency=8)
    assert sender.most_running == 8
    assert relay.final["delivered"] == 50
    assert max(moment for moment, _ in sender.calls) == 6000  # 7 rounds of 8 (and 2) attempts of 1 s


def test_an_attempt_without_answer_times_out_and_is_retried():
    relay, sender = relay_run(lambda item, n: DELIVERED, [entry()], seconds=100.0, timeout_ms=10_000, drain=30.0)
    assert not relay.drained
    assert len(sender.calls) >= 2 and sender.calls[1][0] >= 10_000
    assert relay.last_error == "no answer within 10s"


def test_drain_gives_up_after_its_timeout():
    clock_seen = []

    def outcome(item, n):
        clock_seen.append(n)
        return Outcome(False, "HTTP 503")

    relay, sender = relay_run(outcome, [entry()], drain=5.0)
    assert not relay.drained and relay.final["pending"] == 1
    assert sender.calls[-1][0] <= 5000


def test_wait_for_room_returns_once_the_outbox_is_back_under_its_limit():
    clock = LoopClock(epoch_ms=0)
    sender = Scripted(lambda item, n: DELIVERED, 1.0, clock)
    relay = Relay(MemoryOutbox(), {"scripted": sender}, clock, concurrency=1, limit=3)
    seen = {}

    async def scenario():
        task = asyncio.create_task(relay.run())
        relay.add_entries([entry(n) for n in range(6)])
        assert relay.full()
        seen["quick"] = await relay.wait_for_room(0.5)
        seen["room"] = await relay.wait_for_room(None)
        seen["at"] = clock.now_ms()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(scenario())
    assert seen == {"quick": False, "room": True, "at": 3000}  # 3 delivered, 3 left: at the limit


def test_the_report_hears_of_failing_delivery_once_per_spell_its_recovery_and_each_dead_letter():
    # A service's stderr (no terminal, no status line) must show an endpoint that is down
    # (three failures in a row; a 503 now and then is retried without a word), and name
    # each result given up on when it dies, as docs/notify.md promises.
    heard = []
    down_until = 3  # u0: three failures, then delivered; u1 and u2: permanent failures
    once = []
    relay, sender = relay_run(lambda item, n: DELIVERED if n >= 2 else Outcome(False, "HTTP 503"), [entry(0)],
                              report=lambda *said: once.append(said))
    assert once == []  # two failures in a row: retried without a word

    def outcome(item, n):
        if item.key == "u0":
            return DELIVERED if n >= down_until else Outcome(False, "HTTP 503")
        return Outcome(False, "HTTP 400", permanent=True)

    relay, sender = relay_run(outcome, [entry(0)], report=lambda *said: heard.append(said))
    assert [(level, message) for level, message, _ in heard] == [
        ("warning", f"deliveries failing: scripted {entry(0).id}: HTTP 503 (retrying; results wait in the outbox)"),
        ("info", "deliveries work again (3 failed attempts before)"),
    ]
    heard.clear()
    relay, sender = relay_run(outcome, [entry(1), entry(2)], report=lambda *said: heard.append(said))
    dead = [fields["id"] for level, message, fields in heard if message.startswith("dead letter: ")]
    assert dead == [entry(1).id, entry(2).id]
    assert sum(message.startswith("deliveries failing") for _, message, _ in heard) == 0  # two in a row


# -- health per sink: probes while down, the backlog drained at once ------------------------


def outage(down_from, down_until, clock_box):
    """A sender's script: connection refused from ``down_from`` to ``down_until`` (ms)."""
    def outcome(item, n):
        now = clock_box[0].now_ms()
        if down_from <= now < down_until:
            return Outcome(False, "connection failed (Connection refused)")
        return DELIVERED
    return outcome


def run_outage(entries_at, *, down_from, down_until, seconds=0.01, probe_max_ms=5000, concurrency=8, end=None):
    """A relay fed ``entries_at`` ((moment ms, entries)...) while the sink is down from
    ``down_from`` to ``down_until``; returns (relay, sender, calls while down)."""
    clock = LoopClock(epoch_ms=0)
    sender = Scripted(outage(down_from, down_until, [clock]), seconds, clock)
    in_flight_while_down = []
    send = sender.send

    async def watched(item):
        if down_from <= clock.now_ms() < down_until:
            in_flight_while_down.append(sender.running + 1)
        return await send(item)

    sender.send = watched
    relay = Relay(MemoryOutbox(), {"scripted": sender}, clock, rng=random.Random(7), concurrency=concurrency,
                  probe_max_ms=probe_max_ms)

    async def scenario():
        task = asyncio.create_task(relay.run())
        for moment, entries in entries_at:
            await clock.sleep_until(moment)
            relay.add_entries(entries)
        relay.drained = await relay.drain(3600)
        relay.final = relay.stats()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(scenario())
    return relay, sender, in_flight_while_down


def test_a_sink_that_is_down_gets_one_probe_at_a_time_and_the_backlog_drains_at_once_when_it_is_back():
    # The scenario scaled down: 20 results a second for 90 s against an endpoint
    # that refuses connections from 5 s to 95 s, each attempt 10 ms when it works.
    feed = [(50 * n, [entry(n, 50 * n)]) for n in range(2000)]  # 0..100 s
    relay, sender, in_flight = run_outage(feed, down_from=5_000, down_until=95_000)
    down_calls = [moment for moment, _ in sender.calls if 5_000 <= moment < 95_000]
    assert relay.drained and relay.final["delivered"] == 2000 and relay.final["dead"] == 0
    assert max(in_flight) == 1  # never two attempts at once while down (the first failures aside)
    gaps = [after - before for before, after in zip(down_calls, down_calls[1:])]
    assert max(gaps) <= 5_000 + 10  # at most one backoff step (capped by --probe-max) apart...
    assert len(down_calls) <= 90 // 2.5 * 1.6 + 10  # ...about one per 2.5 s (full jitter), not 95 a second
    recovered = min(moment for moment, _ in sender.calls if moment >= 95_000)
    assert recovered <= 95_000 + 5_000  # noticed within --probe-max
    backlog = {entry(n).id for n in range(5_000 // 50, 95_000 // 50)}
    drained = max(moment for moment, rid in sender.calls if rid in backlog)
    assert drained - recovered <= len(backlog) / 8 * 10 + 500  # at full concurrency at once
    assert Counter(rid for rid, ok in sender.outcomes if ok) == Counter({entry(n).id: 1 for n in range(2000)})


def test_a_backlog_of_a_thousand_drains_well_within_ten_seconds_of_recovery():
    feed = [(0, [entry(n, 0) for n in range(1000)])]
    relay, sender, _ = run_outage(feed, down_from=0, down_until=60_000, seconds=0.005)
    after = [moment for moment, _ in sender.calls if moment >= 60_000]
    assert relay.final["delivered"] == 1000
    assert max(after) - 60_000 <= 10_000 and max(after) - min(after) <= 1000 / 8 * 5 + 100


def test_a_result_the_endpoint_always_refuses_does_not_hold_back_the_others():
    clock = LoopClock(epoch_ms=0)
    sender = Scripted(lambda item, n: Outcome(False, "HTTP 400") if item.key == "u3" else DELIVERED, 0.01, clock)
    relay = Relay(MemoryOutbox(), {"scripted": sender}, clock, rng=random.Random(2), max_age_ms=HOUR)
    seen = {}

    async def scenario():
        task = asyncio.create_task(relay.run())
        for second in range(120):
            relay.add_entries([entry(second * 10 + n, second * 1000) for n in range(10)])
            await asyncio.sleep(1)
        seen["pending"] = relay.stats()["pending"]
        seen["delivered"] = relay.delivered
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(scenario())
    assert seen["delivered"] >= 1190 - 20  # all but u3 and the last second's few
    assert seen["pending"] <= 20
    u3 = [moment for moment, rid in sender.calls if rid == entry(3).id]
    assert len(u3) <= 120 / 2.5 * 1.6 + 5  # retried at its own steps, not at every chance


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=40), st.integers(0, 2**32), st.integers(1, 8))
def test_results_of_one_key_are_delivered_once_each_in_decision_order(keys, seed, concurrency):
    failing = random.Random(seed)
    items = [Entry("scripted", f"timeout:{key}:{n}:0", key, b"{}", n, next_attempt=n) for n, key in enumerate(keys)]
    relay, sender = relay_run(lambda item, n: Outcome(False, "HTTP 503") if failing.random() < 0.3 else DELIVERED,
                              items, concurrency=concurrency, seconds=0.01)
    delivered = [rid for rid, ok in sender.outcomes if ok]
    assert sorted(delivered) == sorted(item.id for item in items)  # each once
    for key in set(keys):
        mine = [rid for rid in delivered if rid.split(":")[1] == key]
        assert mine == [item.id for item in items if item.key == key]


def test_a_dead_on_answer_makes_that_result_dead_at_once_and_the_sink_stays_up():
    relay, sender = relay_run(
        lambda item, n: Outcome(False, "HTTP 410", permanent=True) if item.key == "u1" else DELIVERED,
        [entry(n) for n in range(4)])
    assert relay.final["dead"] == 1 and relay.final["delivered"] == 3 and len(sender.calls) == 4
    assert relay.final["failures_in_row"] == 0 and relay.final["sinks_down"] == []


def watch_downs(outcome, count):
    """Deliver ``count`` entries one at a time; whether the sink was seen down meanwhile."""
    clock = LoopClock(epoch_ms=0)
    relay = Relay(MemoryOutbox(), {"scripted": Scripted(outcome, 0.01, clock)}, clock, rng=random.Random(4),
                  concurrency=1)
    downs = []

    async def scenario():
        task = asyncio.create_task(relay.run())
        relay.add_entries([entry(n) for n in range(count)])
        while relay.stats()["pending"]:
            downs.append(bool(relay.stats()["sinks_down"]))
            await asyncio.sleep(0.005)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(scenario())
    assert relay.delivered == count
    return any(downs)


def test_a_503_now_and_then_among_successes_does_not_take_the_sink_down_three_in_a_row_do():
    assert not watch_downs(lambda item, n: Outcome(False, "HTTP 503") if n == 0 and int(item.key[1:]) % 5 == 4
                           else DELIVERED, 100)
    assert not watch_downs(lambda item, n: Outcome(False, "HTTP 503") if n == 0 and item.key in ("u0", "u1")
                           else DELIVERED, 10)  # two in a row: still up
    assert watch_downs(lambda item, n: Outcome(False, "HTTP 503") if n == 0 and item.key in ("u0", "u1", "u2")
                       else DELIVERED, 10)
    assert watch_downs(lambda item, n: Outcome(False, "HTTP 429", retry_after_ms=1000) if n == 0 and item.key == "u0"
                       else DELIVERED, 10)  # asked to wait: down at once

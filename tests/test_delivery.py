"""The relay: backoff and retry decisions (pure), and the relay's schedule on virtual time."""

import asyncio
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.rules.clocks import LoopClock
from ordertimeout.notify.delivery import BACKOFF_BASE_MS, BACKOFF_CAP_MS, DELIVERED, Outcome, Relay, after_failure, backoff_ms
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
    assert 0 <= delay <= min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempts - 1))


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
        assert 0 <= gap <= min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempt - 1)) + 1
    assert relay.final | {"oldest_pending_age_ms": 0} == {
        "delivered": 1, "retried": 6, "dead": 0, "pending": 0, "oldest_pending_age_ms": 0, "failures_in_row": 0,
        "dead_letters": 0}


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

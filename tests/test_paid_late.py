"""--paid-late: a pay after the deadline of a timed-out order, within the horizon."""

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.cli import main
from ordertimeout.rules.events import CREATE, OTHER, PAY
from ordertimeout.rules.matcher import Matcher, PaidLate, Success, Timeout

from .helpers import event

W, D = 100, 50
KINDS = {"create": CREATE, "pay": PAY, "other": OTHER}


def run(events, mode="each", paid_late=D):
    matcher = Matcher(W, mode, paid_late)
    out = []
    for key, kind, time in events:
        out += matcher.on_event(key, KINDS[kind], time, b"{}")
    return out + matcher.drain(), matcher


@pytest.mark.parametrize(
    "pay_at,expected",
    [(99, Success), (100, PaidLate), (149, PaidLate), (150, None)],
)
def test_the_horizon_is_deadline_plus_paid_late_exclusive(pay_at, expected):
    out, matcher = run([("u", "create", 0), ("u", "pay", pay_at)])
    kinds = [type(result) for result in out]
    if expected is Success:
        assert kinds == [Success]
    elif expected is PaidLate:
        assert kinds == [Timeout, PaidLate]
        assert out[1] == PaidLate("u", 0, 100, pay_at, b"{}", b"{}", 0)
        assert out[1].id == "paid_late:u:0:0" and out[0].id == "timeout:u:0:0"
    else:
        assert kinds == [Timeout] and matcher.unmatched_pays == 1 and matcher.paid_late == 0


def test_an_open_order_is_paid_before_a_timed_out_one():
    out, _ = run([("u", "create", 0), ("u", "create", 120), ("u", "pay", 130), ("u", "pay", 140)])
    assert [(type(r).__name__, r.created) for r in out] == [
        ("Timeout", 0), ("Success", 120), ("PaidLate", 0)]


def test_followed_by_pays_every_remembered_order_of_the_key():
    out, _ = run([("u", "create", 0), ("u", "create", 1), ("u", "pay", 120)], mode="followed-by")
    assert [type(r).__name__ for r in out] == ["Timeout", "Timeout", "PaidLate", "PaidLate"]


def test_remembered_orders_survive_a_snapshot():
    first = Matcher(W, "each", D)
    first.on_event("u", CREATE, 0, b"{}")
    first.advance_to(110)
    second = Matcher.restore(first.snapshot())
    assert [type(r) for r in second.on_event("u", PAY, 120, b"{}")] == [PaidLate]


def test_forgotten_orders_free_their_memory():
    out, matcher = run([(str(i), "create", i) for i in range(50)] + [("x", "other", 1000)])
    assert matcher.expired_orders() == [] and matcher._expired == {}


events_strategy = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["create", "pay", "other"]),
              st.integers(min_value=0, max_value=70)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(gaps=events_strategy, mode=st.sampled_from(["each", "next", "followed-by"]))
def test_paid_late_only_turns_unmatched_pays_into_results(gaps, mode):
    time, events = 0, []
    for key, kind, gap in gaps:
        time += gap
        events.append((key, kind, time))
    without, plain = run(events, mode, None)
    with_late, late = run(events, mode)
    others = [r for r in with_late if type(r) is not PaidLate]
    assert others == without  # nothing else changes, not even the order
    timeouts = {(r.key, r.created, r.seq): r for r in without if type(r) is Timeout}
    paid_late = [r for r in with_late if type(r) is PaidLate]
    assert len({r.id for r in paid_late}) == len(paid_late)  # one paid_late per order at most
    for result in paid_late:
        timeout = timeouts[(result.key, result.created, result.seq)]
        assert timeout.deadline <= result.paid < timeout.deadline + D
    pays_used = len({(r.key, r.paid) for r in paid_late})
    assert plain.unmatched_pays - late.unmatched_pays == pays_used
    assert late.paid_late == len(paid_late)


def test_cli_prints_paid_late_and_keeps_it_across_a_restart(tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_bytes(event("u1", "create", 0, orderId="o1") + b"\n" + event("u2", "create", 10) + b"\n"
                      + event("u2", "other", 2000) + b"\n")
    state = str(tmp_path / "state.db")
    runner = CliRunner()
    args = ["watch", "--within", "1s", "--paid-late", "1h", "--json", "-q", "--state", state]
    outcome = runner.invoke(main, [*args, str(first)])
    assert outcome.exit_code == 0, outcome.output
    results = [orjson.loads(line) for line in outcome.stdout.splitlines()]
    assert [r["result"] for r in results] == ["timeout", "timeout"]
    second = tmp_path / "b.jsonl"
    second.write_bytes(event("u1", "pay", 5000, orderId="o1") + b"\n")
    outcome = runner.invoke(main, [*args, "--only", "paid_late", str(second)])
    assert outcome.exit_code == 0, outcome.output
    (late,) = [orjson.loads(line) for line in outcome.stdout.splitlines()]
    assert late == {"result": "paid_late", "id": "paid_late:u1:0:0", "key": "u1", "created": 0, "deadline": 1000,
                    "paid": 5000, "create": orjson.loads(event("u1", "create", 0, orderId="o1")),
                    "pay": orjson.loads(event("u1", "pay", 5000, orderId="o1"))}
    rows = runner.invoke(main, ["watch", "--within", "1s", "--paid-late", "1h", "-q"],
                         input=event("u", "create", 0) + b"\n" + event("u", "pay", 1500) + b"\n").stdout
    assert "paid_late" in rows and "paid 500ms after its deadline" in rows

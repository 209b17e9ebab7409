"""Windows of their own, reminders and `pending` through the command line (issue 21):
options from the command line, the environment and a config file, the output shapes,
rejections, restarts with --state, --exec, --stats, simulate and a live processing-time run."""

from __future__ import annotations

import hashlib
import os
import pathlib
import signal
import subprocess
import time

import orjson
import pytest
from click.testing import CliRunner

from ordertimeout.cli import main
from ordertimeout.state.store import StateStore

from .helpers import COMMAND, live_watch

MIN = 60_000


def line(key, kind, ts, **extra) -> bytes:
    return orjson.dumps({"userId": key, "type": kind, "ts": ts, **extra}) + b"\n"


SHOP = (
    line("u1", "create", 0, payment={"method": "card"}, orderId="o1")
    + line("u2", "create", 1000, payment={"method": "bank_transfer"}, orderId="o2")
    + line("u3", "create", 2000, orderId="o3")
    + line("u2", "pay", 20 * MIN)
)
SHOP_OPTIONS = ["--within", "1h", "--within", "card=15m", "--within", "bank_transfer=3d",
                "--within-by", "payment.method", "--remind", "5m", "--remind-before", "10m"]


def run(args, data=b"", env=None, **kwargs):
    return CliRunner().invoke(main, args, input=data, env=env, **kwargs)


def results(output: str) -> list[dict]:
    return [orjson.loads(text) for text in output.splitlines() if text.startswith("{")]


def test_payment_methods_and_reminders_as_json(tmp_path):
    events = tmp_path / "shop.jsonl"
    events.write_bytes(SHOP)
    outcome = run(["watch", str(events), *SHOP_OPTIONS, "--json", "-q"])
    assert outcome.exit_code == 0, outcome.output
    got = [(r["result"], r["key"], r.get("due", r.get("paid", r["deadline"])), r.get("stage")) for r in results(outcome.output)]
    assert got == [
        ("reminder", "u1", 5 * MIN, 1),  # 5m after and 10m before a 15m window: one reminder
        ("reminder", "u2", 5 * MIN + 1000, 1),
        ("reminder", "u3", 5 * MIN + 2000, 1),
        ("timeout", "u1", 15 * MIN, None),
        ("success", "u2", 20 * MIN, None),
        ("reminder", "u3", 50 * MIN + 2000, 2),
        ("timeout", "u3", 60 * MIN + 2000, None),
    ]
    first = results(outcome.output)[0]
    assert first == {"result": "reminder", "id": "reminder:u1:0:0:1", "key": "u1", "created": 0, "due": 5 * MIN,
                     "deadline": 15 * MIN, "stage": 1,
                     "create": {"userId": "u1", "type": "create", "ts": 0, "payment": {"method": "card"}, "orderId": "o1"}}
    success = [r for r in results(outcome.output) if r["result"] == "success"][0]
    assert success["deadline"] == 1000 + 3 * 24 * 60 * MIN  # the bank transfer's own window


def test_rows_only_reminder_and_the_summary(tmp_path):
    events = tmp_path / "shop.jsonl"
    events.write_bytes(SHOP)
    outcome = run(["watch", str(events), *SHOP_OPTIONS, "--only", "reminder", "--color", "never"])
    assert outcome.exit_code == 0
    rows = [row for row in outcome.stdout.splitlines() if row.startswith("1970")]
    assert len(rows) == 4 and all("  reminder " in row for row in rows)
    assert rows[0].split()[1:5] == ["reminder", "1", "u1", "5m"]
    assert "5m after create, 10m left" in rows[0]
    assert "50m after create, 10m left" in rows[3]
    assert "4 reminders" in outcome.stderr and "reminders by stage 1: 3, 2: 1" in outcome.stderr
    timeouts = run(["watch", str(events), *SHOP_OPTIONS, "--only", "timeout", "--color", "never", "-q"])
    assert "no pay within 15m" in timeouts.stdout and "no pay within 1h" in timeouts.stdout


def test_unlisted_values_without_a_plain_window_are_rejected_by_name(tmp_path):
    events = tmp_path / "shop.jsonl"
    events.write_bytes(SHOP.replace(b'{"userId":"u2","type":"pay"', line("u4", "create", 3000, payment={"method": 7})
                                    + b'{"userId":"u2","type":"pay"'))
    stats = tmp_path / "stats.json"
    outcome = run(["watch", str(events), "--within", "card=15m", "--within", "7=1m", "--within-by", "payment.method",
                   "--json", "--stats", str(stats)])
    assert outcome.exit_code == 0
    assert "line 2: no window for payment.method=bank_transfer" in outcome.stderr
    assert "line 3: no window for payment.method=(missing)" in outcome.stderr
    figures = orjson.loads(stats.read_bytes())
    assert figures["rejected"] == 2 and figures["creates"] == 2  # 7 as a number is the text "7"
    assert figures["rejected_by_reason"] == {"no_window": 2}
    assert [r["deadline"] for r in results(outcome.stdout) if r["result"] == "timeout"] == [3000 + MIN, 15 * MIN]


@pytest.mark.parametrize("args,words", [
    (["--within", "card=oops", "--within-by", "m"], "'oops' is not a duration"),
    (["--within", "card=15m"], "needs --within-by"),
    (["--within-by", "m"], "--within-by needs at least one --within VALUE=D"),
    (["--deadline-field", "due", "--processing-time"], "--deadline-field is for event time"),
    (["--remind", "0"], "--remind"),
])
def test_usage_errors(args, words):
    outcome = run(["watch", *args], b"")
    assert outcome.exit_code == 2 and words in outcome.output


def test_deadline_field_wins_and_a_deadline_not_after_its_create_is_rejected(tmp_path):
    data = (line("a", "create", 1000, due="1970-01-01T00:00:05Z") + line("b", "create", 1000, due=1000)
            + line("c", "create", 1000, payment={"method": "card"}) + line("d", "create", 2000, due=None))
    outcome = run(["watch", "--deadline-field", "due", "--within", "card=15m", "--within-by", "payment.method",
                   "--within", "1m", "--json"], data)
    assert outcome.exit_code == 0
    assert "line 2: deadline field 'due' (1000) is not after the create (1000)" in outcome.stderr
    from ordertimeout.outputs.sinks import reason_class
    assert reason_class("deadline field 'due' (1000) is not after the create (1000)") == "bad_deadline"
    assert [(r["key"], r["deadline"]) for r in results(outcome.stdout)] == [("a", 5000), ("d", 62000), ("c", 901000)]


def test_options_from_the_environment_and_a_config_file(tmp_path):
    config = tmp_path / "shop.toml"
    config.write_text('within = ["1h", "card=15m"]\nwithin-by = "payment.method"\nremind-before = "10m"\n')
    data = line("u1", "create", 0, payment={"method": "card"}) + line("u9", "create", 0)
    from_file = run(["watch", "--config", str(config), "--json", "-q"], data)
    assert [(r["result"], r["key"], r.get("due", r["deadline"])) for r in results(from_file.stdout)] == [
        ("reminder", "u1", 5 * MIN), ("timeout", "u1", 15 * MIN), ("reminder", "u9", 50 * MIN), ("timeout", "u9", 60 * MIN)]
    env = {"ORDERTIMEOUT_WITHIN": "1h card=15m", "ORDERTIMEOUT_WITHIN_BY": "payment.method",
           "ORDERTIMEOUT_REMIND_BEFORE": "10m"}
    from_env = run(["watch", "--json", "-q"], data, env=env)
    assert from_env.stdout == from_file.stdout
    verbose = run(["watch", "--config", str(config), "-v"], data)
    assert "--within 1h,card=15m" in verbose.stderr


def test_a_reminder_due_while_the_tool_was_down_comes_out_once_after_the_restart(tmp_path):
    state = str(tmp_path / "orders.db")
    args = ["watch", "--within", "1h", "--remind", "5m", "--remind", "20m", "--json", "-q", "--state", state]
    first = run([*args, "-"], line("u1", "create", 0) + line("u2", "create", MIN))
    assert results(first.stdout) == []  # time reached 1m: nothing due yet
    # Down from 1m to 30m: both first reminders and u1's second fell due meanwhile.
    second = run([*args, "-"], line("u3", "other", 30 * MIN))
    assert [(r["key"], r["stage"], r["due"]) for r in results(second.stdout)] == [
        ("u1", 1, 5 * MIN), ("u2", 1, 6 * MIN), ("u1", 2, 20 * MIN), ("u2", 2, 21 * MIN)]
    third = run([*args, "--final", "-"], line("u1", "pay", 40 * MIN))
    assert [(r["result"], r["key"]) for r in results(third.stdout)] == [("success", "u1"), ("timeout", "u2")]
    # the same events in one run: the same results, each once
    whole = run(["watch", "--within", "1h", "--remind", "5m", "--remind", "20m", "--json", "-q"],
                line("u1", "create", 0) + line("u2", "create", MIN) + line("u3", "other", 30 * MIN)
                + line("u1", "pay", 40 * MIN))
    assert results(whole.stdout) == results(second.stdout) + results(third.stdout)


def test_a_restart_may_change_the_reminders(tmp_path):
    state = str(tmp_path / "orders.db")
    first = run(["watch", "--within", "1h", "--remind", "5m", "--json", "-q", "--state", state, "-"],
                line("u1", "create", 0) + line("u2", "other", 6 * MIN))
    assert [(r["key"], r["due"]) for r in results(first.stdout)] == [("u1", 5 * MIN)]
    second = run(["watch", "--within", "1h", "--remind", "5m", "--remind-before", "10m", "--json", "-q", "--final",
                  "--state", state, "-"], b"")
    assert [(r["result"], r.get("due", r["deadline"]), r.get("stage")) for r in results(second.stdout)] == [
        ("reminder", 50 * MIN, 2), ("timeout", 60 * MIN, None)]


def test_a_state_file_of_other_windows_is_refused(tmp_path):
    state = str(tmp_path / "orders.db")
    assert run(["watch", *SHOP_OPTIONS, "-q", "--state", state, "-"], SHOP).exit_code == 0
    other = run(["watch", "--within", "1h", "--within", "card=30m", "--within-by", "payment.method", "-q",
                 "--state", state, "-"], b"")
    assert other.exit_code == 1 and "different configuration" in other.output


def test_exec_gets_the_result_and_stage_of_a_reminder(tmp_path):
    log = tmp_path / "log"
    outcome = run(["watch", "--within", "1h", "--remind", "5m", "--remind-before", "5m", "-q", "--exec",
                   f'echo "$ORDERTIMEOUT_RESULT $ORDERTIMEOUT_STAGE $ORDERTIMEOUT_ID" >> {log}'],
                  line("u1", "create", 0))
    assert outcome.exit_code == 0, outcome.output
    assert sorted(log.read_text().splitlines()) == [
        "reminder 1 reminder:u1:0:0:1", "reminder 2 reminder:u1:0:0:2", "timeout  timeout:u1:0:0"]


def test_stats_count_reminders_by_stage(tmp_path):
    stats = tmp_path / "stats.json"
    outcome = run(["watch", *SHOP_OPTIONS, "-q", "--stats", str(stats), "-"], SHOP)
    assert outcome.exit_code == 0
    figures = orjson.loads(stats.read_bytes())
    assert figures["reminder"] == 4 and figures["reminders_by_stage"] == {"1": 3, "2": 1}
    assert figures["windows"] == "card=15m, bank_transfer=3d, else 1h"


def test_simulate_reminds():
    outcome = subprocess.run([*COMMAND, "simulate", "--interval", "5ms", "--count", "8", "--within", "12ms",
                              "--remind", "4ms", "--json", "-q"], capture_output=True, timeout=60)
    assert outcome.returncode == 0, outcome.stderr
    kinds = [orjson.loads(text)["result"] for text in outcome.stdout.splitlines()]
    assert "reminder" in kinds and "timeout" in kinds


# -- pending ----------------------------------------------------------------------------


def saved_shop(tmp_path) -> str:
    state = str(tmp_path / "orders.db")
    outcome = run(["watch", *SHOP_OPTIONS, "-q", "--state", state, "-"], SHOP[: SHOP.index(b'{"userId":"u2","type":"pay"')])
    assert outcome.exit_code == 0
    return state


def test_pending_lists_open_orders_soonest_first_without_touching_the_file(tmp_path):
    state = saved_shop(tmp_path)
    before = hashlib.sha256(pathlib.Path(state).read_bytes()).hexdigest(), os.stat(state).st_mtime_ns
    outcome = run(["pending", state])
    assert outcome.exit_code == 0, outcome.output
    rows = outcome.stdout.splitlines()
    assert [row.split()[1] for row in rows] == ["u1", "u3", "u2"]
    assert "14m58s left" in rows[0] and "reminder 1 in 4m58s" in rows[0] and "window 15m" in rows[0]
    assert "3 open as of 1970-01-01T00:00:02.000Z (" in outcome.stderr and "3d: 1" in outcome.stderr
    as_json = results(run(["pending", state, "--json", "--key", "u2"]).stdout)
    assert as_json[0]["key"] == "u2" and as_json[0]["next_reminder"] == 301000 and as_json[0]["stage"] == 1
    assert as_json[-1] == {"count": 1, "by_window": {"3d": 1}, "as_of": 2000}
    soon = results(run(["pending", state, "--json", "--due-within", "5m"]).stdout)
    assert [r["key"] for r in soon[:-1]] == ["u1", "u3", "u2"]  # each has a reminder within 5m
    assert results(run(["pending", state, "--json", "--due-within", "1m"]).stdout) == [
        {"count": 0, "by_window": {}, "as_of": 2000}]
    assert (hashlib.sha256(pathlib.Path(state).read_bytes()).hexdigest(), os.stat(state).st_mtime_ns) == before


def test_pending_reads_the_last_checkpoint_of_a_file_a_running_service_holds(tmp_path):
    """A service following its log holds the state file; `pending` reads its last
    checkpoint meanwhile (and the service goes on), as the issue asks."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(SHOP[: SHOP.index(b'{"userId":"u2","type":"pay"')])
    state = str(tmp_path / "orders.db")
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent))
    service = subprocess.Popen([*COMMAND, "watch", "--follow", str(events), *SHOP_OPTIONS, "-q", "--state", state,
                                "--checkpoint-every", "50ms", "--json"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env)
    try:
        deadline, listed = time.monotonic() + 30, []
        while time.monotonic() < deadline:
            outcome = subprocess.run([*COMMAND, "pending", state, "--json"], capture_output=True, env=env, timeout=60)
            assert b"Traceback" not in outcome.stderr
            listed = results(outcome.stdout.decode()) if outcome.returncode == 0 else []
            if listed and listed[-1].get("count") == 3:
                break
            time.sleep(0.1)
        assert [order["key"] for order in listed[:-1]] == ["u1", "u3", "u2"], listed
        assert service.poll() is None  # the service runs on
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=60)
    assert service.returncode == 143, err
    not_state = tmp_path / "x.db"
    not_state.write_bytes(b"hello")
    bad = run(["pending", str(not_state)])
    assert bad.exit_code == 1 and "Traceback" not in bad.output


# -- live, processing time ------------------------------------------------------------


def test_live_processing_time_reminds_before_the_timeout():
    with live_watch("--processing-time", "--within", "900ms", "--remind", "300ms") as process:
        time.sleep(0.3)  # started
        sent = time.monotonic()
        process.stdin.write(b'{"userId":"u1","type":"create"}\n')
        process.stdin.flush()
        first = orjson.loads(process.stdout.readline())
        reminded = time.monotonic() - sent
        second = orjson.loads(process.stdout.readline())
        timed_out = time.monotonic() - sent
    assert (first["result"], first["stage"], first["due"] - first["created"]) == ("reminder", 1, 300)
    assert second["result"] == "timeout" and second["deadline"] - second["created"] == 900
    assert 0.25 <= reminded < timed_out and 0.85 <= timed_out < 5  # tolerant of a loaded machine


# -- kafka's changelog and /metrics --------------------------------------------------------


def test_the_kafka_changelog_carries_what_a_restored_order_needs():
    """An order's own deadline and the reminders still to come survive a changelog round trip."""
    from ordertimeout import EventParser, EventSchema, Pipeline, TimeMode
    from ordertimeout.cli.deadline_options import Deadlines
    from ordertimeout.hosts.kafka.changelog import ChangelogWriter, fold

    deadlines = Deadlines(100, (("card", 30),), "m", "due", (10,), (5,))
    config = {"within_ms": 100, "match": "each", **deadlines.config()}

    def pipeline():
        return Pipeline(EventParser(EventSchema(**deadlines.schema_fields())), deadlines.matcher("each", None),
                        time_mode=TimeMode.EVENT)

    events = [line("a", "create", 0, m="card"), line("b", "create", 1, due=50), line("c", "create", 2),
              line("x", "other", 12)]
    first, writer = pipeline(), ChangelogWriter(0, config)
    log = writer.start(first, fold(0, [], config), 0)
    results = []
    for raw in events:
        results += first.feed(raw.strip(), 0)
    log += writer.batch(first, 4)
    restored = fold(0, [(record.key, record.value, record.epoch) for record in log], config)
    second = pipeline()
    second.restore(restored.pipeline_state())
    results += second.finish()
    whole = pipeline()
    expected = [result for raw in events for result in whole.feed(raw.strip(), 0)] + whole.finish()
    assert results == expected
    assert [(type(r).__name__, r.key, r.time) for r in results[3:]] == [
        ("Reminder", "a", 25), ("Timeout", "a", 30), ("Reminder", "b", 45),
        ("Timeout", "b", 50), ("Reminder", "c", 97), ("Timeout", "c", 102)]


def test_metrics_count_reminders_by_stage_and_open_orders_by_window_and_time_left():
    from .helpers import free_port
    from .monitoring import scrape, start_monitored, wait_for

    port = free_port()
    process = start_monitored(["--processing-time", "--within", "1h", "--within", "card=10m", "--within-by", "m",
                               "--remind", "200ms"], port)
    try:
        process.stdin.write(b'{"userId":"u1","type":"create","m":"card"}\n{"userId":"u2","type":"create"}\n'
                            b'{"userId":"u3","type":"create"}\n')
        process.stdin.flush()
        metrics = wait_for(lambda: (m := scrape(port)).get('ordertimeout_reminders_total{stage="1"}') == 3 and m,
                           what="three reminders", process=process)
        assert metrics['ordertimeout_results_total{kind="reminder"}'] == 3, sorted(metrics)
        assert metrics['ordertimeout_open_orders_time_left{le="900.0",window="10m"}'] == 1
        assert metrics['ordertimeout_open_orders_time_left{le="300.0",window="10m"}'] == 0
        assert metrics['ordertimeout_open_orders_time_left{le="+Inf",window="1h"}'] == 2
        assert metrics['ordertimeout_open_orders_time_left{le="900.0",window="1h"}'] == 0
        assert metrics['ordertimeout_open_orders_time_left{le="3600.0",window="1h"}'] == 2
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 130

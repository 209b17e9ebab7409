"""/metrics: scraped from live runs, parsed with prometheus-client, equal to --stats."""

import signal
import subprocess
import sys
import time

import orjson
import pytest

from ordertimeout.observe.histogram import Buckets, window_bounds

from .helpers import COMMAND, event, free_port
from .monitoring import get, scrape, start_monitored, wait_for

LINES = [
    event("a", "create", 1000),
    event("b", "create", 1100),
    event("a", "pay", 1600),  # success after 600 ms
    b"not json",
    orjson.dumps({"type": "create", "ts": 1200}),  # no key
    event("c", "create", 1500),
    event("c", "cancel", 1700),
    event("x", "view", 1800),
    event("d", "create", 5000),  # the watermark passes b's deadline: timeout
    event("e", "create", 3000),  # late
    event("d", "pay", 5200),  # waits in the reorder buffer, then success after 200 ms
    event("b", "pay", 5100),  # after b's deadline: paid_late
    b"",
    event("f", "create", 6000),
    orjson.dumps({"userId": "g", "type": "create", "ts": "soon"}),  # no valid time
    event("h", "create", 6100),
]
FED = b"".join(line + b"\n" for line in LINES)


def test_metrics_equal_stats_of_the_same_moment(tmp_path):
    port, stats_path = free_port(), tmp_path / "stats.json"
    process = start_monitored(
        ["--within", "1s", "--lateness", "500ms", "--cancel-type", "cancel", "--paid-late", "1h",
         "--stats", str(stats_path)], port
    )
    process.stdin.write(FED)
    process.stdin.flush()
    # Stop feeding; once every line is worked through, nothing changes until the signal.
    metrics = wait_for(lambda: (m := scrape(port)).get("ordertimeout_input_lines_total") == len(LINES) and m,
                       what="every line to be read", process=process)
    assert get(port, "/healthz") == (200, b'{"status":"ok"}\n')
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    stats = orjson.loads(stats_path.read_bytes())

    # The same numbers, name by name.
    assert metrics['ordertimeout_events_total{outcome="used"}'] == stats["events"] - stats["late"]
    assert metrics['ordertimeout_events_total{outcome="late"}'] == stats["late"]
    for kind in ("success", "timeout", "cancelled", "paid_late"):
        assert metrics[f'ordertimeout_results_total{{kind="{kind}"}}'] == stats[kind]
    for name, label in (("creates", "create"), ("pays", "pay"), ("cancels", "cancel"), ("other", "other")):
        assert metrics[f'ordertimeout_events_by_type_total{{type="{label}"}}'] == stats[name]
    assert metrics["ordertimeout_open_orders"] == stats["pending"]
    assert metrics['ordertimeout_unmatched_total{type="pay"}'] == stats["unmatched_pays"]
    assert metrics["ordertimeout_input_bytes_total"] == stats["input"]["bytes"] == len(FED)
    assert metrics["ordertimeout_input_lines_total"] == stats["input"]["lines"] == len(LINES)
    rejected = {name: value for name, value in metrics.items() if name.startswith("ordertimeout_lines_rejected_total")}
    assert rejected == {
        f'ordertimeout_lines_rejected_total{{reason="{reason}"}}': count
        for reason, count in stats["rejected_by_reason"].items() if reason != "late"
    }
    assert sum(rejected.values()) == stats["rejected"]
    assert metrics["ordertimeout_watermark_seconds"] * 1000 == pytest.approx(stats["watermark"])
    assert metrics["ordertimeout_watermark_lag_seconds"] > 0
    assert metrics["ordertimeout_healthy"] == 1

    # And they are the right numbers (so the comparison above can fail).
    assert (stats["success"], stats["timeout"], stats["cancelled"], stats["paid_late"], stats["late"]) == (2, 1, 1, 1, 1)
    assert (stats["pending"], stats["rejected"], stats["watermark"]) == (2, 3, 5599)
    assert stats["rejected_by_reason"] == {"not_json": 1, "bad_key": 1, "bad_time": 1, "late": 1}

    # Pay latency: the histogram holds exactly the successes printed on stdout.
    results = [orjson.loads(line) for line in out.splitlines()]
    latencies = [r["paid"] - r["created"] for r in results if r["result"] == "success"]
    assert sorted(latencies) == [200, 600]
    expected = Buckets(window_bounds(1000))
    expected.observe_all(latencies)
    for bound, count in expected.cumulative():
        le = "+Inf" if bound == float("inf") else repr(bound / 1000)
        assert metrics[f'ordertimeout_pay_latency_seconds_bucket{{le="{le}"}}'] == count
    assert metrics["ordertimeout_pay_latency_seconds_count"] == stats["success"] == len(latencies)
    assert metrics["ordertimeout_pay_latency_seconds_sum"] == pytest.approx(sum(latencies) / 1000)
    assert stats["pay_latency"]["max_ms"] == 600


def test_timer_lateness_in_processing_time_equals_stats(tmp_path):
    port, stats_path = free_port(), tmp_path / "stats.json"
    process = start_monitored(["--processing-time", "--within", "100ms", "--stats", str(stats_path)], port)
    process.stdin.write(b"".join(event(f"u{i}", "create", 0) + b"\n" for i in range(5)))
    process.stdin.flush()
    metrics = wait_for(lambda: (m := scrape(port)).get('ordertimeout_results_total{kind="timeout"}') == 5
                       and m.get("ordertimeout_timer_lateness_seconds_count") == 5 and m,
                       what="five timeouts and their lateness", process=process)
    seen_by = time.time_ns() // 1_000_000  # every lateness was measured before this moment
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    stats = orjson.loads(stats_path.read_bytes())
    lateness = stats["timer_lateness"]
    assert metrics["ordertimeout_timer_lateness_seconds_count"] == lateness["count"] == stats["timeout"] == 5
    assert metrics["ordertimeout_timer_lateness_seconds_sum"] == pytest.approx(lateness["sum_ms"] / 1000)
    # No later than this test saw them go out, however loaded the machine: a tool that
    # reported its timers late (or counted from the wrong moment) fails here.
    # (The tool's clock is the wall clock read once, then monotonic: 10 ms covers both.)
    deadlines = [orjson.loads(line)["deadline"] for line in out.splitlines()]
    assert len(deadlines) == 5
    assert 0 <= lateness["max_ms"] <= seen_by - min(deadlines) + 10
    assert lateness["sum_ms"] <= sum(seen_by - deadline + 10 for deadline in deadlines)
    # Every timeout is in the bucket of the largest lateness (or a smaller one).
    assert metrics['ordertimeout_timer_lateness_seconds_bucket{le="10.0"}'] == 5
    assert "ordertimeout_watermark_seconds" not in metrics  # processing time has none


def test_metrics_of_simulate_with_deliveries_absent():
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "simulate", "--interval", "50ms", "--within", "75ms", "-q", "--metrics-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        metrics = wait_for(lambda: _scrape_or_none(port), what="a scrape of simulate", process=process)
        metrics = wait_for(lambda: (m := scrape(port))['ordertimeout_results_total{kind="timeout"}'] >= 2 and m,
                           what="two timeouts", process=process)
        assert metrics["ordertimeout_timer_lateness_seconds_count"] >= 2
        assert "ordertimeout_input_bytes_total" not in metrics  # simulate reads no input
        assert not any(name.startswith("ordertimeout_deliveries") for name in metrics)
        assert any(name.startswith("process_cpu_seconds_total") for name in metrics)
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 130


def _scrape_or_none(port):
    try:
        return scrape(port)
    except OSError:
        return None


def test_a_taken_address_is_a_clear_error():
    port = free_port()
    process = start_monitored([], port)
    try:
        again = subprocess.run([*COMMAND, "watch", "--metrics-addr", f"127.0.0.1:{port}"], input=b"",
                               capture_output=True, timeout=60)
    finally:
        process.communicate(b"", timeout=30)
    assert again.returncode == 1
    assert again.stderr.decode().startswith(f"Error: cannot serve metrics on 127.0.0.1:{port}: ")
    assert b"Traceback" not in again.stderr


@pytest.mark.parametrize("address", ["9108", "host:", "localhost:99999", "a:b"])
def test_a_bad_address_is_a_usage_error(address):
    from click.testing import CliRunner

    from ordertimeout.cli import main

    outcome = CliRunner().invoke(main, ["watch", "--metrics-addr", address], input=b"")
    assert outcome.exit_code == 2 and "is not HOST:PORT" in outcome.stderr


def test_an_address_without_a_host_is_refused_rather_than_binding_every_interface():
    from click.testing import CliRunner

    from ordertimeout.cli import main

    outcome = CliRunner().invoke(main, ["watch", "--metrics-addr", ":9108"], input=b"")
    assert outcome.exit_code == 2
    assert "':9108' names no host: 127.0.0.1:9108 serves this machine only, 0.0.0.0:9108 every interface" in (
        outcome.stderr.replace("\n", " "))


def test_plain_watch_never_imports_the_metrics_libraries():
    code = (
        "import sys, io; from click.testing import CliRunner; from ordertimeout.cli import main;"
        "CliRunner().invoke(main, ['watch', '--json', '-q'], input=b'{\"userId\":1,\"type\":\"create\",\"ts\":1}\\n');"
        "print(sorted(m for m in ('aiohttp', 'prometheus_client') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.strip() == b"[]"


def test_every_kind_of_rejected_line_is_counted_under_its_own_reason(tmp_path):
    from click.testing import CliRunner

    from ordertimeout.cli import main

    kinds = {
        b"\xff\xfe": "not_utf8",
        b"{oops": "not_json",
        b"42": "not_object",
        b'{"type":"create","ts":1}': "bad_key",
        b'{"userId":{"id":1},"type":"create","ts":1}': "bad_key",
        b'{"userId":"1","ts":1}': "bad_type",
        b'{"userId":"1","type":null,"ts":1}': "bad_type",
        b'{"userId":"1","type":"pay"}': "bad_time",
        b'{"userId":"1","type":"pay","ts":"2026-13-45"}': "bad_time",
        b'{"userId":"1","type":"create","ts":1,"pad":"' + b"y" * 300 + b'"}': "too_long",
        event("1", "create", 1): "late",
    }
    stats_path = tmp_path / "stats.json"
    lines = [event("9", "create", 5000), *kinds]
    CliRunner().invoke(main, ["watch", "-q", "--max-line-bytes", "200", "--stats", str(stats_path)],
                       input=b"\n".join(lines) + b"\n")
    stats = orjson.loads(stats_path.read_bytes())
    by_reason = stats["rejected_by_reason"]
    expected = {}
    for reason in kinds.values():
        expected[reason] = expected.get(reason, 0) + 1
    assert by_reason == expected  # no "other": each reason text has its class
    # The counters agree with the reasons: a line too long to read is rejected too.
    assert (stats["rejected"], stats["late"]) == (len(kinds) - 1, 1)


@pytest.mark.parametrize(
    "text, address",
    [("127.0.0.1:9108", ("127.0.0.1", 9108)), ("0.0.0.0:9108", ("0.0.0.0", 9108)), ("[::1]:9108", ("::1", 9108))],
)
def test_addresses(text, address):
    from ordertimeout.cli.metrics_options import Address

    assert Address().convert(text, None, None) == address

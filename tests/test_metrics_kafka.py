"""/metrics and /healthz of `ordertimeout kafka` workers, against the tests' tansu broker."""

import signal
import subprocess
import tempfile

import orjson

from .helpers import COMMAND, event, free_port
from .kafka_cluster import bootstrap, cluster  # noqa: F401  (the broker and topics fixtures)
from .monitoring import get, scrape, wait_for


def test_a_worker_serves_partition_lag_and_counters_equal_to_stats(cluster, tmp_path):  # noqa: F811
    cluster.create(partitions=2)
    port, stats_path = free_port(), tmp_path / "stats.json"
    worker = cluster.worker("--json", "-q", "--metrics-addr", f"127.0.0.1:{port}", "--stats", str(stats_path))
    lines = [event(f"u{n}", "create", 1000 + n) for n in range(6)] + [event("u0", "pay", 1500), b"not json"]
    cluster.produce(lines)

    def settled():
        try:
            metrics = scrape(port)
        except OSError:
            return None
        lags = {name: value for name, value in metrics.items() if name.startswith("ordertimeout_kafka_partition_lag")}
        used = metrics.get('ordertimeout_events_total{outcome="used"}')
        return metrics if used == 7 and len(lags) == 2 and not any(lags.values()) else None

    metrics = wait_for(settled, what="every record processed", timeout=60, process=worker)
    assert metrics["ordertimeout_kafka_assigned_partitions"] == 2
    assert get(port, "/healthz")[0] == 200
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    stats = orjson.loads(stats_path.read_bytes())
    assert metrics['ordertimeout_results_total{kind="success"}'] == stats["success"] == 1
    assert metrics["ordertimeout_open_orders"] == 5  # (at the stop the worker hands its partitions back)
    assert metrics['ordertimeout_lines_rejected_total{reason="not_json"}'] == stats["rejected_by_reason"]["not_json"] == 1
    assert stats["kafka"] == {"partitions": {}}  # handed back at the stop


def test_healthz_is_503_while_the_cluster_cannot_be_reached():
    port, nowhere = free_port(), free_port()
    with tempfile.TemporaryFile() as err:
        worker = subprocess.Popen(
            [*COMMAND, "kafka", "--bootstrap", f"127.0.0.1:{nowhere}", "--topic", "t", "--group", "g",
             "--results-topic", "r", "--connect-timeout", "30s", "--metrics-addr", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=err,
        )
        try:
            def unhealthy():
                try:
                    status, body = get(port, "/healthz")
                except OSError:
                    return None
                return status == 503 and orjson.loads(body)

            body = wait_for(unhealthy, what="/healthz to say the cluster is unreachable", process=worker)
            assert f"cannot reach 127.0.0.1:{nowhere}" in body["reasons"]["input"]
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)

"""Health: the rules on a manual clock, and /healthz of live runs whose state or input fails."""

import asyncio
import io
import resource
import signal
import subprocess

import orjson

from ordertimeout.observe.health import Health
from ordertimeout.observe.monitor import Monitor
from ordertimeout.observe.logs import Log
from ordertimeout.inputs.sources import ChunkReader, Input, SourceError

from .helpers import COMMAND, event, free_port
from .monitoring import get, scrape, start_monitored, wait_for


class Deliveries:
    """The notify sink's stats() as the health check reads it (a dict of counters)."""

    def __init__(self) -> None:
        self.figures = {"delivered": 0, "failures_in_row": 0}

    def stats(self) -> dict:
        return dict(self.figures)


def test_components_fail_and_recover_with_their_reason():
    health = Health()
    assert health.check(0) == (True, {"status": "ok"})
    health.fail("state", "cannot write state file s.db: disk full")
    health.fail("input", "cannot read f: Is a directory")
    healthy, body = health.check(0)
    assert not healthy and body["reasons"] == {
        "state": "cannot write state file s.db: disk full", "input": "cannot read f: Is a directory"
    }
    health.recover("state")
    health.recover("input")
    assert health.check(0) == (True, {"status": "ok"})


def test_probes_are_judged_at_each_check():
    health, unreachable = Health(), ["cannot reach kafka:9092"]
    health.probes["input"] = lambda: unreachable[0]
    assert health.check(0) == (False, {"status": "unhealthy", "reasons": {"input": "cannot reach kafka:9092"}})
    unreachable[0] = None  # connected
    assert health.check(1) == (True, {"status": "ok"})


def test_deliveries_are_unhealthy_only_after_failing_longer_than_the_limit():
    health, sink = Health(unhealthy_after=60_000), Deliveries()
    health.deliveries = sink.stats
    assert health.check(1_000)[0]
    sink.figures["failures_in_row"] = 3  # the streak is first seen at 10 s
    assert health.check(10_000)[0]
    assert health.check(70_000)[0]  # failing exactly the limit: still healthy
    healthy, body = health.check(70_001)
    assert not healthy and body["reasons"]["deliveries"].startswith("deliveries failing for 60 s")
    sink.figures["failures_in_row"] = 0  # one success ends the streak
    assert health.check(70_002)[0]
    sink.figures["failures_in_row"] = 1  # a new streak counts from its own start
    assert health.check(130_002)[0]
    assert not health.check(190_003)[0]


def test_deliveries_failing_since_from_the_sink_is_used_as_is():
    health, sink = Health(unhealthy_after=1_000), Deliveries()
    health.deliveries = sink.stats
    sink.figures.update(failures_in_row=9, failing_since=5_000)
    assert health.check(6_000)[0]
    assert not health.check(6_001)[0]


def _small_disk() -> None:
    """A full disk for this process only: files may not grow past 300 kB. (A read-only
    directory would not do: SQLite writes through files it already holds open, and tests
    may run as root.) The hard limit stays open, so the test can lift it again."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.RLIM_INFINITY))


def _fill_until_unhealthy(process, port) -> dict:
    assert get(port, "/healthz") == (200, b'{"status":"ok"}\n')
    padding = "x" * 5000
    for number in range(200):  # open orders with big events: the state outgrows the disk
        line = orjson.dumps({"userId": f"u{number}", "type": "create", "ts": 2000, "pad": padding})
        process.stdin.write(line + b"\n")
        process.stdin.flush()
        if number % 10 == 0 and get(port, "/healthz")[0] == 503:
            break
    _, body = wait_for(lambda: (answer := get(port, "/healthz"))[0] == 503 and answer,
                       what="/healthz to turn 503", process=process)
    return orjson.loads(body)["reasons"]


def test_healthz_is_503_while_the_state_file_cannot_be_written(tmp_path):
    port, state = free_port(), tmp_path / "orders.db"
    process = start_monitored(
        ["--within", "1h", "--state", str(state), "--checkpoint-every", "10ms"], port, preexec_fn=_small_disk
    )
    reasons = _fill_until_unhealthy(process, port)
    assert list(reasons) == ["state"] and reasons["state"].startswith(f"cannot write state file {state}")

    # Space is freed: the next checkpoint succeeds, and the run is healthy again.
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    # No further input: the failed checkpoint is retried on its own.
    wait_for(lambda: get(port, "/healthz")[0] == 200, what="/healthz to recover", process=process)
    _, err = process.communicate(b"", timeout=30)
    assert process.returncode == 0, err
    assert err.count(b"cannot write state file") == 1  # warned once per failure streak
    assert b"state file written again" in err


def test_a_run_stopped_while_its_state_cannot_be_written_exits_1(tmp_path):
    port, state = free_port(), tmp_path / "orders.db"
    process = start_monitored(
        ["--within", "1h", "--state", str(state), "--checkpoint-every", "10ms"], port, preexec_fn=_small_disk
    )
    _fill_until_unhealthy(process, port)
    process.send_signal(signal.SIGTERM)  # the checkpoint at the stop fails too
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.decode().splitlines()[-1].startswith(f"Error: cannot write state file {state}")
    assert b"Traceback" not in err


def test_healthz_is_503_once_the_input_fails(tmp_path):
    """Through the library: a real reader fails (a directory where a file was), the run's
    monitor serves /healthz on 127.0.0.1 and says why until the run winds down."""
    directory = tmp_path / "events"
    directory.mkdir()
    health = Health()
    monitor = Monitor(Log(io.StringIO()), health, ("127.0.0.1", free_port()))

    async def scenario():
        from ordertimeout.observe import metrics
        from ordertimeout.observe.histogram import Buckets
        from ordertimeout.observe.metrics_server import MetricsServer

        collector = metrics.RunCollector(lambda: {}, [], 1000, Buckets([]), health, lambda: 0)
        server = MetricsServer(*monitor.address, metrics.registry(collector), health, lambda: 0)
        await server.start()
        try:
            reader = monitor.watch_input(ChunkReader([Input(str(directory), path=str(directory))]))
            reader.start()
            try:
                await reader.get()
            except SourceError as error:
                failure = str(error)
            finally:
                reader.stop()
            return failure, await asyncio.to_thread(get, monitor.address[1], "/healthz")
        finally:
            await server.stop()

    failure, (status, body) = asyncio.run(scenario())
    assert failure == f"cannot read {directory}: Is a directory"
    assert status == 503 and orjson.loads(body) == {"status": "unhealthy", "reasons": {"input": failure}}


def test_a_failed_input_with_metrics_on_is_a_clean_error(tmp_path):
    port, followed = free_port(), tmp_path / "shop.log"
    followed.write_bytes(event("u", "create", 1000) + b"\n")
    process = start_monitored(["--follow", str(followed)], port)
    followed.rename(tmp_path / "shop.log.1")
    followed.mkdir()  # rotated into a directory: the next read fails
    _, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert err.decode().splitlines()[-1] == f"Error: cannot read {followed}: Is a directory"


def test_healthz_is_503_while_deliveries_fail_longer_than_unhealthy_after(tmp_path):
    """A real webhook receiver answers 503, then recovers; /metrics' delivery figures
    equal --stats' at the end."""
    from .webhook_receiver import Receiver

    receiver = Receiver(secret=None)
    down = [True]
    receiver.answer = lambda number, body: (503, {}, 0.0) if down[0] else (200, {}, 0.0)
    receiver.accept()
    port, stats_path = free_port(), tmp_path / "stats.json"
    try:
        process = start_monitored(
            ["--within", "1s", "--webhook", receiver.url, "--unhealthy-after", "1s", "--stats", str(stats_path)], port
        )
        process.stdin.write(event("a", "create", 1000) + b"\n" + event("b", "create", 5000) + b"\n")
        process.stdin.flush()  # a times out: its delivery fails, again and again
        _, body = wait_for(lambda: (answer := get(port, "/healthz"))[0] == 503 and answer,
                           what="/healthz to turn 503", process=process)
        reason = orjson.loads(body)["reasons"]["deliveries"]
        assert reason.startswith("deliveries failing for ") and "failed attempts in a row" in reason
        assert scrape(port)["ordertimeout_delivery_failures_in_row"] >= 1
        down[0] = False  # the endpoint is back: the next retry succeeds
        wait_for(lambda: get(port, "/healthz")[0] == 200, what="/healthz to recover", process=process)
        metrics = scrape(port)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    finally:
        receiver.close()
    deliveries = orjson.loads(stats_path.read_bytes())["deliveries"]
    assert deliveries["delivered"] == 1 and deliveries["retried"] >= 1
    for outcome in ("delivered", "retried", "dead"):
        assert metrics[f'ordertimeout_deliveries_total{{outcome="{outcome}"}}'] == deliveries[outcome]
    assert metrics["ordertimeout_outbox_pending"] == deliveries["pending"] == 0
    assert metrics["ordertimeout_dead_letters"] == deliveries["dead_letters"] == 0
    assert metrics["ordertimeout_delivery_failures_in_row"] == deliveries["failures_in_row"] == 0

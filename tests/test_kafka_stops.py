"""`ordertimeout kafka` stopped while its stdout reader stalls: no line cut, and what is
committed was shown (the tansu broker of tests/test_kafka.py, real processes, a real small
pipe, real signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time

import orjson

from .helpers import COMMAND
from .kafka_cluster import Cluster, bootstrap  # noqa: F401 (the broker fixture)
from .kafka_cluster import traffic as _traffic
from .kafka_cluster import with_closing_events as _with_closing_events
from .stalls import assert_whole_lines, read_to_end, small_pipe, stall



def start_worker(cluster: Cluster, stdout) -> subprocess.Popen:
    # A session timeout several times the stall (the worker's loop is blocked writing
    # for well under a second; 3 s as in tests/kafka_cluster.py), so the group does not move the partition meanwhile (if
    # it did, the one worker would take it back, and the assertions hold the same). Not
    # longer: the test broker answers a join after half of it, and the second worker
    # waits out the first one's session (aiokafka leaves a group's first generation
    # without telling the broker).
    return subprocess.Popen(
        [*COMMAND, "kafka", "--bootstrap", cluster.bootstrap, "--topic", cluster.topic, "--group", cluster.group,
         "--results-topic", cluster.results_topic, "--within", "1s", "--session-timeout", "3s",
         "--checkpoint-every", "200ms", "--json", "-q"],
        stdout=stdout, stderr=subprocess.PIPE)


def watch_ids(lines: list[bytes]) -> set[str]:
    """The ids of ``ordertimeout watch``'s results on the same events: what one partition
    gives (the closing events settle every order)."""
    done = subprocess.run([*COMMAND, "watch", "--json", "-q", "--within", "1s"], input=b"\n".join(lines) + b"\n",
                          capture_output=True, check=True)
    return {orjson.loads(line)["id"] for line in done.stdout.splitlines()}


def test_a_stopped_worker_blocked_on_stdout_cuts_no_line_and_shows_what_it_commits(bootstrap):  # noqa: F811
    # SIGTERM (what systemd sends): SIGINT and SIGHUP take the same handler, see test_stops.
    signum = signal.SIGTERM
    cluster = Cluster(bootstrap)
    cluster.create(partitions=1)
    lines = _with_closing_events(_traffic(6000, seed=3, users=200))
    half = len(lines) // 2
    cluster.produce(lines[:half])
    read_end, write_end, capacity = small_pipe()
    first = start_worker(cluster, write_end)
    os.close(write_end)
    second = None
    try:
        got = stall(first, read_end, capacity)
        first.send_signal(signum)
        time.sleep(0.3)  # the handler runs while the worker is blocked writing
        assert first.poll() is None  # a first signal waits for the reader
        got += read_to_end(read_end)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 128 + signum, err
        assert b"Traceback" not in err
        shown = assert_whole_lines(bytes(got))
        produced = {result["id"] for result in cluster.results()}
        # Every result the first worker produced (and so committed past) reached stdout.
        assert {orjson.loads(line)["id"] for line in shown} == produced
        # The next worker starts where the first committed: the rest, nothing twice.
        cluster.produce(lines[half:])
        with tempfile.TemporaryFile() as rest:  # read at the end: a pipe nobody reads would stall it
            second = start_worker(cluster, rest)
            expected = watch_ids(lines)
            cluster.wait_for(lambda results: {result["id"] for result in results} >= expected, timeout=120)
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=120)
            assert second.returncode == 143, err
            rest.seek(0)
            rest_ids = [orjson.loads(line)["id"] for line in assert_whole_lines(rest.read())]
        everything = [orjson.loads(line)["id"] for line in shown] + rest_ids
        assert len(everything) == len(set(everything))  # each result shown once
        assert set(everything) == {result["id"] for result in cluster.results()} == expected
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()


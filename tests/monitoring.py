"""Test helpers for monitored runs: a watch process with --metrics-addr, scrapes."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .helpers import COMMAND


def get(port: int, path: str) -> tuple[int, bytes]:
    """``(status, body)`` of GET http://127.0.0.1:port/path (an HTTP error status too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(port: int) -> dict[str, float]:
    """One scrape of /metrics, parsed by prometheus-client: ``{'name{label="v"}': value}``."""
    status, body = get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def start_monitored(args: list[str], port: int, **popen) -> subprocess.Popen:
    """A `watch` process with --metrics-addr on ``port``, fed through a pipe; returns once
    the endpoint answers."""
    process = subprocess.Popen(
        [*COMMAND, "watch", "--json", "-q", "--metrics-addr", f"127.0.0.1:{port}", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )
    wait_for(lambda: _answers(port), what="the metrics endpoint to listen", process=process)
    return process


def _answers(port: int) -> bool:
    try:
        get(port, "/healthz")
        return True
    except OSError:
        return False


def wait_for(condition, what: str, timeout: float = 30.0, process: subprocess.Popen | None = None):
    """Poll ``condition`` until it returns something true (generous: the machine is shared)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            err = process.stderr.read() if process.stderr is not None else _output_file(process)
            raise AssertionError(f"the process ended ({process.returncode}) before {what}: {err!r}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _output_file(process: subprocess.Popen) -> bytes:
    """What a process whose stderr went to a file (see test_kafka's workers) wrote there."""
    files = getattr(process, "output_files", None)
    if not files:
        return b""
    files[1].seek(0)
    return files[1].read()

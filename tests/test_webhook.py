"""The webhook sink: Standard Webhooks signatures, and delivery to a real HTTP server on
127.0.0.1 that refuses connections, answers 503, 429 with Retry-After, slowly, 4xx (retried)
and 410 (dead at once)."""

import base64
import os
import pathlib
import select
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone

import orjson
import pytest
from click.testing import CliRunner
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ordertimeout.cli import main
from ordertimeout.notify.webhook import SecretError, check_url, parse_retry_after, parse_secret, signature

from .helpers import COMMAND, USERS, event, traffic
from .webhook_receiver import SECRET, Receiver


def test_signature_verifies_with_the_standardwebhooks_package():
    body = b'{"result":"timeout","id":"timeout:u%3A1:1000:0"}'
    timestamp = int(time.time())
    headers = {"webhook-id": "timeout:u%3A1:1000:0", "webhook-timestamp": str(timestamp),
               "webhook-signature": signature(parse_secret(SECRET), "timeout:u%3A1:1000:0", timestamp, body)}
    assert Webhook(SECRET).verify(body, headers)["result"] == "timeout"
    assert headers["webhook-signature"] == Webhook(SECRET).sign(
        "timeout:u%3A1:1000:0", datetime.fromtimestamp(timestamp, tz=timezone.utc), body.decode())
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"timeout", b"success", 1), headers)


@pytest.mark.parametrize("text", ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_not*base64!", "whsec_"])
def test_a_malformed_secret_is_refused_without_being_repeated(text):
    with pytest.raises(SecretError) as refused:
        parse_secret(text)
    assert text.removeprefix("whsec_") not in str(refused.value) or not text.removeprefix("whsec_")


def test_retry_after_in_seconds_or_as_an_http_date():
    now = 1_700_000_000_000
    assert parse_retry_after("120", now) == 120_000
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:27 GMT", now) == 7_000
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0  # in the past: now
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_plain_http_to_another_host_earns_a_warning():
    assert check_url("http://127.0.0.1:8080/hook") is None and check_url("http://localhost/hook") is None
    assert check_url("https://helpdesk.example/hook") is None
    assert "unencrypted" in check_url("http://helpdesk.example/hook")
    with pytest.raises(ValueError):
        check_url("ftp://helpdesk.example/hook")


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/hook", "http://127.0.0.1:0/hook", "http://127.0.0.1:abc/hook"])
def test_a_url_with_an_impossible_port_is_a_usage_error_at_start(url):
    # aiohttp refuses it only when an attempt is made: every result was retried until the
    # drain timeout, then lost, with exit 1.
    with pytest.raises(ValueError, match="port"):
        check_url(url)
    outcome = CliRunner().invoke(main, ["watch", "--webhook", url], input=b"", catch_exceptions=False)
    assert outcome.exit_code == 2 and "port must be a number from 1 to 65535" in outcome.stderr
    assert check_url("http://127.0.0.1:65535/hook") is None


# -- against a real server ---------------------------------------------------------------

@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def run_watch(tmp_path, args, env_extra=None, timeout=60):
    data, expected = traffic()
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    env = dict(os.environ, PYTHONPATH=os.getcwd(), **(env_extra or {}))
    process = subprocess.Popen([*COMMAND, "watch", str(path), "--json", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    return process, expected


def read_until(stream, text, timeout):
    """Read a process's pipe until ``text`` has come (or fail after ``timeout`` seconds)."""
    seen, end = b"", time.monotonic() + timeout
    while text not in seen:
        left = end - time.monotonic()
        assert left > 0 and select.select([stream], [], [], left)[0], f"{text!r} never came: {seen!r}"
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, f"{text!r} never came: {seen!r}"
        seen += chunk
    return seen


def test_delivery_through_refusals_503_429_slow_answers_and_one_410(tmp_path, receiver):
    _, expected = traffic()
    rejected = sorted(expected)[0]
    started = time.monotonic()

    others = iter(range(1_000_000))  # the requests for the other results, counted apart: the
    # rejected one may come at any place among concurrent requests
    slow = []

    def answer(_, body):
        if body["id"] == rejected:
            return 410, {}, 0
        number = next(others)
        if number < 2:
            return 503, {}, 0
        if number == 2:
            return 429, {"Retry-After": "1"}, 0
        if number == 3:
            slow.append((body["id"], time.monotonic()))
            return 200, {}, 2.0  # slower than --deliver-timeout: a failed attempt, retried
        return 200, {}, 0

    receiver.answer = answer
    process, expected = run_watch(
        tmp_path, ["--webhook", receiver.url, "--deliver-timeout", "1s", "--deliver-concurrency", "2",
                   "--probe-max", "500ms"],  # (the recovery is seen within 0.5 s, not 5 s)
        {"ORDERTIMEOUT_WEBHOOK_SECRET": SECRET})
    # Nothing listens until the run has said its deliveries fail: connections refused.
    warned = read_until(process.stderr, b"deliveries failing", timeout=30)
    receiver.accept()
    stdout, rest = process.communicate(timeout=60)
    stderr = warned + rest
    assert process.returncode == 1, stderr  # one dead letter
    assert b"deliveries failing: webhook " in warned and b": connection failed (" in warned
    assert len(stdout.splitlines()) == USERS  # stdout is not silenced by a sink
    received = receiver.snapshot()
    assert all(r.verified for r in received)
    assert all(r.webhook_id == r.body["id"] and r.body == expected[r.webhook_id] for r in received)
    assert receiver.delivered_ids() == set(expected) - {rejected}
    assert [r.status for r in received if r.webhook_id == rejected] == [410]  # gone: never retried
    assert sorted(r.status for r in received if r.status != 200) == [410, 429, 503, 503]
    attempts = {rid: sorted((r for r in received if r.webhook_id == rid), key=lambda r: r.at) for rid in expected}
    for refused in (r for r in received if r.status in (429, 503)):  # each retried, and delivered
        assert attempts[refused.webhook_id][-1].status == 200
    (limited,) = [r for r in received if r.status == 429]
    after = [r for r in attempts[limited.webhook_id] if r.at > limited.at]
    assert after[0].at - limited.at >= 0.95  # Retry-After: 1 is honoured (to the millisecond)
    ((slow_id, slow_at),) = slow
    again = [r for r in attempts[slow_id] if r.at > slow_at]  # given up at --deliver-timeout
    assert again and again[0].at - slow_at >= 0.95 and again[-1].status == 200
    text = stderr.decode()
    assert f"deliveries {USERS - 1} delivered" in text and "1 dead" in text and "0 pending" in text
    assert "1 dead letter (last: HTTP 410)" in text
    assert time.monotonic() - started < 50



def test_400_401_and_404_are_retried_until_delivered_and_dead_on_decides_what_is_dead_at_once(tmp_path, receiver):
    # A receiver in the middle of a deploy answers 404 (route not there yet), 401 (keys not
    # loaded) or 400 for a while: none of that loses a result.
    _, expected = traffic()
    first_answers = {}

    def answer(_, body):
        seen = first_answers.setdefault(body["id"], [])
        statuses = {0: 404, 1: 401, 2: 400}
        if body["id"] == sorted(expected)[-1]:
            return 422, {}, 0  # made dead at once by --dead-on 410,422
        seen.append(1)
        return (statuses[len(seen) - 1], {}, 0) if len(seen) <= 3 else (200, {}, 0)

    receiver.answer = answer
    receiver.accept()
    process, expected = run_watch(
        tmp_path, ["--webhook", receiver.url, "--probe-max", "300ms", "--dead-on", "410,422"],
        {"ORDERTIMEOUT_WEBHOOK_SECRET": SECRET})
    stdout, stderr = process.communicate(timeout=60)
    text = stderr.decode()
    assert process.returncode == 1, text  # the 422 is a dead letter
    dead = sorted(expected)[-1]
    assert receiver.delivered_ids() == set(expected) - {dead}
    statuses = {}
    for r in receiver.snapshot():
        statuses.setdefault(r.webhook_id, []).append(r.status)
    assert statuses[dead] == [422]
    assert all(statuses[rid] == [404, 401, 400, 200] for rid in expected if rid != dead)
    assert "1 dead letter (last: HTTP 422)" in text and "Traceback" not in text
    bad = CliRunner().invoke(main, ["watch", "--webhook", receiver.url, "--dead-on", "41O"], input=b"")
    assert bad.exit_code == 2 and "'41O' is not an HTTP status" in bad.stderr


def test_only_filters_what_the_webhook_gets_and_the_secret_never_shows(tmp_path, receiver):
    receiver.accept()
    stats = tmp_path / "stats.json"
    process, expected = run_watch(
        tmp_path, ["--webhook", receiver.url, "--webhook-secret", SECRET, "--only", "success", "--stats", str(stats),
                   "--verbose"])
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    wanted = {rid for rid in expected if rid.startswith("success:")}
    assert receiver.delivered_ids() == wanted and len(receiver.snapshot()) == len(wanted)
    # The typed secret was moved out of the process title before anything else: no warning due.
    assert "visible to other users" not in stderr.decode()
    assert "--webhook-secret (hidden)" in stderr.decode()  # --verbose names it, never shows it
    counters = orjson.loads(stats.read_bytes())
    assert counters["deliveries"]["delivered"] == len(wanted)
    key = SECRET.removeprefix("whsec_")
    for text in (stdout, stderr, stats.read_bytes()):
        assert key.encode() not in text and base64.b64decode(key) not in text


def test_without_a_secret_there_is_no_signature_and_errors_never_show_the_secret(tmp_path, receiver):
    receiver.secret = None
    receiver.accept()
    process, expected = run_watch(tmp_path, ["--webhook", receiver.url])
    process.communicate(timeout=60)
    assert process.returncode == 0 and receiver.delivered_ids() == set(expected)
    bad = CliRunner().invoke(main, ["simulate", "--count", "0", "--webhook", receiver.url],
                             env={"ORDERTIMEOUT_WEBHOOK_SECRET": "whsec_secret*part"})
    assert bad.exit_code == 2 and "not valid base64" in bad.stderr and "secret*part" not in bad.output


def test_an_undeliverable_result_without_state_fails_the_run(tmp_path, receiver):
    process, expected = run_watch(tmp_path, ["--webhook", receiver.url, "--drain-timeout", "500ms", "-q"])
    stdout, stderr = process.communicate(timeout=60)  # nothing ever listens
    assert process.returncode == 1
    assert f"{USERS} never delivered" in stderr.decode()


def test_plain_http_warning_and_aiohttp_only_loaded_for_webhooks(tmp_path):
    warned = CliRunner().invoke(main, ["watch", "--webhook", "http://192.0.2.1/hook"], input="")
    assert warned.exit_code == 0 and "plain http://" in warned.stderr
    probe = ("import sys; from click.testing import CliRunner; from ordertimeout.cli import main; "
             "CliRunner().invoke(main, ['watch', '--exec', 'true'], input=''); print('aiohttp' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert loaded.stdout.strip() == b"False", loaded.stderr


def test_sigterm_drains_pending_deliveries_then_exits_143(receiver):
    receiver.answer = lambda number, body: (200, {}, 0.3)  # slow: deliveries queue up
    receiver.accept()
    process = subprocess.Popen(
        [*COMMAND, "simulate", "--json", "--interval", "20ms", "--within", "30ms", "--webhook", receiver.url,
         "--deliver-concurrency", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert receiver.wait_until(lambda r: len(r.snapshot()) >= 1)
    at_signal = len(receiver.snapshot())
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    printed = {orjson.loads(line)["id"] for line in stdout.splitlines()}
    assert len(printed) > at_signal  # some were still pending at the signal
    assert receiver.delivered_ids() == printed  # everything decided before the signal was delivered
    assert f"deliveries {len(printed)} delivered, 0 retried, 0 dead, 0 pending".encode() in stderr


def test_a_typed_secret_leaves_the_process_title_at_once(tmp_path, receiver):
    """Other users read /proc/PID/cmdline (ps); the process restarts itself with the secret
    in its environment, readable by its owner only, and signs with it all the same."""
    receiver.accept()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    process = subprocess.Popen([*COMMAND, "watch", "--json", "-q", "--webhook", receiver.url,
                                "--webhook-secret=" + SECRET], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    key = SECRET.removeprefix("whsec_").encode()
    try:
        deadline = time.monotonic() + 20
        while True:
            title = pathlib.Path(f"/proc/{process.pid}/cmdline").read_bytes()
            if key not in title and b"ordertimeout" in title:
                break
            assert time.monotonic() < deadline, "the secret stayed in the process title"
            time.sleep(0.02)
        assert b"--webhook" in title and process.poll() is None
        process.stdin.write(event("u1", "create", 0) + b"\n")
    finally:
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert key not in stdout + stderr
    (delivered,) = receiver.snapshot()
    assert delivered.verified and delivered.body["id"] == "timeout:u1:0:0"

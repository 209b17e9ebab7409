"""The exec sink: a shell command per result, JSON on stdin, the result in its environment."""

import os
import subprocess

import orjson

from .helpers import COMMAND, SCRIPT, event, traffic


def run(tmp_path, args, fails=0, extra_env=None):
    data, expected = traffic()
    events = tmp_path / "events.jsonl"
    events.write_bytes(data)
    script = tmp_path / "deliver.sh"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.getcwd(), OUT=str(out), FAILS=str(fails), **(extra_env or {}))
    done = subprocess.run([*COMMAND, "watch", str(events), "-q", "--exec", f"sh {script}", *args],
                          capture_output=True, env=env, timeout=60)
    return done, expected, out


def test_each_result_runs_the_command_with_its_json_and_environment(tmp_path):
    done, expected, out = run(tmp_path, [], extra_env={"ORDERTIMEOUT_WEBHOOK_SECRET": "whsec_c2VjcmV0c2VjcmV0"})
    assert done.returncode == 0, done.stderr
    bodies = [orjson.loads(line) for line in (out / "bodies").read_bytes().splitlines()]
    assert sorted(body["id"] for body in bodies) == sorted(expected)
    assert all(body == expected[body["id"]] for body in bodies)
    rows = sorted(line.split() for line in (out / "env").read_text().splitlines())
    assert rows == sorted([rid, rid.split(":")[0], expected[rid]["key"], "nosecret"] for rid in expected)


def test_failing_first_attempts_are_retried_until_the_command_succeeds(tmp_path):
    done, expected, out = run(tmp_path, ["--probe-max", "100ms"], fails=2)
    assert done.returncode == 0, done.stderr
    assert sorted(line.split()[0] for line in (out / "env").read_text().splitlines()) == sorted(expected)
    assert all((out / f"tries-{rid}").read_text().strip() == "3" for rid in expected)


def test_a_command_that_hangs_is_killed_at_the_attempt_timeout(tmp_path):
    data, _ = traffic()
    events = tmp_path / "events.jsonl"
    events.write_bytes(data.splitlines(keepends=True)[0])  # one order: one timeout
    marker = tmp_path / "survived"
    done = subprocess.run(
        [*COMMAND, "watch", str(events), "-q", "--exec", f"sleep 1; touch {marker}", "--deliver-timeout", "200ms",
         "--drain-timeout", "1s"],
        capture_output=True, env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=60)
    assert done.returncode == 1 and b"1 never delivered" in done.stderr
    assert b"Traceback" not in done.stderr
    subprocess.run(["sleep", "1.5"])  # had any `sleep 1` survived its kill, the marker would appear by now
    assert not marker.exists()


def test_paid_late_results_are_delivered_like_the_others(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([event("u1", "create", 0), event("u1", "pay", 1500)]) + b"\n")
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "deliver.sh"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [*COMMAND, "watch", str(events), "-q", "--within", "1s", "--paid-late", "1h", "--only", "paid_late",
         "--exec", f"sh {script}"],
        capture_output=True, env=dict(os.environ, PYTHONPATH=os.getcwd(), OUT=str(out)), timeout=60)
    assert done.returncode == 0, done.stderr
    assert (out / "env").read_text().split() == ["paid_late:u1:0:0", "paid_late", "u1", "nosecret"]
    assert orjson.loads((out / "bodies").read_bytes())["paid"] == 1500


def test_stderr_says_when_deliveries_fail_recover_and_names_each_dead_letter(tmp_path):
    # A service has no status line: its log must show the failing sink as it happens.
    # Each result's first three attempts fail; the sink is probed every 100 ms at most
    # (not up to 5 s) once it is down, which is all the backoff changes here.
    done, expected, out = run(tmp_path, ["--probe-max", "100ms"], fails=3)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.decode().splitlines()
    assert sum(line.startswith("ordertimeout: deliveries failing: exec ") for line in lines) >= 1
    assert "command exited with status 7" in done.stderr.decode()
    assert any(line.startswith("ordertimeout: deliveries work again") for line in lines)
    (tmp_path / "dead").mkdir()
    done, expected, out = run(tmp_path / "dead", ["--deliver-max-age", "1ms"], fails=1000)
    assert done.returncode == 1
    dead = [line for line in done.stderr.decode().splitlines() if line.startswith("ordertimeout: dead letter: exec ")]
    assert sorted(line.split()[4].rstrip(":") for line in dead) == sorted(expected)

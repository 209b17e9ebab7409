"""`ordertimeout generate`: deterministic synthetic traffic with the promised shape."""

import pathlib
import random

import orjson
from click.testing import CliRunner

from ordertimeout.cli import main
from ordertimeout.inputs.simulator import generate_traffic

from .helpers import COMMAND


def generated(seed=1, **options):
    settings = dict(events=2000, users=50, pay_ratio=0.7, within_ms=1000, rate_per_s=500.0)
    settings.update(options)
    return [orjson.loads(line) for line in generate_traffic(random.Random(seed), **settings)]


def test_same_seed_same_bytes_other_seed_other_bytes():
    args = ["generate", "--events", "500", "--users", "20", "--seed", "42"]
    first, second = CliRunner().invoke(main, args).stdout, CliRunner().invoke(main, args).stdout
    assert first == second and first.count("\n") == 500
    assert CliRunner().invoke(main, [*args[:-1], "43"]).stdout != first


def test_shape_of_the_traffic():
    events = generated()
    assert len(events) == 2000
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)  # in time order
    assert len({e["userId"] for e in events}) <= 50
    creates = {e["orderId"]: e for e in events if e["type"] == "create"}
    pays = [e for e in events if e["type"] == "pay"]
    assert 0.6 < len(pays) / len(creates) < 0.8  # the pay ratio
    delays = [p["ts"] - creates[p["orderId"]]["ts"] for p in pays if p["orderId"] in creates]
    assert min(delays) >= 1 and max(delays) <= 1500
    assert 0.2 < sum(d >= 1000 for d in delays) / len(delays) < 0.5  # some pay too late
    assert all(set(e) == {"userId", "type", "orderId", "amount", "ts"} for e in events)


def test_disorder_is_bounded():
    events = generated(disorder_ms=200)
    times = [e["ts"] for e in events]
    assert times != sorted(times)
    largest = float("-inf")
    for time in times:
        assert time >= largest - 200  # never more than the bound behind a later-stamped event
        largest = max(largest, time)


def test_disordered_traffic_within_lateness_has_no_late_events(tmp_path):
    path = tmp_path / "d.jsonl"
    CliRunner().invoke(main, ["generate", "--events", "3000", "--disorder", "300ms", "-o", str(path)])
    stats = tmp_path / "s.json"
    CliRunner().invoke(main, ["watch", str(path), "--lateness", "300ms", "--json", "--stats", str(stats), "-q"])
    figures = orjson.loads(stats.read_bytes())
    assert figures["late"] == 0 and figures["events"] == 3000
    assert figures["creates"] == figures["success"] + figures["timeout"]


def test_generate_to_a_full_disk_or_a_closed_pipe_ends_cleanly():
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent.parent)}
    command = [*COMMAND, "generate", "--events", "200000"]
    for args, name in (([], "stdout"), (["-o", "/dev/full"], "/dev/full")):
        with open("/dev/full", "wb") as full:
            process = subprocess.run([*command, *args], stdout=full, stderr=subprocess.PIPE, env=env, timeout=60)
        assert process.returncode == 1
        assert process.stderr.decode().splitlines() == [f"Error: cannot write {name}: No space left on device"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    process.stdout.readline()
    process.stdout.close()  # what `| head -1` does
    _, err = process.communicate(timeout=60)
    assert process.returncode == 141 and err == b""

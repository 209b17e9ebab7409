"""A new user's usual mistakes get one clear hint on stderr naming the fix (inputs.hints,
inputs.unusable), through the command line; right input gets none."""

import pathlib
import random
import shutil
import subprocess

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st

from ordertimeout.cli import main
from ordertimeout.inputs.hints import late_hint, unit_hint

from .helpers import event

BASE = 1_795_000_000_000  # 2026-11-18 in epoch ms


def invoke(args, input=None):
    return CliRunner().invoke(main, args, input=input, catch_exceptions=False)


def write(path, objects):
    path.write_bytes(b"".join(orjson.dumps(obj) + b"\n" for obj in objects))
    return str(path)


def hints(stderr, words):
    return [line for line in stderr.splitlines() if words in line]


# -- a misnamed time field -----------------------------------------------------------


def test_a_misnamed_time_field_warns_once_naming_the_fields_that_look_like_times(tmp_path):
    path = write(tmp_path / "e.jsonl", [
        {"userId": "u1", "type": "create", "timestamp": "2026-11-23T10:00:00Z", "amount": 3},
        {"userId": "u1", "type": "pay", "timestamp": "2026-11-23T10:00:00.5Z"},
    ])
    outcome = invoke(["watch", path, "--within", "10ms"])
    assert outcome.exit_code == 0
    (hint,) = hints(outcome.stderr, "matching by arrival time")
    assert hint == ("ordertimeout: no 'ts' field in the first event: matching by arrival time; use --time-field NAME "
                    "(fields that look like times: timestamp), or --processing-time to say this is meant")
    # The fix it names works: event time, the pay 500 ms after the create.
    fixed = invoke(["watch", path, "--within", "1s", "--time-field", "timestamp", "--json"])
    assert "arrival time" not in fixed.stderr
    assert [orjson.loads(line)["paid"] - orjson.loads(line)["created"] for line in fixed.stdout.splitlines()] == [500]


def test_a_finished_stdin_in_processing_time_warns_too_and_the_hint_comes_before_the_wait():
    lines = orjson.dumps({"userId": "u1", "type": "create", "created_at": BASE, "meta": {"when": "x"}}) + b"\n"
    outcome = invoke(["watch", "--within", "10ms"], input=lines)
    (hint,) = hints(outcome.stderr, "matching by arrival time")
    assert "(fields that look like times: created_at, meta.when)" in hint
    # The hint is written when the input ends, before the timeout that came after the wait.
    assert outcome.stderr.index("arrival time") < outcome.stderr.index("1 timeout")


def test_the_hint_comes_before_the_wait_for_the_last_deadline(tmp_path):
    import os
    import signal
    import sys

    path = write(tmp_path / "e.jsonl", [{"userId": "u1", "type": "create", "timestamp": "2026-11-23T10:00:00Z"}])
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).parent.parent)}
    process = subprocess.Popen([sys.executable, "-m", "ordertimeout", "watch", path, "--within", "1h"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        first = process.stderr.readline().decode()
        assert "matching by arrival time" in first
        assert process.poll() is None  # still waiting an hour for the order's deadline
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 130


def test_processing_time_asked_for_or_event_time_gives_no_hint(tmp_path):
    path = write(tmp_path / "e.jsonl", [{"userId": "u1", "type": "create"}])
    assert "arrival time" not in invoke(["watch", path, "--within", "10ms", "--processing-time"]).stderr
    timed = write(tmp_path / "t.jsonl", [{"userId": "u1", "type": "create", "ts": 5}])
    assert "arrival time" not in invoke(["watch", timed, "--within", "10ms"]).stderr


# -- many late events -----------------------------------------------------------------


def disordered(count, disorder_ms, seed=7):
    """``count`` orders paid 50 ms after their create, each line arriving up to
    ``disorder_ms`` after its time."""
    rng = random.Random(seed)
    arrivals = []
    for order in range(count):
        created = BASE + order * 100
        arrivals.append((created + rng.randint(0, disorder_ms), event(f"u{order}", "create", created)))
        arrivals.append((created + 50 + rng.randint(0, disorder_ms), event(f"u{order}", "pay", created + 50)))
    arrivals.sort(key=lambda arrival: arrival[0])
    return b"".join(line + b"\n" for _, line in arrivals)


def test_many_late_events_say_how_late_and_the_lateness_that_keeps_them(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_bytes(disordered(500, 200))
    outcome = invoke(["watch", str(path), "--json"])
    (hint,) = hints(outcome.stderr, "of events were late")
    stats = outcome.stderr.splitlines()[-2]
    late = int(stats.split(" late")[0].rsplit(" ", 1)[1].replace(",", ""))
    share, rest = hint.removeprefix("ordertimeout: ").split("% of events were late by up to ")
    assert int(share) == late * 100 // 1000
    suggested = rest.split("try --lateness ")[1]
    # Taking the advice keeps every event: no late one, every order a success.
    fixed = invoke(["watch", str(path), "--json", "--lateness", suggested])
    assert "0 late" in fixed.stderr and "of events were late" not in fixed.stderr
    assert len(fixed.stdout.splitlines()) == 500
    assert {orjson.loads(line)["result"] for line in fixed.stdout.splitlines()} == {"success"}


def test_late_warnings_print_times_as_the_rows_do(tmp_path):
    path = write(tmp_path / "e.jsonl", [{"userId": "u", "type": "create", "ts": "2026-11-23T10:00:01Z"},
                                        {"userId": "u", "type": "pay", "ts": "2026-11-23T10:00:00.250Z"}])
    outcome = invoke(["watch", path])
    assert ("line 2: late: time 2026-11-23T10:00:00.250Z is at or before the watermark 2026-11-23T10:00:00.999Z"
            in outcome.stderr)


@given(st.integers(-62_135_596_800_000, 253_402_300_799_999))
def test_a_moment_in_a_late_warning_reads_as_in_a_row(epoch_ms):
    from ordertimeout.outputs.rows import format_time
    from ordertimeout.rules.durations import format_instant

    assert format_instant(epoch_ms) == format_time(epoch_ms)


def test_a_few_late_events_or_none_give_no_lateness_hint():
    assert late_hint(events=1000, late=9, late_by=100, lateness=0, idle=None) is None
    assert late_hint(events=1000, late=0, late_by=0, lateness=0, idle=None) is None
    assert late_hint(events=1000, late=10, late_by=198, lateness=0, idle=None) == (
        "1% of events were late by up to 198ms: try --lateness 200ms")
    assert late_hint(events=2000, late=1861, late_by=1861, lateness=0, idle=None).endswith("try --lateness 2s")


@given(st.integers(1, 10**12), st.integers(0, 10**6))
def test_the_suggested_lateness_keeps_every_late_event_and_is_close(late_by, lateness):
    hint = late_hint(events=10, late=10, late_by=late_by + lateness, lateness=lateness, idle=None)
    from ordertimeout.rules.durations import parse_duration

    suggested = parse_duration(hint.split("try --lateness ")[1])
    assert late_by + lateness <= suggested < 2 * (late_by + lateness)


# -- numeric times in another unit ----------------------------------------------------


def test_epoch_seconds_read_as_milliseconds_warn_naming_time_unit(tmp_path):
    path = write(tmp_path / "e.jsonl", [{"userId": "u", "type": "create", "ts": 1_795_000_000},
                                        {"userId": "u", "type": "pay", "ts": 1_795_000_001}])
    outcome = invoke(["watch", path])
    (hint,) = hints(outcome.stderr, "--time-unit")
    assert hint == ("ordertimeout: times like 1795000000 read as milliseconds are in 1970; as seconds they are "
                    "recent: try --time-unit s")
    fixed = invoke(["watch", path, "--time-unit", "s", "-q"])
    assert fixed.stderr == "" and fixed.stdout.startswith("2026-11-18T")


@pytest.mark.parametrize(("ts", "unit"), [(BASE * 1000, "us"), (BASE * 1_000_000, "ns")])
def test_micro_and_nanoseconds_read_as_milliseconds_name_their_unit(tmp_path, ts, unit):
    path = write(tmp_path / "e.jsonl", [{"userId": "u", "type": "create", "ts": ts}])
    outcome = invoke(["watch", path])
    assert outcome.exit_code == 1
    assert outcome.stderr.splitlines()[-1].endswith(f"try --time-unit {unit}")
    assert invoke(["watch", path, "--time-unit", unit, "-q"]).stdout.startswith("2026-11-18T")


def test_milliseconds_with_the_wrong_unit_and_times_of_the_tests_give_no_false_hint():
    assert unit_hint(BASE, "ms") is None
    assert unit_hint(1500, "ms") is None  # small test times fit no unit: no hint
    assert unit_hint(BASE, "s").endswith("try --time-unit ms")
    assert unit_hint(True, "ms") is None and unit_hint("1795000000", "ms") is None


# -- not JSON Lines -------------------------------------------------------------------


def test_a_json_array_says_json_lines_and_the_jq_that_converts_it(tmp_path):
    objects = [{"userId": "u1", "type": "create", "ts": 1}, {"userId": "u1", "type": "pay", "ts": 2}]
    for name, text in (("one.json", orjson.dumps(objects)), ("pretty.json", orjson.dumps(objects, option=orjson.OPT_INDENT_2))):
        path = tmp_path / name
        path.write_bytes(text + b"\n")
        outcome = invoke(["watch", str(path)])
        assert outcome.exit_code == 1
        error = outcome.stderr.splitlines()[-1]
        assert "expects JSON Lines: one object per line" in error
        assert error.endswith(f"convert it: jq -c '.[]' {path} | ordertimeout watch")
        if shutil.which("jq"):  # and that conversion works as written
            converted = subprocess.run(["jq", "-c", ".[]", str(path)], capture_output=True, check=True).stdout
            assert invoke(["watch", "--json", "-q"], input=converted).stdout.count("\"result\":\"success\"") == 1


def test_an_array_longer_than_a_line_may_be_is_named_too(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(orjson.dumps([{"userId": f"u{n}", "type": "create", "ts": n} for n in range(20)]))
    outcome = invoke(["watch", str(path), "--max-line-bytes", "100"])  # rejected unread: only its start is kept
    assert outcome.exit_code == 1
    assert "line longer than 100 bytes" in outcome.stderr
    assert outcome.stderr.splitlines()[-1].endswith(f"convert it: jq -c '.[]' {path} | ordertimeout watch")


def test_pretty_printed_objects_and_csv_say_json_lines(tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(orjson.dumps({"userId": "u1", "type": "create", "ts": 1}, option=orjson.OPT_INDENT_2))
    error = invoke(["watch", str(pretty)]).stderr.splitlines()[-1]
    assert "pretty-printed JSON; ordertimeout expects JSON Lines: one object per line" in error
    assert error.endswith(f"jq -c . {pretty} | ordertimeout watch")
    outcome = invoke(["watch"], input="userId,type,ts\nu1,create,1\n")
    assert outcome.exit_code == 1
    assert outcome.stderr.splitlines()[-1].endswith("looks like CSV or other text; ordertimeout expects JSON Lines: "
                                                    "one object per line")


def test_right_input_gets_no_hint(tmp_path):
    outcome = invoke(["watch", "sample_data/orders.jsonl", "--within", "15m"])
    assert outcome.exit_code == 0
    assert [line for line in outcome.stderr.splitlines() if not line.startswith("ordertimeout: 13 events")
            and "pay latency" not in line] == []


def test_a_state_run_hints_from_its_own_events_only(tmp_path):
    path, state = tmp_path / "e.jsonl", tmp_path / "state.db"
    path.write_bytes(disordered(100, 200))
    first = invoke(["watch", str(path), "--json", "--state", str(state)])
    assert len(hints(first.stderr, "of events were late")) == 1
    more = write(tmp_path / "more.jsonl", [{"userId": "z", "type": "create", "ts": BASE + 60_000}])
    second = invoke(["watch", more, "--json", "--state", str(state)])
    assert "late" in second.stderr.splitlines()[-1]  # the counters go on from the first run...
    assert hints(second.stderr, "of events were late") == []  # ...but this run had no late event

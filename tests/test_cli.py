"""The command line through CliRunner: stdout and stderr checked apart."""

import gzip
import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import orjson
import pytest
from click.testing import CliRunner

from ordertimeout.cli import main
from ordertimeout.cli.options import option_group

from .helpers import COMMAND, EXPECTED, event, obeying_file_permissions

ROOT = pathlib.Path(__file__).parent.parent
SAMPLE = ROOT / "sample_data" / "orders.jsonl"
SAMPLE_EXPECTED = ROOT / "sample_data" / "orders.expected.jsonl"


def invoke(args, input=None):
    return CliRunner().invoke(main, args, input=input, catch_exceptions=False)


def json_lines(text):
    return [orjson.loads(line) for line in text.splitlines()]


def test_sample_data_gives_its_expected_output():
    outcome = invoke(["watch", str(SAMPLE), "--within", "15m", "--json"])
    assert outcome.exit_code == 0
    assert outcome.stdout == SAMPLE_EXPECTED.read_text()
    assert "3 successes, 4 timeouts" in outcome.stderr


def test_original_fields_reach_the_consumer():
    results = json_lines(invoke(["watch", str(SAMPLE), "--within", "15m", "--json", "-q"]).stdout)
    success = results[0]
    assert success["create"]["orderId"] == "o-1002" and success["pay"]["amount"] == 29.0
    assert list(success) == ["result", "id", "key", "created", "paid", "deadline", "create", "pay"]
    assert list(results[1]) == ["result", "id", "key", "created", "deadline", "create"]


def test_stdin_is_read_when_no_file_or_dash():
    data = SAMPLE.read_bytes()
    for args in (["watch"], ["watch", "-"]):
        outcome = invoke([*args, "--within", "15m", "--json", "-q"], input=data)
        assert outcome.stdout == SAMPLE_EXPECTED.read_text()


def test_human_rows_are_aligned_and_uncoloured_when_not_a_terminal():
    outcome = invoke(["watch", str(SAMPLE), "--within", "15m", "-q"])
    rows = outcome.stdout.splitlines()
    assert len(rows) == 7
    assert "\x1b[" not in outcome.stdout
    assert rows[0].split() == ["2026-11-23T10:03:10.412Z", "success", "u2", "paid", "after", "1m40.412s",
                               "orderId=o-1002", "amount=29.0"]
    assert rows[1].split()[1:] == ["timeout", "u1", "no", "pay", "within", "15m", "orderId=o-1001", "amount=49.9"]
    assert len({row.index(" u") for row in rows}) == 1  # the key column lines up
    assert len({row.index("orderId=") for row in rows}) == 1  # and so do the order's fields


def test_only_prints_one_kind_but_stats_count_both(tmp_path):
    stats_path = tmp_path / "stats.json"
    outcome = invoke(["watch", str(SAMPLE), "--within", "15m", "--json", "--only", "timeout", "--stats", str(stats_path), "-q"])
    assert {r["result"] for r in json_lines(outcome.stdout)} == {"timeout"}
    stats = orjson.loads(stats_path.read_bytes())
    assert (stats["success"], stats["timeout"]) == (3, 4)
    for name in ("events", "creates", "pays", "other", "success", "timeout", "late", "rejected",
                 "unmatched_pays", "discarded", "pending", "time_mode", "elapsed_s"):
        assert name in stats
    assert (stats["events"], stats["creates"], stats["pays"], stats["other"]) == (13, 7, 5, 1)
    assert stats["unmatched_pays"] == 2 and stats["time_mode"] == "event"


def test_quiet_silences_the_summary():
    assert invoke(["watch", str(SAMPLE), "--json", "-q"]).stderr == ""
    assert "ordertimeout: 13 events" in invoke(["watch", str(SAMPLE), "--json"]).stderr


BAD_LINES = [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe garbage", "not valid UTF-8"),
    (b"[1,2,3]", "not a JSON object"),
    (b'{"type":"create","ts":5}', "no key field 'userId'"),
    (b'{"userId":[1],"type":"create","ts":5}', "not a string or number"),
    (b'{"userId":"9","ts":5}', "no type field 'type'"),
    (b'{"userId":"9","type":"create"}', "no time field 'ts'"),
    (b'{"userId":"9","type":"create","ts":"soon"}', "not ISO-8601"),
]


def test_bad_lines_are_reported_counted_and_skipped(tmp_path):
    good = [event("1", "create", 1000), event("1", "pay", 1500), event("2", "create", 1600)]
    lines = [good[0]] + [bad for bad, _ in BAD_LINES] + [b"", b"   ", good[1], good[2]]
    rejects = tmp_path / "rejects.jsonl"
    outcome = invoke(["watch", "--json", "--rejects", str(rejects), "--stats", str(tmp_path / "s.json")],
                     input=b"\n".join(lines) + b"\n")
    assert outcome.exit_code == 0
    assert [r["result"] for r in json_lines(outcome.stdout)] == ["success", "timeout"]
    warnings = [line for line in outcome.stderr.splitlines() if line.startswith("ordertimeout: line")]
    assert len(warnings) == len(BAD_LINES)
    for number, (warning, (_, reason)) in enumerate(zip(warnings, BAD_LINES, strict=True), start=2):
        assert warning.startswith(f"ordertimeout: line {number}: ") and reason in warning
    records = json_lines(rejects.read_text())
    assert [r["line"] for r in records] == list(range(2, 2 + len(BAD_LINES)))
    assert records[0]["raw"] == "{not json" and records[1]["raw"].startswith("\\xff\\xfe")
    assert orjson.loads((tmp_path / "s.json").read_bytes())["rejected"] == len(BAD_LINES)
    assert "Traceback" not in outcome.output


def test_warnings_stop_after_ten_but_counting_goes_on():
    outcome = invoke(["watch", "--json"], input=b"nope\n" * 25 + event("1", "create", 1) + b"\n")
    lines = outcome.stderr.splitlines()
    assert len(lines) == 12
    assert "further rejected lines are only counted" in lines[10]
    assert "25 rejected" in lines[11]
    assert len(json_lines(outcome.stdout)) == 1


def test_late_events_are_reported_as_rejects(tmp_path):
    rejects = tmp_path / "r.jsonl"
    data = b"\n".join([event("1", "create", 1000), event("2", "create", 2000), event("1", "pay", 1499)])
    outcome = invoke(["watch", "--json", "--lateness", "500ms", "--rejects", str(rejects)], input=data)
    assert "line 3: late: time 1970-01-01T00:00:01.499Z is at or before the watermark 1970-01-01T00:00:01.499Z" in outcome.stderr
    assert json_lines(rejects.read_text())[0]["reason"].startswith("late")
    assert [r["result"] for r in json_lines(outcome.stdout)] == ["timeout", "timeout"]


def test_strict_stops_at_the_first_bad_line_after_writing_what_was_decided():
    data = b"\n".join([event("1", "create", 1000), event("1", "pay", 1100), b"oops", event("2", "create", 5000)])
    outcome = invoke(["watch", "--json", "--strict"], input=data)
    assert outcome.exit_code == 1
    assert [r["result"] for r in json_lines(outcome.stdout)] == ["success"]
    assert outcome.stderr.splitlines()[0].startswith("ordertimeout: line 3: not valid JSON")


def test_multiple_files_name_the_file_in_warnings(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(event("1", "create", 1000) + b"\n")
    second.write_bytes(b"bad\n" + event("1", "pay", 1200))  # no final newline
    outcome = invoke(["watch", str(first), str(second), "--json"])
    assert f"ordertimeout: {second}:1: not valid JSON" in outcome.stderr
    assert [r["result"] for r in json_lines(outcome.stdout)] == ["success"]


def test_unknown_file_is_an_error_with_exit_1():
    outcome = invoke(["watch", "no/such/file.jsonl"])
    assert outcome.exit_code == 1
    assert outcome.stderr.startswith("Error: cannot open no/such/file.jsonl: No such file or directory")
    assert outcome.stdout == ""


@pytest.mark.parametrize(("option", "value"), [
    (option, value) for option in ("--within", "--lateness", "--interval") for value in ("0", "-1s", "soon", "1.5us")
    if (option, value) != ("--lateness", "0")  # zero lateness is the default and valid: below
])
def test_bad_durations_are_usage_errors(option, value):
    command = "simulate" if option == "--interval" else "watch"
    outcome = invoke([command, option, value], input=b"")
    assert outcome.exit_code == 2
    assert option in outcome.stderr and repr(value) in outcome.stderr


def test_zero_lateness_is_accepted():
    outcome = invoke(["watch", "--lateness", "0", "--json"], input=event("1", "create", 5) + b"\n")
    assert outcome.exit_code == 0, outcome.stderr
    assert [r["result"] for r in json_lines(outcome.stdout)] == ["timeout"]


@pytest.mark.parametrize("types", [
    ["--create-type", "pay"], ["--pay-type", "create"], ["--cancel-type", "pay"], ["--cancel-type", "create"],
    ["--create-type", "order", "--cancel-type", "order"],
])
@pytest.mark.parametrize("command", [["watch", str(SAMPLE)], ["kafka", "--bootstrap", "127.0.0.1:9", "--topic", "t", "--group", "g", "--results-topic", "r"]])
def test_one_type_value_for_two_kinds_is_a_usage_error(types, command):
    # Else every pay would be read as a create (or a cancel): no result, or the wrong
    # kind, and exit 0. The kafka command refuses it before it looks for a broker.
    outcome = invoke([*command, *types])
    assert outcome.exit_code == 2
    assert "each type needs its own value" in outcome.stderr
    assert outcome.stdout == ""


@pytest.mark.parametrize("options", [["--create-type", "created"], ["--type-field", "userId"]])
def test_a_run_whose_events_open_no_order_says_what_to_check(options):
    """A mistyped type value looks like a quiet shop (no result, exit 0): a warning says so."""
    outcome = invoke(["watch", str(SAMPLE), "-q", *options])
    assert outcome.exit_code == 0 and outcome.stdout == ""
    assert "no event was a create: none of 13 events had type" in outcome.stderr
    assert "see --create-type and --type-field" in outcome.stderr
    assert "no event was a create" not in invoke(["watch", str(SAMPLE), "-q"]).stderr


def test_processing_time_forced_and_custom_fields():
    data = b"\n".join([
        b'{"order":{"user":7},"event":"created","ts":1}',
        b'{"order":{"user":"7"},"event":"paid","ts":999999}',
    ])
    outcome = invoke(["watch", "--processing-time", "--key", "order.user", "--type-field", "event",
                      "--create-type", "created", "--pay-type", "paid", "--within", "50ms", "--json"], input=data)
    (result,) = json_lines(outcome.stdout)
    assert result["result"] == "success" and result["key"] == "7"
    assert "processing time" in outcome.stderr


def test_processing_time_without_time_field_times_out_after_the_window():
    outcome = invoke(["watch", "--within", "30ms", "--json"], input=b'{"userId":"1","type":"create"}\n')
    (result,) = json_lines(outcome.stdout)
    assert result["result"] == "timeout" and result["deadline"] - result["created"] == 30


def test_time_unit_and_iso_times():
    data = b"\n".join([event("1", "create", 10), event("1", "pay", 10.9)])
    (result,) = json_lines(invoke(["watch", "--time-unit", "s", "--json"], input=data).stdout)
    assert (result["created"], result["paid"]) == (10_000, 10_900)


def test_simulate_reproduces_the_cycle_scaled_by_one_fiftieth():
    outcome = invoke(["simulate", "--count", "30", "--interval", "20ms", "--within", "30ms", "--json"])
    assert outcome.exit_code == 0
    results = json_lines(outcome.stdout)
    assert sum(r["result"] == "success" and r["key"] == "2" for r in results) == 10
    assert sum(r["result"] == "timeout" and r["key"] == "1" for r in results) == 10
    start = results[0]["created"]
    expected = json_lines((EXPECTED / "a_cycle__each__within1500.jsonl").read_text())
    for got, want in zip(results, expected, strict=True):
        assert got["result"] == want["result"] and got["key"] == want["key"]
        for name in ("created", "paid", "deadline"):
            if name in want:
                assert got[name] - start == (want[name] - 1000) // 50
        assert got["create"] == {"userId": got["key"], "type": "create", "ts": got["created"]}


def test_every_option_has_help_and_a_group_and_every_command_worked_examples():
    for name, command in main.commands.items():
        help_text = invoke([name, "--help"]).stdout
        assert "Examples:" in help_text, name
        assert "Other options:\n  -h, --help" in help_text  # nothing but --help is ungrouped
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts}"
                assert option_group(param) is not None, f"{name} {param.opts} belongs to no help group"
                assert "Example:" not in param.help, f"{name} {param.opts}: examples go in the epilog"
    assert "ordertimeout, version" in invoke(["--version"]).stdout


# -- honest exits and errors --------------------------------------------------------


def test_a_missing_and_an_unreadable_input_exit_the_same_way(tmp_path):
    unreadable = tmp_path / "locked.jsonl"
    unreadable.write_bytes(event("1", "create", 1) + b"\n")
    unreadable.chmod(0)
    # A real process that file permissions apply to, even when the suite runs as root (CI).
    locked = subprocess.run([*COMMAND, "watch", str(unreadable)], capture_output=True, timeout=60,
                            preexec_fn=obeying_file_permissions)
    outcomes = {
        "missing": invoke(["watch", str(tmp_path / "missing.jsonl")]),
        "a directory": invoke(["watch", str(tmp_path)]),
        "unreadable": SimpleNamespace(exit_code=locked.returncode, stdout=locked.stdout.decode(),
                                      stderr=locked.stderr.decode()),
    }
    if os.path.exists("/proc/self/mem"):  # opens, then every read fails (EIO): also for root
        outcomes["a read error"] = invoke(["watch", "-q", "/proc/self/mem"])
    for name, outcome in outcomes.items():
        assert outcome.exit_code == 1, name
        assert outcome.stdout == "", name
        (line,) = outcome.stderr.splitlines()
        assert line.startswith("Error: cannot "), name
    assert outcomes["missing"].stderr == f"Error: cannot open {tmp_path / 'missing.jsonl'}: No such file or directory\n"
    assert outcomes["unreadable"].stderr == f"Error: cannot open {unreadable}: Permission denied\n"


def test_usage_errors_name_the_command_as_users_type_it_also_after_the_secret_re_exec():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra in ([], ["--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]):
        outcome = subprocess.run([sys.executable, "-m", "ordertimeout", "watch", *extra, "--bogus"], env=env,
                                 capture_output=True, timeout=60)
        assert outcome.returncode == 2
        stderr = outcome.stderr.decode()
        assert stderr.startswith("Usage: ordertimeout watch [OPTIONS]"), stderr
        assert "python -m" not in stderr and "whsec_" not in stderr


def test_no_usable_line_exits_1_and_suggests_the_fields_it_found():
    lines = [
        orjson.dumps({"user_id": f"u{n}", "kind": kind, "at": f"2026-11-23T10:00:0{n}.{offset}Z"})
        for n in range(6) for kind, offset in (("create", 0), ("pay", 5))
    ] + [b"{oops"]
    outcome = invoke(["watch", "--json"], input=b"\n".join(lines) + b"\n")
    assert outcome.exit_code == 1 and outcome.stdout == ""
    assert outcome.stderr.splitlines()[-1] == (
        "Error: 13 lines, none usable: no key field 'userId' (the lines have: user_id, kind, at); "
        "try --key user_id --type-field kind --time-field at"
    )
    # and the suggestion works
    fixed = invoke(["watch", "--json", "--key", "user_id", "--type-field", "kind", "--time-field", "at"],
                   input=b"\n".join(lines) + b"\n")
    assert fixed.exit_code == 0 and [r["result"] for r in json_lines(fixed.stdout)] == ["success"] * 6


def test_some_usable_lines_or_no_lines_at_all_exit_0():
    assert invoke(["watch", "--json"], input=b"nope\n" + event("1", "create", 1) + b"\n").exit_code == 0
    assert invoke(["watch", "--json"], input=b"").exit_code == 0
    assert invoke(["watch", "--json"], input=b"\n  \n").exit_code == 0


@pytest.mark.parametrize("option", ["--stats", "--rejects"])
def test_a_dash_for_stats_or_rejects_is_a_usage_error_not_a_file_named_dash(tmp_path, monkeypatch, option):
    monkeypatch.chdir(tmp_path)
    outcome = invoke(["watch", option, "-"], input=b"")
    assert outcome.exit_code == 2 and "'-' is no file here" in outcome.stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("option", ["--stats", "--rejects"])
def test_unwritable_stats_and_rejects_paths_are_usage_errors_before_input_is_read(tmp_path, option):
    for path in (tmp_path / "no" / "such" / "dir" / "x.json", tmp_path):
        # stdin stays open and empty: a run that started reading would wait for ever
        process = subprocess.Popen([*COMMAND, "watch", option, str(path)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        try:
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 2, err
        assert out == b"" and f"cannot write {path}".encode() in err and b"Traceback" not in err


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERTIMEOUT_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}




def test_a_full_disk_for_stdout_is_one_line_and_exit_1():
    with open("/dev/full", "wb") as full:
        process = subprocess.run([*COMMAND, "watch", str(SAMPLE), "--within", "15m"], stdout=full,
                                 stderr=subprocess.PIPE, env=_env(), timeout=60)
    assert process.returncode == 1
    assert process.stderr.decode().splitlines() == [
        "Error: cannot write the results to stdout: No space left on device"
    ]


def test_a_full_disk_for_rejects_is_one_line_and_exit_1():
    process = subprocess.run([*COMMAND, "watch", "--json", "--rejects", "/dev/full"], input=b"bad\n" * 3,
                             capture_output=True, env=_env(), timeout=60)
    assert process.returncode == 1
    assert b"Traceback" not in process.stderr
    assert process.stderr.decode().splitlines()[-1] == "Error: cannot write /dev/full: No space left on device"


@pytest.mark.parametrize("ts, reason", [
    (253402300800000, "after the year 9999"),
    (-62135596800001, "before the year 1"),
    ("10000-01-01T00:00:00Z", "not ISO-8601"),
    ("0001-01-01T00:00:00+01:00", "before the year 1"),
])
def test_times_outside_years_1_to_9999_are_rejected_with_a_reason(ts, reason):
    data = orjson.dumps({"userId": "1", "type": "create", "ts": ts}) + b"\n" + event("2", "create", 5) + b"\n"
    outcome = invoke(["watch"], input=data)
    assert outcome.exit_code == 0
    assert outcome.stderr.splitlines()[0].startswith(f"ordertimeout: line 1: time field 'ts' is {reason}")


def test_a_deadline_past_the_year_9999_is_still_printed():
    last = 253402300799999  # the last millisecond of 9999
    # (stamped ahead of this machine's clock: only a replay, with --max-future off, takes it)
    outcome = invoke(["watch", "--within", "1s", "--max-future", "off"], input=event("1", "create", last) + b"\n")
    assert outcome.exit_code == 0
    assert outcome.stdout.startswith("+10000-01-01T00:00:00.999Z  timeout")


# -- summary wording ------------------------------------------------------------------


def test_summary_counts_read_as_english():
    one = invoke(["watch", "--json", "--within", "2s"], input=event("1", "create", 1000) + b"\n")
    assert one.stderr.splitlines()[0].startswith("ordertimeout: 1 event, 0 successes, 1 timeout, ")
    assert "(event time, within 2s, " in one.stderr
    nothing = invoke(["watch", "--json"], input=b"")
    assert "no events time" not in nothing.stderr and "(within 1s, " in nothing.stderr
    data = b"\n".join([event("1", "create", 1), event("1", "pay", 2), event("2", "cancel", 3)])
    cancels = invoke(["watch", "--json", "--cancel-type", "cancel"], input=data)
    assert "1 success, 0 timeouts, 1 unmatched cancel, " in cancels.stderr


# -- rows for people ------------------------------------------------------------------


def test_fields_choose_what_rows_show_with_dotted_paths():
    data = b"\n".join([
        orjson.dumps({"userId": "u1", "type": "create", "ts": 1, "order": {"id": "A-7"}, "amount": 3.5}),
        orjson.dumps({"userId": "u2", "type": "create", "ts": 2}),
    ])
    rows = invoke(["watch", "-q", "--fields", "order.id,amount,missing"], input=data).stdout.splitlines()
    assert rows[0].split()[-2:] == ["order.id=A-7", "amount=3.5"]
    assert rows[1].split()[-1] == "1s"  # u2 has none of them: nothing added
    assert "orderId" not in invoke(["watch", "-q", "--fields", ""], input=SAMPLE.read_bytes()).stdout


def test_local_time_shows_the_offset_and_utc_is_the_default():
    data = event("1", "create", 1_764_000_000_000) + b"\n"
    env = {"TZ": "Asia/Kolkata"}
    local = subprocess.run([*COMMAND, "watch", "-q", "--local-time"], input=data, capture_output=True,
                           env=_env(**env), timeout=60)
    assert local.stdout.decode().startswith("2025-11-24T21:30:01.000+05:30  timeout")
    utc = subprocess.run([*COMMAND, "watch", "-q"], input=data, capture_output=True, env=_env(**env), timeout=60)
    assert utc.stdout.decode().startswith("2025-11-24T16:00:01.000Z  timeout")


# -- input conveniences ---------------------------------------------------------------


def test_gzip_files_are_read_as_their_lines(tmp_path):
    packed = tmp_path / "orders.jsonl.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    unnamed = tmp_path / "orders.archive"  # known by its magic bytes too
    unnamed.write_bytes(packed.read_bytes())
    for path in (packed, unnamed):
        outcome = invoke(["watch", str(path), "--within", "15m", "--json", "-q"])
        assert outcome.stdout == SAMPLE_EXPECTED.read_text()
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(packed.read_bytes()[:-20])
    outcome = invoke(["watch", str(broken), "--within", "15m", "--json", "-q"])
    assert outcome.exit_code == 1 and outcome.stderr.startswith(f"Error: cannot read {broken}: ")


def test_a_gzip_stream_on_stdin_is_read_as_its_lines():
    """`curl .../events.jsonl.gz | ordertimeout watch`: decompressed as it comes, members in
    turn (two files' gzip output one after the other), a cut stream an error."""
    plain = SAMPLE.read_bytes()
    half = plain.index(b"\n", len(plain) // 2) + 1
    for data in (gzip.compress(plain), gzip.compress(plain[:half]) + gzip.compress(plain[half:])):
        done = subprocess.run([*COMMAND, "watch", "--within", "15m", "--json", "-q"], input=data,
                              capture_output=True, env=_env(), timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode() == SAMPLE_EXPECTED.read_text()
    cut = subprocess.run([*COMMAND, "watch", "--json", "-q"], input=gzip.compress(plain)[:-30],
                         capture_output=True, env=_env(), timeout=60)
    assert cut.returncode == 1
    assert b"cannot read <stdin>: not a complete gzip stream" in cut.stderr


def test_follow_refuses_a_gzip_file(tmp_path):
    packed = tmp_path / "orders.jsonl.gz"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    outcome = invoke(["watch", "--follow", str(packed)])
    assert outcome.exit_code == 2
    assert "--follow cannot follow" in outcome.stderr and "compressed" in outcome.stderr


def test_big_integer_keys_keep_their_digits_and_42_is_still_42():
    big = 123456789012345678901234567890
    data = b"\n".join([
        b'{"userId":%d,"type":"create","ts":1}' % big,
        b'{"userId":%d,"type":"create","ts":2}' % (big + 1),
        b'{"userId":"%d","type":"pay","ts":3}' % (big + 1),
        b'{"userId":42,"type":"create","ts":4}',
        b'{"userId":"42","type":"pay","ts":5}',
    ])
    out = invoke(["watch", "--json", "-q"], input=data).stdout
    results = json_lines(out)
    assert [(r["result"], r["key"]) for r in results] == [
        ("success", str(big + 1)), ("success", "42"), ("timeout", str(big))]
    assert out.splitlines()[2].endswith('"create":{"userId":%d,"type":"create","ts":1}}' % big)  # as it came


# -- the terminal, without one --------------------------------------------------------


def test_rich_stays_unimported_on_the_json_path(tmp_path):
    process = subprocess.run([sys.executable, "-X", "importtime", "-m", "ordertimeout", "watch", str(SAMPLE), "--json"],
                             capture_output=True, env=_env(), timeout=60)
    assert process.returncode == 0
    imported = [line.rsplit("|", 1)[-1].strip() for line in process.stderr.decode().splitlines() if "|" in line]
    assert "ordertimeout.cli.watch" in imported
    assert not [name for name in imported if name.split(".")[0] in ("rich", "tomllib", "gzip")]


def imported_by(*args, stdin=None):
    process = subprocess.run([sys.executable, "-X", "importtime", "-m", "ordertimeout", *args], capture_output=True,
                             env=_env(), timeout=60, input=stdin)
    assert process.returncode == 0
    return {line.rsplit("|", 1)[-1].strip() for line in process.stderr.decode().splitlines() if "|" in line}


def test_start_up_imports_only_what_the_command_runs():
    """Start-up within 1.3x of `python -c "import click, orjson, asyncio"` comes from not
    importing what a run does not use: here as module sets, which a loaded machine cannot
    blur as it blurs timings (docs/performance.md has the timings)."""
    version = imported_by("--version")
    heavy = ("asyncio", "ordertimeout.hosts", "ordertimeout.notify", "ordertimeout.state", "ordertimeout.observe",
             "ordertimeout.rules.pipeline", "ordertimeout.cli.watch", "ordertimeout.cli.notify_options")
    assert [name for name in version if name.startswith(heavy)] == []
    watch = imported_by("watch", "--json", stdin=event("1", "create", 1) + b"\n")
    assert "ordertimeout.cli.watch" in watch
    unused = {"ordertimeout.cli.kafka", "ordertimeout.cli.generate", "ordertimeout.cli.outbox", "ordertimeout.cli.simulate",
              "random", "hashlib", "rich", "tomllib", "gzip"}
    assert watch & unused == set()


@pytest.mark.parametrize("choice, stderr_tty, stdin_tty, reads_stdin, stdout_pipe, shown", [
    (None, True, False, True, True, True),     # auto: piped input, a person watching stderr
    (None, True, False, False, True, True),    # auto: a job without a terminal on stdin, stdout to a pipe
    (None, True, True, False, False, True),    # auto: `watch FILE` typed at a terminal
    (None, True, True, True, False, False),    # auto: typing events
    (None, True, True, False, True, False),    # auto: `watch FILE | jq` typed: jq writes to the same screen
    (None, False, False, True, False, False),  # auto: stderr is a file
    (True, True, True, True, True, True),      # --progress
    (True, False, False, True, False, False),  # --progress cannot draw on a file
    (False, True, False, True, False, False),  # --no-progress
])
def test_progress_rule(choice, stderr_tty, stdin_tty, reads_stdin, stdout_pipe, shown):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    from ordertimeout.outputs.terminal import wants_progress
    env = dict(os.environ, TERM="xterm")
    read, write = os.pipe()
    try:
        with pytest.MonkeyPatch.context() as patch, open(write if stdout_pipe else os.devnull, "w") as stdout:
            patch.setattr(os, "environ", env)
            assert wants_progress(choice, Stream(stderr_tty), Stream(stdin_tty), stdout, reads_stdin=reads_stdin) is shown
    finally:
        os.close(read)
        if not stdout_pipe:
            os.close(write)


def on_a_terminal(args, stdout=None):
    """``ordertimeout ARGS`` typed at a terminal (a pseudo-terminal on stdin, stderr and,
    unless given, stdout): everything the terminal was sent."""
    import pty
    import select

    master, slave = pty.openpty()
    process = subprocess.Popen([*COMMAND, *args], stdin=slave, stdout=stdout or slave, stderr=slave,
                               env={**_env(), "TERM": "xterm"})
    os.close(slave)
    shown = b""
    while select.select([master], [], [], 60)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not data:
            break
        shown += data
    os.close(master)
    assert process.wait(timeout=60) == 0
    if process.stdout is not None:
        process.stdout.close()
    return shown.decode()


def test_watch_file_typed_at_a_terminal_shows_the_status_with_percent_and_rate():
    shown = on_a_terminal(["watch", str(SAMPLE), "--within", "15m"])
    assert "100%" in shown and " ev/s" in shown
    assert "success" in shown  # the rows, between the redrawn status lines
    # Into a pipe (`| jq`), whose reader shares the screen: no status line.
    piped = on_a_terminal(["watch", str(SAMPLE), "--within", "15m", "--json"], stdout=subprocess.PIPE)
    assert "ev/s" not in piped and "13 (event time" in piped


def test_a_full_stderr_loses_only_diagnostics():
    with open("/dev/full", "w") as full:
        process = subprocess.run([*COMMAND, "watch", "--json"], input=b"bad\n" + event("1", "create", 1) + b"\n",
                                 stdout=subprocess.PIPE, stderr=full, env=_env(), timeout=60)
    assert process.returncode == 0
    assert [r["result"] for r in json_lines(process.stdout.decode())] == ["timeout"]


def test_a_closed_stdout_is_one_line_and_exit_1():
    process = subprocess.run(["sh", "-c", f'"$@" >&-', "sh", *COMMAND, "watch", str(SAMPLE)], capture_output=True,
                             env=_env(), timeout=60)
    assert process.returncode == 1
    assert process.stderr.decode().splitlines() == ["Error: cannot write: stdout or stderr is closed"]


# Every shell example of the README and docs/ runs as written: tests/test_examples.py.

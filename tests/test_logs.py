"""--log-format json: every diagnostic on stderr is one JSON object with its fields."""

import io

import orjson
from click.testing import CliRunner

from ordertimeout.cli import main
from ordertimeout.observe.logs import Log

from .helpers import event


def invoke(args, input=b""):
    return CliRunner().invoke(main, args, input=input, catch_exceptions=False)


def records(stderr: str) -> list[dict]:
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    parsed = [orjson.loads(line) for line in lines]  # every line is JSON, or this fails
    for record in parsed:
        assert set(record) == {"time", "level", "message", "fields"}
        assert record["time"].endswith("Z") and record["level"] in ("error", "warning", "info")
    return parsed


def test_reject_warnings_and_the_summary_are_json_lines():
    data = event("a", "create", 1000) + b"\nnot json\n" + event("a", "pay", 1500) + b"\n"
    outcome = invoke(["watch", "--json", "--log-format", "json"], data)
    assert outcome.exit_code == 0
    warning, summary = records(outcome.stderr)
    assert warning["level"] == "warning"
    assert warning["message"].startswith("line 2: not valid JSON")
    assert warning["fields"] == {
        "source": "<stdin>", "line": 2, "reason": warning["message"].removeprefix("line 2: "), "reason_class": "not_json",
    }
    assert summary["level"] == "info" and summary["message"] == "summary"
    assert summary["fields"]["success"] == 1 and summary["fields"]["rejected"] == 1
    assert summary["fields"]["pay_latency"]["max_ms"] == 500
    assert orjson.loads(outcome.stdout)["result"] == "success"  # data stays on stdout


def test_after_ten_warnings_the_notice_is_json_too():
    outcome = invoke(["watch", "-q", "--log-format", "json"], b"oops\n" * 12)
    logged = records(outcome.stderr)
    assert [r["fields"]["line"] for r in logged[:10]] == list(range(1, 11))
    assert logged[10]["message"] == "further rejected lines are only counted"
    assert logged[10]["fields"] == {"rejected": 11}
    (error,) = logged[11:]  # no line was usable: the run fails, and says so as JSON too
    assert error["level"] == "error" and error["message"].startswith("12 lines, none usable")
    assert outcome.exit_code == 1


def test_errors_are_json_lines_with_the_exit_status(tmp_path):
    outcome = CliRunner().invoke(main, ["watch", str(tmp_path / "missing.jsonl"), "--log-format", "json"])
    assert outcome.exit_code == 1
    (error,) = records(outcome.stderr)
    assert error["level"] == "error" and error["message"].startswith("cannot open ")
    assert error["fields"] == {"exit_status": 1}


def test_text_stays_the_default():
    outcome = invoke(["watch", "--json"], b"oops\n")
    assert outcome.stderr.splitlines()[0].startswith("ordertimeout: line 1: not valid JSON")
    missing = CliRunner().invoke(main, ["watch", "/nonexistent/x.jsonl"])
    assert missing.stderr.startswith("Error: cannot open /nonexistent/x.jsonl")


def test_log_lines_carry_the_injected_time_and_any_field():
    stream = io.StringIO()
    log = Log(stream, "json", clock=lambda: 1_700_000_000.25)
    log.warning("state file written again", component="state", path=tmp_path_like())
    (record,) = records(stream.getvalue())
    assert record == {
        "time": "2023-11-14T22:13:20.250Z", "level": "warning", "message": "state file written again",
        "fields": {"component": "state", "path": "/tmp/x"},
    }
    text = io.StringIO()
    Log(text).error("cannot read f")
    assert text.getvalue() == "ordertimeout: cannot read f\n"


def tmp_path_like():
    import pathlib

    return pathlib.PurePosixPath("/tmp/x")  # not JSON by itself: written as its text


def test_warnings_given_before_the_run_starts_are_json_too():
    outcome = invoke(["watch", "--log-format", "json", "--webhook", "http://shop.invalid/hook", "-q"], b"")
    (warning,) = records(outcome.stderr)
    assert warning["level"] == "warning" and "plain http://" in warning["message"]
    assert outcome.exit_code == 0

"""Hostile input: whatever arrives, the tool never crashes, reports every bad line, and the
results of the good lines are exactly the results without the bad ones."""

import os
import select
import subprocess
import time

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ordertimeout.cli import main

from .helpers import COMMAND, event, small_pipe
MAX_LINE = 4096


def good_events():
    return st.lists(
        st.tuples(st.sampled_from(["1", "2", "3"]), st.sampled_from(["create", "pay", "other"]),
                  st.integers(min_value=0, max_value=400)),
        max_size=25,
    ).map(lambda gaps: [event(key, kind, sum(g for _, _, g in gaps[: i + 1]))
                        for i, (key, kind, _) in enumerate(gaps)])


wrong_values = st.sampled_from([b"null", b"true", b"[]", b"{}", b'{"a":[1]}', b"1e999", b'"x"', b"-1e400"])

bad_lines = st.one_of(
    st.binary(min_size=1, max_size=60).filter(lambda b: b"\n" not in b),  # random bytes
    good_events().filter(bool).map(lambda lines: lines[0][: len(lines[0]) // 2]),  # truncated
    st.binary(min_size=1, max_size=20).map(lambda b: b'{"userId":"1","type":"create","ts":1,"x":"' + b.replace(b"\n", b"") + b"\xff\xfe\"}"),  # invalid UTF-8
    st.integers(min_value=1, max_value=20).map(lambda n: b'{"userId":"1",\x00"type":"create","ts":1}' * n),  # NUL
    st.integers(min_value=20, max_value=400).map(lambda digits: b'{"userId":"1","type":"create","ts":1' + b"0" * digits + b"}"),  # huge number
    st.integers(min_value=600, max_value=1500).map(lambda depth: b'{"userId":"1","type":"create","ts":1,"n":' + b"[" * depth + b"]" * depth + b"}"),  # deep nesting
    st.integers(min_value=MAX_LINE + 1, max_value=3 * MAX_LINE).map(lambda size: b'{"userId":"1","type":"create","ts":1,"pad":"' + b"x" * size + b'"}'),  # enormous
    st.tuples(st.sampled_from(["userId", "type", "ts"]), wrong_values).map(  # wrong type in a field
        lambda pair: orjson.dumps({"userId": "1", "type": "create", "ts": 5, pair[0]: None}).replace(b"null", pair[1])
    ),
)


def is_valid_event(line: bytes) -> bool:
    """An independent check: could this line be a usable event at all?"""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return (isinstance(obj, dict) and isinstance(obj.get("userId"), (str, int, float)) and not isinstance(obj.get("userId"), bool)
            and isinstance(obj.get("type"), (str, int, float)) and type(obj.get("ts")) in (int, float) and len(line) <= MAX_LINE)


def run(lines, *extra):
    outcome = CliRunner().invoke(main, ["watch", "--json", "--max-line-bytes", str(MAX_LINE), *extra],
                                 input=b"\n".join(lines) + b"\n")
    # Lines, none of them usable: the run failed and says why (exit 1).
    nothing_usable = any(line.strip() for line in lines) and not any(map(is_valid_event, lines))
    assert outcome.exit_code == (1 if nothing_usable else 0), outcome.output
    if nothing_usable:
        assert "none usable" in outcome.stderr.splitlines()[-1]
    assert "Traceback" not in outcome.stderr
    return outcome


@settings(max_examples=int(os.environ.get("ORDERTIMEOUT_FUZZ", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(good_events(), st.lists(st.tuples(st.integers(min_value=0, max_value=30), bad_lines), max_size=12))
def test_bad_lines_never_change_the_results_of_good_ones(good, bad):
    assume(all(line.strip() and not is_valid_event(line) for _, line in bad))
    mixed = list(good)
    for position, line in sorted(bad, key=lambda pair: -pair[0]):
        mixed.insert(min(position, len(mixed)), line)
    clean = run(good)
    dirty = run(mixed, "--quiet")
    assert dirty.stdout == clean.stdout
    warnings = [line for line in dirty.stderr.splitlines() if line.startswith("ordertimeout: line")]
    assert len(warnings) == min(10, len(bad))


def test_every_kind_of_bad_line_is_reported_with_its_reason(tmp_path):
    kinds = {
        b"\xff\xfe\xfd": "not valid UTF-8",
        b'{"userId":"1","type":"create","ts":1}\x00': "not valid JSON",
        b"[" * 1500 + b"]" * 1500: "not valid JSON",  # deeper than orjson allows
        b'{"userId":"1","type":"create","ts":123456789012345678901234567890}': "after the year 9999",
        b'{"userId":"1","type":"create","ts":1,"pad":"' + b"y" * 5000 + b'"}': f"line longer than {MAX_LINE} bytes",
        b'{"userId":{"id":1},"type":"create","ts":1}': "not a string or number",
        b'{"userId":"1","type":null,"ts":1}': "type field 'type' is null",
        b'{"userId":"1","type":"pay","ts":[1]}': "not a number or ISO-8601 string",
        b'{"userId":"1","type":"pay","ts":"2026-13-45"}': "not ISO-8601",
        b"42": "not a JSON object (got a number)",
    }
    rejects = tmp_path / "rejects.jsonl"
    outcome = run([event("9", "create", 0), *kinds], "--rejects", str(rejects))
    records = [orjson.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [r["line"] for r in records] == list(range(2, 2 + len(kinds)))
    for record, reason in zip(records, kinds.values(), strict=True):
        assert reason in record["reason"], record
    assert len(orjson.dumps(records[4])) < 1000  # an enormous line is kept as a prefix only
    assert '"result":"timeout"' in outcome.stdout


def padded(key, kind, ts, size):
    """An event line of exactly ``size`` bytes."""
    line = orjson.dumps({"userId": key, "type": kind, "ts": ts, "pad": ""})
    return line[:-2] + b"x" * (size - len(line)) + b'"}'


@pytest.mark.parametrize("first", [False, True], ids=["after-a-plain-line", "first-in-its-chunk"])
def test_a_line_of_max_line_bytes_is_read_and_one_byte_more_is_refused(first):
    exact, over = padded("1", "create", 1, MAX_LINE), padded("2", "create", 2, MAX_LINE + 1)
    assert (len(exact), len(over)) == (MAX_LINE, MAX_LINE + 1)
    lines = [over, exact] if first else [event("0", "other", 0), exact, over]
    outcome = run([*lines, event("1", "pay", 5), event("2", "pay", 6)])
    results = [orjson.loads(line) for line in outcome.stdout.splitlines()]
    assert [(r["key"], r["result"]) for r in results] == [("1", "success")]  # 2's create was refused
    over_at = lines.index(over) + 1
    assert f"line {over_at}: line longer than {MAX_LINE} bytes ({MAX_LINE + 1} bytes)" in outcome.stderr
    assert outcome.stderr.count("line longer than") == 1


def test_duplicate_keys_do_not_crash():
    outcome = run([b'{"userId":"1","userId":"2","type":"create","type":"create","ts":5}'])
    assert orjson.loads(outcome.stdout)["result"] == "timeout"


def peak_kib_once_decided(path, *args):
    """A `watch --follow` of ``path``: its first result, and its peak memory (VmHWM, KiB)
    once that result is out (read while it still runs: a finished process has no /proc)."""
    process = subprocess.Popen([*COMMAND, "watch", str(path), "--follow", "--json", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "no result came"
        result = orjson.loads(process.stdout.readline())
        with open(f"/proc/{process.pid}/status") as status:
            peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    finally:
        process.terminate()
        process.communicate(timeout=30)
    return result, peak


def test_endless_line_is_skipped_without_loading_it(tmp_path):
    source, small = tmp_path / "huge.jsonl", tmp_path / "small.jsonl"
    with open(source, "wb") as handle:
        handle.write(event("1", "create", 0) + b"\n")
        for _ in range(8):  # 8 MiB with no newline: 2,048 times the limit below
            handle.write(b"z" * (1 << 20))
        handle.write(b"\n" + event("1", "pay", 10) + b"\n")
    small.write_bytes(event("1", "create", 0) + b"\n" + event("1", "pay", 10) + b"\n")
    process = subprocess.run([*COMMAND, "watch", str(source), "--json", "--max-line-bytes", "4096", "--rejects",
                              str(tmp_path / "r.jsonl")], capture_output=True, timeout=60)
    assert process.returncode == 0
    assert orjson.loads(process.stdout)["result"] == "success"
    assert f"line 2: line longer than 4096 bytes ({8 << 20} bytes)".encode() in process.stderr
    assert (tmp_path / "r.jsonl").stat().st_size < 1000
    # Not held whole on its way: the run's peak memory is that of a run without the line,
    # plus its read buffers (measured: +3 MiB; holding the line adds 8 MiB and more).
    result, peak = peak_kib_once_decided(source, "--max-line-bytes", "4096")
    _, baseline = peak_kib_once_decided(small, "--max-line-bytes", "4096")
    assert result["result"] == "success"
    assert peak - baseline < 6 * 1024, (peak, baseline)


def test_a_full_disk_for_rejects_is_a_clear_error():
    outcome = CliRunner().invoke(main, ["watch", "--rejects", "/dev/full"], input=b"oops\n")
    assert outcome.exit_code == 1
    assert "Error: cannot write /dev/full: No space left on device" in outcome.stderr


def test_a_directory_as_input_is_a_clear_error(tmp_path):
    outcome = CliRunner().invoke(main, ["watch", str(tmp_path)])
    assert outcome.exit_code == 1 and "it is a directory" in outcome.stderr


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_a_stopped_consumer_pauses_reading_and_memory_stays_bounded(tmp_path):
    source = tmp_path / "big.jsonl"
    # 9 MB: more than the pipes (one page each, below) and the run's own read-ahead (the
    # first 4 MiB of a piped stdin are read at once) can hold, so the producer must wait.
    subprocess.run([*COMMAND, "generate", "--events", "100000", "--users", "1000", "-o", str(source)], check=True)
    creates = source.read_bytes().count(b'"type":"create"')
    into, feeding = small_pipe()
    with into, feeding:
        producer = subprocess.Popen(["cat", str(source)], stdout=feeding)
        process = subprocess.Popen([*COMMAND, "watch", "--json", "-q"], stdin=into,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.read(4096)  # the consumer reads a little, then stops for a while
    peak = 0
    for _ in range(10):
        time.sleep(0.1)
        peak = max(peak, rss_kib(process.pid))
    assert process.poll() is None and producer.poll() is None  # both wait: reading paused
    assert peak < 100 * 1024
    rest = process.stdout.read()  # the consumer comes back: everything flows
    process.wait(timeout=60)
    producer.wait(timeout=60)
    assert process.returncode == 0
    process.stdout.close()
    process.stderr.close()
    assert (first + rest).count(b"\n") == creates  # one result per order, none lost while paused

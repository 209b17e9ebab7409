"""Shared test helpers: running lines through the library, reading probe files."""

from __future__ import annotations

import contextlib
import pathlib
import re
import subprocess
import sys

import orjson

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, RejectedLine, TimeMode
from ordertimeout.outputs.sinks import json_line

SEMANTICS = pathlib.Path(__file__).parent / "semantics"
PROBES = SEMANTICS / "probes"
EXPECTED = SEMANTICS / "expected"
_EXPECTED_NAME = re.compile(r"(?P<probe>.+)__(?P<mode>each|next|followed-by)__within(?P<within>\d+)(?:__lateness(?P<lateness>\d+))?")

#: The fields the probe files compare (the original objects are left out there).
RESULT_FIELDS = ("result", "key", "created", "paid", "deadline")


def expected_cases():
    """Every expected file as (id, probe path, mode, within, lateness, expected dicts)."""
    for path in sorted(EXPECTED.glob("*.jsonl")):
        match = _EXPECTED_NAME.fullmatch(path.stem)
        assert match, path
        expected = [orjson.loads(line) for line in path.read_bytes().splitlines() if line]
        yield (
            path.stem,
            PROBES / f"{match['probe']}.jsonl",
            match["mode"],
            int(match["within"]),
            int(match["lateness"] or 0),
            expected,
        )


def brief(result: dict) -> dict:
    """A result reduced to the fields the probe files hold."""
    return {name: result[name] for name in RESULT_FIELDS if name in result}


def run_event_time(lines, within, mode="each", lateness=0, schema=None):
    """Feed ``lines`` (bytes) through a fresh event-time pipeline; return result dicts."""
    pipeline = Pipeline(
        EventParser(schema or EventSchema()),
        Matcher(within, mode),
        time_mode=TimeMode.EVENT,
        lateness=lateness,
    )
    results = []
    for line in lines:
        try:
            results += pipeline.feed(line, now=0)
        except RejectedLine:
            pass
    results += pipeline.finish()
    return [orjson.loads(json_line(result)) for result in results], pipeline


def event(key, kind, ts, **extra) -> bytes:
    """One input line."""
    return orjson.dumps({"userId": key, "type": kind, "ts": ts, **extra})


COMMAND = [sys.executable, "-m", "ordertimeout"]


@contextlib.contextmanager
def live_watch(*args):
    """A `watch` process fed through a pipe that stays open until the block ends."""
    process = subprocess.Popen([*COMMAND, "watch", "--json", "-q", *args], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        process.stdin.close()
        process.wait(timeout=10)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == 0

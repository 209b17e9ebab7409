"""Shared test helpers: running lines through the library, reading probe files."""

from __future__ import annotations

import contextlib
import ctypes
import os
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


def run_event_time(lines, within, mode="each", lateness=0, schema=None, paid_late=None):
    """Feed ``lines`` (bytes) through a fresh event-time pipeline; return result dicts."""
    pipeline = Pipeline(
        EventParser(schema or EventSchema()),
        Matcher(within, mode, paid_late),
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


def obeying_file_permissions() -> None:
    """For ``preexec_fn``: the child obeys file permissions even if the suite runs as root.

    Root reads a mode-000 file through two capabilities (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH); dropping them from the bounding set before exec leaves the new
    program without them, so it meets the permission error a user meets. It stays root,
    so it still reaches Python and the code under /root or wherever they are installed.
    """
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed: the suite needs CAP_SETPCAP as root")


# <linux/prctl.h> and <linux/capability.h>
_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2

"""Every probe of SEMANTICS.md, in every mode it was measured for: exact results, exact order."""

import orjson
import pytest
from click.testing import CliRunner

from ordertimeout.cli import main

from .helpers import brief, expected_cases, run_event_time

CASES = list(expected_cases())


def test_every_mode_has_probes():
    modes = {case[2] for case in CASES}
    assert modes == {"each", "next", "followed-by"}
    assert len(CASES) >= 60


@pytest.mark.parametrize("name,probe,mode,within,lateness,expected", CASES, ids=[c[0] for c in CASES])
def test_library_matches_expected(name, probe, mode, within, lateness, expected):
    results, _ = run_event_time(probe.read_bytes().splitlines(), within, mode, lateness)
    assert [brief(result) for result in results] == expected


@pytest.mark.parametrize("name,probe,mode,within,lateness,expected", CASES, ids=[c[0] for c in CASES])
def test_cli_matches_expected(name, probe, mode, within, lateness, expected):
    args = ["watch", str(probe), "--json", "-q", "--within", f"{within}ms", "--match", mode]
    if lateness:
        args += ["--lateness", f"{lateness}ms"]
    outcome = CliRunner().invoke(main, args)
    assert outcome.exit_code == 0, outcome.output
    results = [orjson.loads(line) for line in outcome.stdout.splitlines()]
    assert [brief(result) for result in results] == expected
    # The original objects travel unchanged inside the results.
    originals = {line for line in probe.read_bytes().splitlines()}
    for result in results:
        assert orjson.dumps(result["create"]) in originals
        if "pay" in result:
            assert orjson.dumps(result["pay"]) in originals

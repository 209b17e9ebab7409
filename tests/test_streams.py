"""The CLI's stream helpers: what the diagnosing reporter keeps over a long run."""

import io

from ordertimeout.cli.streams import _DiagnosingReporter


def test_reason_texts_tallied_stay_bounded_over_a_long_run():
    reporter = _DiagnosingReporter(io.StringIO(), max_warnings=0)
    for line in range(5 * _DiagnosingReporter.REASONS):
        # every late event has its own text: its time and the watermark
        reporter.report("-", line, f"late: time {line} is at or before the watermark {line + 9}", b"{}")
        reporter.report("-", line, "no key field 'userId'", b"{}")
    assert len(reporter.reasons) == _DiagnosingReporter.REASONS
    assert reporter.reasons.most_common(1)[0] == ("no key field 'userId'", 5 * _DiagnosingReporter.REASONS)
    assert len(reporter.samples) == _DiagnosingReporter.SAMPLES
    assert reporter.by_reason == {"late": 5 * _DiagnosingReporter.REASONS, "bad_key": 5 * _DiagnosingReporter.REASONS}

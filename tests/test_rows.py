"""Rows for people: the order's fields, local time, times beyond what datetime shows, and
the batch of rows (format_all) equal byte for byte to the row-by-row definition (format)."""

import datetime as dt
import os
import subprocess
import time

import pytest
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.rules.matcher import Cancelled, PaidLate, Reminder, Success, Timeout
from ordertimeout.outputs.rows import HumanFormatter, format_time

from .helpers import COMMAND

FIRST_MS, LAST_MS = -62_135_596_800_000, 253_402_300_799_999


@given(st.integers(min_value=FIRST_MS, max_value=LAST_MS))
def test_format_time_is_iso_utc_with_milliseconds(ms):
    moment = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
    assert format_time(ms) == moment.isoformat(timespec="milliseconds") + "Z"


@given(st.integers(min_value=FIRST_MS - 10**13, max_value=LAST_MS + 10**13))
def test_format_time_never_fails_and_keeps_order_and_milliseconds(ms):
    text = format_time(ms)
    assert text.endswith(f".{ms % 1000:03d}Z")
    later = format_time(ms + 86_400_000)
    year, later_year = (int(t[: t.index("-", 1)]) for t in (text, later))
    assert later_year in (year, year + 1)


def test_format_time_beyond_the_years_1_to_9999():
    assert format_time(LAST_MS + 1) == "+10000-01-01T00:00:00.000Z"
    assert format_time(FIRST_MS - 1) == "+0000-12-31T23:59:59.999Z"


def test_format_time_far_beyond_the_year_9999_is_immediate():
    # --within 999999999999999d is a valid duration: its deadlines lie ~7 * 10^9
    # 400-year cycles away, and a row must still show them at once (stepping one cycle
    # at a time hung the run for ever). The calendar repeats every 400 years: 2158-07-04
    # is 6,844,767,517 cycles before the year 2,737,907,008,958.
    far = 1 + 999_999_999_999_999 * 86_400_000
    assert format_time(far) == "+2737907008958-07-04T00:00:00.001Z"
    assert format_time(-far) == "-2737907005019-06-29T23:59:59.999Z"


def test_a_run_with_the_longest_window_from_the_last_year_ends_and_shows_its_deadline(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"userId":"a","type":"create","ts":"9999-12-31T23:59:59.999Z"}\n')
    done = subprocess.run(
        [*COMMAND, "watch", str(events), "--within", "3652425d", "-q", "--max-future", "off"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("+19999-12-31T23:59:59.999Z  timeout    a ")


@pytest.fixture
def kolkata():
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_local_time_has_the_zone_offset(kolkata):
    assert format_time(0, local=True) == "1970-01-01T05:30:00.000+05:30"
    assert format_time(0) == "1970-01-01T00:00:00.000Z"


CREATE = b'{"userId":"u1","type":"create","ts":0,"orderId":"o-1","shop":{"id":7},"note":"two words"}'
PAY = b'{"userId":"u1","type":"pay","ts":500,"amount":12.5}'


def test_rows_show_the_order_fields_from_either_event():
    formatter = HumanFormatter(1000, fields=("orderId", "amount", "shop.id", "note", "absent"))
    row = formatter.format(Success("u1", 0, 500, 1000, CREATE, PAY)).decode()
    assert row.rstrip("\n").endswith('orderId=o-1 amount=12.5 shop.id=7 note="two words"')
    timeout = formatter.format(Timeout("u1", 0, 1000, CREATE)).decode()
    assert "amount" not in timeout and "orderId=o-1" in timeout  # the create has no amount
    cancelled = formatter.format(Cancelled("u1", 0, 300, 1000, CREATE, b'{"amount":1}')).decode()
    assert "amount=1" in cancelled


def test_rows_without_fields_are_as_before():
    plain = HumanFormatter(1000, fields=()).format(Timeout("u1", 0, 1000, CREATE)).decode()
    assert plain == "1970-01-01T00:00:01.000Z  timeout    u1          no pay within 1s\n"


# -- format_all: the rows of a batch, byte for byte what format gives row by row ----------

#: Names events and --fields share often enough to meet: plain, dotted, odd.
_NAMES = st.sampled_from(["orderId", "amount", "shop", "shop.id", "id", "a.b.c", "é", "x y", "", "="])
_ODD_CHARACTERS = st.sampled_from(["\x00", "\n", "\t", " ", "\u200b", "é", "\U0001f600", '"', "\\"])
_ODD_TEXT = st.text(st.one_of(st.characters(codec="utf-8"), _ODD_CHARACTERS), max_size=14)
#: Keys may hold anything a str can, even a lone surrogate (read by the exact big-number parser).
_KEYS = st.one_of(st.sampled_from(["u1", "u2", "a-very-long-user-name"]),
                  st.text(st.one_of(st.characters(), _ODD_CHARACTERS, st.just("\ud800")), max_size=14))
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8) | _ODD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=6,
)
#: An event's bytes: mostly objects holding some of the names, else any JSON or not JSON.
_EVENTS = st.one_of(
    st.dictionaries(_NAMES, _JSON_VALUES, max_size=5).map(orjson.dumps),
    _JSON_VALUES.map(orjson.dumps),
    st.sampled_from([b"", b"{", b'{"orderId":1,"orderId":null}', b'{"orderId":"\\u0041 b"}', b"\xff"]),
)
_TIMES = st.integers(min_value=FIRST_MS - 10**13, max_value=LAST_MS + 10**13)
_RESULTS = st.one_of(
    st.builds(Success, _KEYS, _TIMES, _TIMES, _TIMES, _EVENTS, _EVENTS, st.integers(0, 3)),
    st.builds(Timeout, _KEYS, _TIMES, _TIMES, _EVENTS, st.booleans(), st.integers(0, 3)),
    st.builds(Cancelled, _KEYS, _TIMES, _TIMES, _TIMES, _EVENTS, _EVENTS, st.integers(0, 3)),
    st.builds(PaidLate, _KEYS, _TIMES, _TIMES, _TIMES, _EVENTS, _EVENTS, st.integers(0, 3)),
    st.builds(Reminder, _KEYS, _TIMES, _TIMES, _TIMES, _EVENTS, st.integers(1, 3), st.integers(0, 3)),
)


def _brackets(style: str, text: str) -> str:
    return f"[{style}]{text}[/]"


@settings(max_examples=300, deadline=None)
@given(
    results=st.lists(_RESULTS, max_size=8),
    fields=st.lists(_NAMES, max_size=4),
    within=st.integers(min_value=1, max_value=10**10),
    local_time=st.booleans(),
    paint=st.sampled_from([None, _brackets]),
)
def test_format_all_gives_the_rows_of_format_byte_for_byte(results, fields, within, local_time, paint):
    formatter = HumanFormatter(within, paint, fields, local_time)
    expected = b"".join(formatter.format(result) for result in results)
    assert b"".join(formatter.format_all(results)) == expected
    assert b"".join(formatter.format_all(results)) == expected  # again, from what it worked out once


def test_format_all_of_a_replay_in_time_order_gives_the_rows_of_format():
    """Results as a run gives them: many rows to a second, latencies that repeat."""
    formatter = HumanFormatter(1000)
    results = []
    for n in range(3000):
        create = b'{"userId":"u%d","type":"create","orderId":"o%d","amount":%d.5}' % (n % 37, n, n % 200)
        if n % 3:
            pay = b'{"userId":"u%d","type":"pay","amount":1}' % (n % 37)
            results.append(Success(f"u{n % 37}", 10**12 + n * 7, 10**12 + n * 7 + n % 999, 10**12 + n * 7 + 1000,
                                   create, pay))
        else:
            results.append(Timeout(f"u{n % 37}", 10**12 + n * 7 - 1000, 10**12 + n * 7, create, n % 2 == 0))
    assert b"".join(formatter.format_all(results)) == b"".join(map(formatter.format, results))

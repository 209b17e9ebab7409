"""Rows for people: the order's fields, local time, and times beyond what datetime shows."""

import datetime as dt
import os
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordertimeout.matcher import Cancelled, Success, Timeout
from ordertimeout.sinks import HumanFormatter, format_time

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

"""The parser: what is accepted, what is rejected, and with which reason."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordertimeout.rules.events import (
    CANCEL, CREATE, OTHER, PAY, TIME_IGNORED, TIME_OPTIONAL, TIME_REQUIRED,
    EventParser, EventSchema, RejectedLine,
)
from ordertimeout.rules.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    "raw,expected",
    [
        (b'{"userId":"7","type":"create","ts":1000}', ("7", CREATE, 1000)),
        (b'{"userId":7,"type":"pay","ts":1000}', ("7", PAY, 1000)),
        (b'{"userId":7.0,"type":"x","ts":1000}', ("7", OTHER, 1000)),
        (b'{"userId":"a","type":"create","ts":1000.9}', ("a", CREATE, 1000)),
        (b'{"userId":"a","type":"create","ts":"2026-11-23T10:00:00.250Z"}', ("a", CREATE, 1795428000250)),
        (b'{"userId":"a","type":"create","ts":"2026-11-23T10:00:00.250"}', ("a", CREATE, 1795428000250)),
        (b'{"userId":"a","type":"create","ts":"2026-11-23T11:00:00.250+01:00"}', ("a", CREATE, 1795428000250)),
    ],
)
def test_accepted(raw, expected):
    key, kind, time, kept = EventParser(EventSchema()).parse(raw, TIME_REQUIRED)
    assert (key, kind, time) == expected
    assert kept is raw


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"\xff{}", "not valid UTF-8"),
        (b"{nope", "not valid JSON"),
        (b"[1,2]", "not a JSON object (got an array)"),
        (b'"text"', "not a JSON object (got a string)"),
        (b'{"type":"create","ts":1}', "no key field 'userId'"),
        (b'{"userId":null,"type":"create","ts":1}', "key field 'userId' is null"),
        (b'{"userId":true,"type":"create","ts":1}', "is a boolean"),
        (b'{"userId":{"a":1},"type":"create","ts":1}', "is an object"),
        (b'{"userId":"1","ts":1}', "no type field 'type'"),
        (b'{"userId":"1","type":["create"],"ts":1}', "type field 'type' is an array"),
        (b'{"userId":"1","type":"create"}', "no time field 'ts'"),
        (b'{"userId":"1","type":"create","ts":"yesterday"}', "not ISO-8601"),
        (b'{"userId":"1","type":"create","ts":true}', "is a boolean"),
        (b'{"userId":"1","type":"create","ts":1e300}', "after the year 9999"),
    ],
)
def test_rejected_with_reason(raw, reason):
    with pytest.raises(RejectedLine) as caught:
        EventParser(EventSchema()).parse(raw, TIME_REQUIRED)
    assert reason in caught.value.reason


def test_time_policies():
    parser = EventParser(EventSchema())
    assert parser.parse(b'{"userId":"1","type":"create"}', TIME_OPTIONAL)[2] is None
    assert parser.parse(b'{"userId":"1","type":"create","ts":"bad"}', TIME_IGNORED)[2] is None
    with pytest.raises(RejectedLine):
        parser.parse(b'{"userId":"1","type":"create","ts":"bad"}', TIME_OPTIONAL)


@pytest.mark.parametrize("unit,value,ms", [("s", b"1.001", 1001), ("s", b"2", 2000), ("us", b"1999", 1), ("ns", b"2000000", 2), ("ms", b"-5", -5)])
def test_time_units(unit, value, ms):
    parser = EventParser(EventSchema(time_unit=unit))
    assert parser.parse(b'{"userId":"1","type":"x","ts":%b}' % value, TIME_REQUIRED)[2] == ms


def test_custom_fields_and_dotted_paths():
    schema = EventSchema(key_field="order.user.id", type_field="event", time_field="meta.ts",
                         create_type="created", pay_type="paid", cancel_type="cancelled")
    parser = EventParser(schema)
    raw = b'{"order":{"user":{"id":42}},"event":"paid","meta":{"ts":5}}'
    assert parser.parse(raw, TIME_REQUIRED)[:3] == ("42", PAY, 5)
    raw = b'{"order.user.id":"x","event":"cancelled","meta":{"ts":5}}'
    assert parser.parse(raw, TIME_REQUIRED)[:3] == ("x", CANCEL, 5)
    with pytest.raises(RejectedLine, match="no key field 'order.user.id'"):
        parser.parse(b'{"order":{"user":7},"event":"paid","meta":{"ts":5}}', TIME_REQUIRED)


@pytest.mark.parametrize(
    "text,ms",
    [("1s", 1000), ("250ms", 250), ("1.5s", 1500), ("10m", 600_000), ("1h30m", 5_400_000),
     ("2d", 172_800_000), ("1", 1000), ("0.25", 250), ("1500us", None), ("3000000ns", 3),
     ("1s500ms", 1500), (" 2S ", 2000)],
)
def test_parse_duration(text, ms):
    if ms is None:
        with pytest.raises(DurationError, match="whole number of milliseconds"):
            parse_duration(text)
    else:
        assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["0", "0s", "-1s", "abc", "1x", "s", "", "1s 2", "1.2.3s", "--1"])
def test_bad_durations(text):
    with pytest.raises(DurationError):
        parse_duration(text)


def test_durations_end_at_ten_thousand_years():
    # Longer ones made deadlines past 2**63 ms: `--state` failed with a traceback and rows hung.
    assert parse_duration("3652425d") == 10_000 * 365_2425 * 86_400_000 // 10_000
    with pytest.raises(DurationError, match="longer than 10,000 years"):
        parse_duration("3652426d")
    with pytest.raises(DurationError, match="longer than 10,000 years"):
        parse_duration("999999999999999d")


def test_zero_allowed_where_asked():
    assert parse_duration("0", allow_zero=True) == 0


@pytest.mark.parametrize("ms,text", [(250, "250ms"), (1000, "1s"), (1500, "1.5s"), (90_000, "1m30s"), (7_200_000, "2h"), (86_400_250, "1d250ms")])
def test_format_duration(ms, text):
    assert format_duration(ms) == text
    assert parse_duration(text) == ms


@given(st.integers(min_value=-(10**60), max_value=10**60))
def test_integer_keys_of_any_size_keep_their_digits_and_equal_their_text(number):
    parser = EventParser(EventSchema())
    as_number = parser.parse(b'{"userId":%d,"type":"create","ts":1}' % number, TIME_REQUIRED)
    as_text = parser.parse(b'{"userId":"%d","type":"create","ts":1}' % number, TIME_REQUIRED)
    nested = EventParser(EventSchema(key_field="a.b")).parse(b'{"a":{"b":%d},"type":"x"}' % number, TIME_IGNORED)
    assert as_number[0] == as_text[0] == nested[0] == str(number)


def test_float_keys_keep_their_meaning():
    parser = EventParser(EventSchema())
    for raw, key in ((b"42.0", "42"), (b"1e20", "100000000000000000000"), (b"2.5", "2.5")):
        assert parser.parse(b'{"userId":%b,"type":"create"}' % raw, TIME_IGNORED)[0] == key


@pytest.mark.parametrize("ts, reason", [
    (253402300800000, "after the year 9999"),
    (-62135596800001, "before the year 1"),
    ('"0001-01-01T00:00:00+00:01"', "before the year 1"),
    (10**30, "after the year 9999"),
])
def test_times_outside_years_1_to_9999_are_rejected(ts, reason):
    parser = EventParser(EventSchema())
    with pytest.raises(RejectedLine, match=reason):
        parser.parse(b'{"userId":"1","type":"create","ts":%b}' % str(ts).encode(), TIME_REQUIRED)
    for edge in (253402300799999, -62135596800000):
        assert parser.parse(b'{"userId":"1","type":"create","ts":%d}' % edge, TIME_REQUIRED)[2] == edge

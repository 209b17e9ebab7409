"""When no line is usable: the reason, the fields the lines have, and options to try."""

from ordertimeout.events import EventSchema
from ordertimeout.unusable import describe_unusable


def test_describe_unusable_names_fields_and_suggests_options():
    lines = [b'{"customer":"c1","event":"create","when":1700000000000,"n":1}', b"not json"]
    text = describe_unusable(2, "no key field 'userId'", lines, EventSchema())
    assert text == ("2 lines, none usable: no key field 'userId' (the lines have: customer, event, when, n); "
                    "try --key customer --type-field event --time-field when")
    assert describe_unusable(1, "not valid JSON", [b"{"], EventSchema()) == "1 line, none usable: not valid JSON"
    # a field that is there is not suggested again
    present = [b'{"userId":"1","kind":"create","ts":"soon"}']
    assert describe_unusable(1, "x", present, EventSchema()).endswith("try --type-field kind")


def test_a_time_field_is_guessed_by_its_values_and_iso_text_counts():
    lines = [b'{"user_id":"u1","kind":"create","at":"2026-11-30T10:00:00Z"}']
    text = describe_unusable(1, "no key field 'userId'", lines, EventSchema())
    assert text.endswith("try --key user_id --type-field kind --time-field at")
    booleans = [b'{"userId":"u1","type":"create","flag":true}']
    assert "--time-field" not in describe_unusable(1, "no time field 'ts'", booleans, EventSchema())

"""When no line is usable: the reason, the fields the lines have, and options to try."""

from ordertimeout.rules.events import EventSchema
from ordertimeout.inputs.unusable import describe_no_orders, describe_unusable


def test_describe_unusable_names_fields_and_suggests_options():
    lines = [b'{"customer":"c1","event":"create","when":1700000000000,"n":1}', b"not json"]
    text = describe_unusable(2, "no key field 'userId'", lines, EventSchema())
    assert text == ("2 lines, none usable: no key field 'userId' (the lines have: customer, event, when, n); "
                    "try --key customer --type-field event --time-field when")
    assert describe_unusable(1, "not valid JSON", [b"not json"], EventSchema()) == "1 line, none usable: not valid JSON"
    # a field that is there is not suggested again
    present = [b'{"userId":"1","kind":"create","ts":"soon"}']
    assert describe_unusable(1, "x", present, EventSchema()).endswith("try --type-field kind")


def test_a_time_field_is_guessed_by_its_values_and_iso_text_counts():
    lines = [b'{"user_id":"u1","kind":"create","at":"2026-11-30T10:00:00Z"}']
    text = describe_unusable(1, "no key field 'userId'", lines, EventSchema())
    assert text.endswith("try --key user_id --type-field kind --time-field at")
    booleans = [b'{"userId":"u1","type":"create","flag":true}']
    assert "--time-field" not in describe_unusable(1, "no time field 'ts'", booleans, EventSchema())


def test_events_that_opened_no_order_are_described_with_the_options_to_check():
    schema = EventSchema(create_type="created")
    text = describe_no_orders({"events": 3000, "creates": 0, "pays": 1200, "other": 1800}, schema)
    assert text == ("no event was a create: none of 3,000 events had type 'created' in field 'type' "
                    "(1,200 pays, 1,800 other types); see --create-type and --type-field")
    assert describe_no_orders({"events": 1, "creates": 0, "other": 1}, EventSchema()).startswith(
        "no event was a create: none of 1 event had type 'create'")
    # Some order opened, or nothing usable at all: nothing to say here.
    assert describe_no_orders({"events": 10, "creates": 1, "other": 9}, schema) is None
    assert describe_no_orders({"events": 0, "creates": 0}, schema) is None

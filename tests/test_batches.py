"""The batch paths against the one-at-a-time paths they must equal, on random input.

The runtime feeds runs of lines through ``Pipeline.feed_lines`` (which uses
``EventParser.parse_lines`` and ``Matcher.on_events``) and leaves the lines it stops at to
``Pipeline.feed``; results are written through the plain-key fast path of ``json_line``.
Each is held to the line-by-line path here: the same output bytes in the same order, the
same rejected lines, counters, watermark and state.
"""

import io

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.clocks import ManualClock
from ordertimeout.matcher import Cancelled, PaidLate, Success, Timeout
from ordertimeout.runtime import Runtime
from ordertimeout.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter, _json_line_any_key, json_line

KEYS = ["a", "b", "u-1", 7, "k:é"]
TYPES = ["create", "pay", "other", "cancel"]
#: Lines that stop a batch or go through the full parser: every way the fast path must step aside.
ODD_LINES = [
    b"",
    b"   ",
    b"not json",
    b"[1, 2]",
    b'{"userId": "a"}',
    b'{"userId": ["a"], "type": "create", "ts": 5}',
    b'{"userId": "a", "type": "create", "ts": "1970-01-01T00:00:00.005Z"}',
    b'{"userId": "b", "type": "pay", "ts": 5.0}',
    b'{"userId": "a", "type": "create"}',
    b'{"userId": "b", "type": "create", "ts": 99999999999999999}',
    b'\xef\xbb\xbf{"userId": "a", "type": "create", "ts": 0}',
    b'{"userId": "a", "type": "pay", "ts": 3}\r',
    b'{"userId": "b", "type": "create", "ts": 4}  ',
]

lines_strategy = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(KEYS), st.sampled_from(TYPES), st.integers(0, 40), st.integers(0, 30)),
        st.sampled_from(ODD_LINES),
    ),
    max_size=60,
)


def as_lines(items):
    """Turn (key, type, gap, jitter) items into lines with times that mostly rise."""
    time, lines = 0, []
    for item in items:
        if isinstance(item, bytes):
            lines.append(item)
            continue
        key, kind, gap, jitter = item
        time += gap
        lines.append(orjson.dumps({"userId": key, "type": kind, "ts": max(0, time - jitter), "n": len(lines)}))
    return lines


def run(lines, cuts, batch, *, time_mode, within, lateness, mode, paid_late, cancel, idle):
    """Feed ``lines`` in chunks cut at ``cuts`` through a runtime; return what came out."""
    schema = EventSchema(cancel_type="cancel" if cancel and mode == "each" else None)
    event_time = time_mode is not TimeMode.PROCESSING
    pipeline = Pipeline(EventParser(schema), Matcher(within, mode, paid_late), time_mode=time_mode,
                        lateness=lateness if event_time else 0, idle=idle if event_time else None)
    stdout, stderr = io.BytesIO(), io.StringIO()
    writer = ResultWriter(OutputBuffer(stdout), JsonFormatter())
    clock = ManualClock(1_000)
    runtime = Runtime(pipeline, clock, writer, RejectReporter(stderr, max_warnings=1000), max_line_bytes=60)
    feed = runtime._feed_lines if batch else runtime._feed_each
    line_number, start = 0, 0
    for cut in [*cuts, len(lines)]:
        chunk, start = lines[start:cut], max(start, cut)
        clock.advance(7)
        runtime._emit_due(clock.now_ms())
        line_number = feed(chunk, "in", line_number, clock.now_ms())
    writer.write(pipeline.finish())
    writer.write(pipeline.advance(10**9))
    writer.flush()
    return stdout.getvalue(), stderr.getvalue(), pipeline.stats(), pipeline.snapshot()


@settings(max_examples=250, deadline=None)
@given(
    lines_strategy,
    st.lists(st.integers(0, 60), max_size=4),
    st.sampled_from([None, TimeMode.EVENT, TimeMode.PROCESSING]),
    st.integers(1, 50),
    st.integers(0, 20),
    st.sampled_from(["each", "next", "followed-by"]),
    st.one_of(st.none(), st.integers(1, 40)),
    st.booleans(),
    st.one_of(st.none(), st.integers(1, 20)),
)
def test_batches_equal_line_by_line(items, cuts, time_mode, within, lateness, mode, paid_late, cancel, idle):
    lines = as_lines(items)
    options = dict(time_mode=time_mode, within=within, lateness=lateness, mode=mode, paid_late=paid_late,
                   cancel=cancel, idle=idle)
    cuts = sorted(cuts)
    assert run(lines, cuts, True, **options) == run(lines, cuts, False, **options)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from([0, 1, 2, 3]), st.integers(0, 30)), max_size=40),
    st.integers(1, 60),
    st.sampled_from(["each", "next", "followed-by"]),
    st.one_of(st.none(), st.integers(1, 40)),
    st.integers(1, 8),
)
def test_on_events_equals_on_event(items, within, mode, paid_late, batch_size):
    """Batches of any size give what one event at a time gives (the same list, in order)."""
    events, time = [], 0
    for key, kind, gap in items:
        time += gap
        events.append((key, kind, time, b'{"n":%d}' % len(events)))
    one, many = Matcher(within, mode, paid_late), Matcher(within, mode, paid_late)
    singly = [result for event in events for result in one.on_event(*event)]
    batched = [result for start in range(0, len(events), batch_size) for result in many.on_events(events[start : start + batch_size])]
    assert batched == singly
    assert many.snapshot() == one.snapshot()


raw_objects = st.sampled_from([b"{}", b'{"a":[1,2]}', b'{"t":"\\u00e9"}'])
#: Keys near the edge of "plain": the id-safe characters and a few that need escaping.
keys = st.one_of(st.text(alphabet="aZ09_.-~@:/%\"\\ \x00\u00e9"), st.text())
result_strategy = st.one_of(
    st.builds(Success, keys, st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40),
              raw_objects, raw_objects, st.integers(0, 5)),
    st.builds(Timeout, keys, st.integers(0, 2**40), st.integers(0, 2**40), raw_objects,
              st.booleans(), st.integers(0, 5)),
    st.builds(Cancelled, keys, st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40),
              raw_objects, raw_objects, st.integers(0, 5)),
    st.builds(PaidLate, keys, st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40),
              raw_objects, raw_objects, st.integers(0, 5)),
)


@settings(max_examples=300)
@given(result_strategy)
def test_json_line_plain_key_path_equals_the_general_one(result):
    """The one-format path for plain keys writes the bytes the escaping path writes."""
    assert json_line(result) == _json_line_any_key(result)
    assert orjson.loads(json_line(result))["id"] == result.id

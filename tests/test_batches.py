"""The batch paths against the one-at-a-time paths they must equal, on random input.

The runtime feeds runs of lines through ``Pipeline.feed_lines`` (which uses
``EventParser.parse_lines`` and ``Matcher.on_events``) and leaves the lines it stops at to
``Pipeline.feed``; results are written through the plain-key fast path of ``json_line``.
Each is held to the line-by-line path here: the same output bytes in the same order, the
same rejected lines, counters, watermark and state.
"""

import copy
import io

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ordertimeout import EventParser, EventSchema, Matcher, Pipeline, TimeMode
from ordertimeout.rules.events import TIME_IGNORED, TIME_OPTIONAL, TIME_REQUIRED, RejectedLine
from ordertimeout.rules.clocks import ManualClock
from ordertimeout.rules.matcher import Cancelled, PaidLate, Reminder, Success, Timeout
from ordertimeout.hosts.runtime import Runtime
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter, _json_line_any_key, json_line

from .helpers import KEYS, ODD_LINES, TYPES, as_lines, lines_strategy


def run(lines, cuts, batch, *, time_mode, within, lateness, mode, paid_late, cancel, idle, restore=False):
    """Feed ``lines`` in chunks cut at ``cuts`` through a runtime; return what came out,
    and the output and state after each chunk. ``restore``: at every cut, go on with a
    new pipeline restored from a snapshot."""
    schema = EventSchema(cancel_type="cancel" if cancel and mode == "each" else None)
    event_time = time_mode is not TimeMode.PROCESSING

    def new_pipeline():
        return Pipeline(EventParser(schema), Matcher(within, mode, paid_late), time_mode=time_mode,
                        lateness=lateness if event_time else 0, idle=idle if event_time else None)

    pipeline = new_pipeline()
    stdout, stderr = io.BytesIO(), io.StringIO()
    writer = ResultWriter(OutputBuffer(stdout), JsonFormatter())
    clock = ManualClock(1_000)
    runtime = Runtime(pipeline, clock, writer, RejectReporter(stderr, max_warnings=1000), max_line_bytes=60)
    feed = runtime._feed_lines if batch else runtime._feed_each
    line_number, start = 0, 0
    after_chunks = []
    for cut in [*cuts, len(lines)]:
        chunk, start = lines[start:cut], max(start, cut)
        if restore:
            # Time, the reorder buffer and the matcher through a snapshot.
            state = copy.deepcopy(pipeline.snapshot())
            pipeline = runtime.pipeline = new_pipeline()
            pipeline.restore(state)
        clock.advance(7)
        runtime._emit_due(clock.now_ms())
        line_number = feed(chunk, "in", line_number, clock.now_ms())
        writer.flush()
        after_chunks.append((len(stdout.getvalue()), copy.deepcopy(pipeline.snapshot())))  # as it is now
    writer.write(pipeline.finish())
    writer.write(pipeline.advance(10**9))
    writer.flush()
    return stdout.getvalue(), stderr.getvalue(), pipeline.stats(), pipeline.snapshot(), after_chunks


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


#: Longer runs of events further out of order: the reorder buffer holds many, takes
#: batches of every size (a late event or an odd line cuts one short), and lets out
#: events that waited across several chunks.
disordered_strategy = st.lists(
    st.one_of(
        # Gaps of 0 give ties; jitters at a lateness, or one off it, probe the watermark's edge.
        st.tuples(st.sampled_from(KEYS), st.sampled_from(TYPES), st.sampled_from([0, 0, 1, 2, 7, 12]),
                  st.one_of(st.integers(0, 300), st.sampled_from([2, 3, 4, 39, 40, 41, 299, 300, 301]))),
        st.tuples(st.sampled_from(KEYS), st.sampled_from(TYPES), st.sampled_from([0, 1, 5, 12]), st.just(0)),
        st.sampled_from(ODD_LINES[:4]),
    ),
    min_size=20,
    max_size=300,
)


@settings(max_examples=120, deadline=None)
# At the watermark's edge: 10 is exactly the lateness behind 50 (on time), 9 is late.
@example([("a", "create", 0, 0), ("a", "create", 50, 0), ("a", "pay", 0, 40), ("b", "create", 0, 41)],
         [], 40, 100, "each", None, None, False)
# Two events at the same time in a batch far smaller than what is held: input order kept.
@example([("a", "create", 1, 0)] * 40 + [("b", "create", 0, 0), ("c", "create", 0, 0)],
         [1, 40], 5000, 200, "each", None, None, False)
@given(
    disordered_strategy,
    st.lists(st.integers(0, 300), max_size=12),
    st.sampled_from([0, 3, 40, 300, 5000]),
    st.integers(1, 200),
    st.sampled_from(["each", "next", "followed-by"]),
    st.one_of(st.none(), st.integers(1, 100)),
    st.one_of(st.none(), st.integers(1, 50)),
    st.booleans(),
)
def test_disordered_batches_equal_line_by_line(items, cuts, lateness, within, mode, paid_late, idle, restore):
    """Event time out of order, with no lateness, little and more than the disorder:
    the batch path (restored from a snapshot at every cut, or not) gives what the
    line-by-line path gives."""
    lines = as_lines(items)
    options = dict(time_mode=TimeMode.EVENT, within=within, lateness=lateness, mode=mode, paid_late=paid_late,
                   cancel=True, idle=idle)
    cuts = sorted(cuts)
    assert run(lines, cuts, True, restore=restore, **options) == run(lines, cuts, False, **options)


#: Objects for schemas with a dotted key path and a time in seconds: the path nested, as
#: one literal dotted name, both, or neither; times as whole and fractional seconds.
_NESTED_EVENTS = st.fixed_dictionaries(
    {"type": st.sampled_from(["create", "pay", "other"]), "ts": st.one_of(st.integers(-5, 2000), st.sampled_from([1.5, 0.001, None]))},
    optional={
        "user": st.one_of(st.fixed_dictionaries({"id": st.one_of(st.sampled_from(["a", "b"]), st.integers(0, 3))}), st.just("x")),
        "user.id": st.one_of(st.sampled_from(["a", "c"]), st.none(), st.integers(5, 6)),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_NESTED_EVENTS.map(orjson.dumps), st.sampled_from(ODD_LINES)), max_size=30),
    st.sampled_from([TIME_IGNORED, TIME_REQUIRED, TIME_OPTIONAL]),
    st.sampled_from(["s", "ms"]),
    st.integers(0, 3),
)
def test_parse_lines_equals_parse_for_dotted_paths_and_time_units(lines, policy, unit, start):
    parser = EventParser(EventSchema(key_field="user.id", time_unit=unit))
    events, stop = parser.parse_lines(lines, start, policy, default_time=7)
    expected = []
    for raw in lines[start:]:
        if not raw or raw[-1] != 125:
            break
        try:
            key, kind, time, raw = parser.parse(raw, policy)
        except RejectedLine:
            break
        expected.append((key, kind, 7 if policy == TIME_IGNORED else time, raw))
    assert (events, stop) == (expected, start + len(expected))


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
    st.builds(Reminder, keys, st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40),
              raw_objects, st.integers(1, 5), st.integers(0, 5)),
)


@settings(max_examples=300)
@given(result_strategy)
def test_json_line_plain_key_path_equals_the_general_one(result):
    """The one-format path for plain keys writes the bytes the escaping path writes."""
    assert json_line(result) == _json_line_any_key(result)
    assert orjson.loads(json_line(result))["id"] == result.id

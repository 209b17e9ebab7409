"""The reorder buffer against the plainest model of it: a list sorted on every release."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.rules.reorder import RUN_SHARE, ReorderBuffer


def event(time, number):
    return ("k%d" % (number % 3), number % 4, time, b"%d" % number)


#: Steps: ("push", time), ("add", [times]) or ("release", time); few distinct times, so ties abound.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 30)),
        st.tuples(st.just("add"), st.lists(st.integers(0, 30), min_size=1, max_size=40)),
        st.tuples(st.just("release"), st.integers(0, 35)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=10), steps)
def test_release_hands_out_what_is_due_in_time_then_input_order(restored, steps):
    number = 0
    held = []  # the model: (time, input number, event)
    for time in restored:
        held.append((time, number, event(time, number)))
        number += 1
    buffer = ReorderBuffer(entry[2] for entry in held)
    for step, argument in steps:
        if step == "release":
            held.sort(key=lambda entry: entry[:2])
            due = [entry[2] for entry in held if entry[0] <= argument]
            held = [entry for entry in held if entry[0] > argument]
            assert buffer.release(argument) == due
        else:
            batch = []
            for time in [argument] if step == "push" else argument:
                batch.append(event(time, number))
                held.append((time, number, batch[-1]))
                number += 1
            if step == "push":
                buffer.push(batch[0])
            else:
                buffer.add(batch)
        assert len(buffer) == len(held)
        assert buffer.first_time() == min((entry[0] for entry in held), default=None)
        assert buffer.events() == [entry[2] for entry in sorted(held, key=lambda entry: entry[:2])]
        assert sorted(buffer, key=lambda e: e[3]) == sorted((entry[2] for entry in held), key=lambda e: e[3])


def test_a_small_batch_joins_the_heap_and_a_large_one_makes_a_run():
    buffer = ReorderBuffer()
    buffer.add([event(time, time) for time in range(100, 0, -1)])
    assert len(buffer._runs) == 1 and not buffer._heap
    small = int(100 * RUN_SHARE) - 1
    buffer.add([event(5, number) for number in range(200, 200 + small)])
    assert len(buffer._runs) == 1 and len(buffer._heap) == small
    buffer.add([event(5, number) for number in range(300, 350)])
    # The heap became a run of its own first: it is older than the batch.
    assert len(buffer._runs) == 3 and not buffer._heap
    numbers = [int(raw) for _, _, time, raw in buffer.release(5)]
    assert numbers == [1, 2, 3, 4, 5, *range(200, 200 + small), *range(300, 350)]
    assert buffer.first_time() == 6

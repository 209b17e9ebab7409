"""Fixed-bucket histograms: Prometheus's `le` boundaries, exactly."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.histogram import Buckets, window_bounds


def test_a_value_on_a_bound_is_in_that_bucket():
    buckets = Buckets([10, 100])
    for value in (0, 10, 11, 100, 101, -5):
        buckets.observe(value)
    assert buckets.cumulative() == [(10, 3), (100, 5), (float("inf"), 6)]
    assert buckets.figures() == {"count": 6, "sum_ms": 217, "max_ms": 101}


def test_no_figures_before_the_first_observation():
    assert Buckets([1]).figures() is None
    assert Buckets([1]).cumulative() == [(1, 0), (float("inf"), 0)]


def test_window_bounds_are_shares_of_the_window():
    assert window_bounds(1000) == (10, 50, 100, 250, 500, 750, 900, 1000)
    assert window_bounds(3) == (1, 2, 3)  # tiny windows: no duplicate or zero bounds


@settings(max_examples=100)
@given(st.lists(st.integers(min_value=0, max_value=20_000)), st.integers(min_value=1, max_value=10**7))
def test_cumulative_counts_agree_with_counting_by_hand(values, within):
    buckets = Buckets(window_bounds(within))
    buckets.observe_all(values)
    for bound, count in buckets.cumulative():
        assert count == sum(1 for value in values if value <= bound)
    assert buckets.sum == sum(values) and buckets.count == len(values)

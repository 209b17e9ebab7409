"""Fixed-bucket histograms: Prometheus's `le` boundaries, exactly."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.observe.histogram import Buckets, LatencyCounts, window_bounds


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


# -- pay latencies of a whole run ---------------------------------------------------


def _percentile(ordered: list[int], share: float) -> int:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@settings(max_examples=150)
@given(st.lists(st.lists(st.integers(min_value=0, max_value=LatencyCounts.EXACT_BELOW - 1), max_size=30), max_size=8))
def test_latency_counts_give_the_exact_percentiles_of_every_value(batches):
    latencies = LatencyCounts()
    for batch in batches:
        latencies.extend(batch)
    values = sorted(value for batch in batches for value in batch)
    assert len(latencies) == len(values)
    if not values:
        return
    for share in (0.0, 0.5, 0.9, 0.99, 1.0):
        assert latencies.percentile(share) == _percentile(values, share)
    assert (latencies.sum, latencies.max) == (sum(values), values[-1])
    expected = Buckets(window_bounds(1000))
    expected.observe_all(values)
    folded = latencies.buckets(window_bounds(1000))
    assert (folded.cumulative(), folded.sum, folded.max) == (expected.cumulative(), expected.sum, expected.max)


@settings(max_examples=100)
@given(st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=50))
def test_long_latencies_are_exact_while_distinct_values_are_few(values):
    latencies = LatencyCounts()
    latencies.extend(values)
    ordered = sorted(values)
    for share in (0.0, 0.5, 0.99, 1.0):
        assert latencies.percentile(share) == _percentile(ordered, share)


def test_many_distinct_long_latencies_keep_sixteen_leading_bits():
    latencies = LatencyCounts()
    values = list(range(0, 3_600_000 * 24, 97))  # a day of distinct long latencies
    for start in range(0, len(values), 10_000):
        latencies.extend(values[start : start + 10_000])
    assert not latencies.exact
    assert len(latencies.items()) < 500_000 < len(values)
    assert (latencies.max, latencies.sum, len(latencies)) == (values[-1], sum(values), len(values))
    for share in (0.0, 0.3, 0.5, 0.99, 1.0):
        exact = _percentile(values, share)
        kept = latencies.percentile(share)
        assert exact - exact / 2**15 <= kept <= exact  # never above, within 0.003% below


def test_memory_grows_with_distinct_latencies_not_with_successes():
    latencies = LatencyCounts()
    for _ in range(200):
        latencies.extend(list(range(1000)) * 5)  # a million successes under a 1 s window
    assert len(latencies) == 1_000_000
    assert len(latencies.items()) == 1000
    assert latencies.percentile(0.5) == 500
    assert latencies.exact

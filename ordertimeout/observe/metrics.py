"""Prometheus metrics of a run, read at scrape time from the counters ``--stats`` writes.

In: a function returning the run's counters (the dict ``--stats`` writes, see
:func:`~.monitor.run_counters`), the pay latencies the result writer records, the
runtime's timer-lateness buckets, the run's :class:`~.health.Health` and a wall clock.
Out: a ``prometheus_client`` registry whose one custom collector turns those into metric
families on every scrape. Nothing is counted twice: the collector keeps no counter of
its own (only a cursor into the latencies, folded into buckets as they come), so
``/metrics`` and ``--stats`` can never disagree.

Imported only with ``--metrics-addr``: prometheus-client is not loaded otherwise.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .health import Health
from .histogram import Buckets, LatencyCounts, window_bounds

__all__ = ["RunCollector", "registry", "RESULT_KINDS", "EVENT_TYPES"]

#: Result kinds by their counter name in the statistics.
RESULT_KINDS = ("success", "timeout", "cancelled", "paid_late", "reminder")
#: Input event types by their counter name in the statistics.
EVENT_TYPES = {"creates": "create", "pays": "pay", "cancels": "cancel", "other": "other"}


class RunCollector(Collector):
    """Reads one run's counters at each scrape and yields them as metric families."""

    def __init__(
        self,
        counters: Callable[[], dict],
        pay_latencies: LatencyCounts,
        within: int,
        timer_lateness: Buckets | None,
        health: Health,
        now_ms: Callable[[], int],
        open_by_window: Callable[[int], dict] | None = None,
    ) -> None:
        self._open_by_window = open_by_window
        self._counters = counters
        self._latencies = pay_latencies
        self._pay_bounds = window_bounds(within)
        self._timer_lateness = timer_lateness
        self._health = health
        self._now_ms = now_ms

    def collect(self) -> Iterator[Metric]:
        stats = self._counters()
        now = self._now_ms()
        yield from self._events(stats)
        yield from self._results(stats)
        yield from self._time(stats, now)
        yield from self._histograms()
        yield from _deliveries(stats.get("deliveries"))
        yield from _kafka(stats.get("kafka"))
        healthy, _ = self._health.check(now)
        yield GaugeMetricFamily("ordertimeout_healthy", "1 while /healthz answers 200, else 0.", value=int(healthy))

    def _events(self, stats: dict) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "ordertimeout_events", "Events read, by outcome: used (matched) or late (at or before the watermark).",
            labels=["outcome"],
        )
        events.add_metric(["used"], stats["events"] - stats["late"])
        events.add_metric(["late"], stats["late"])
        yield events
        by_type = CounterMetricFamily("ordertimeout_events_by_type", "Events read, by type.", labels=["type"])
        for name, label in EVENT_TYPES.items():
            if name in stats:
                by_type.add_metric([label], stats[name])
        yield by_type
        rejected = CounterMetricFamily(
            "ordertimeout_lines_rejected",
            "Lines not used as events since the process started, by reason (late events are in ordertimeout_events_total).",
            labels=["reason"],
        )
        for reason, count in sorted(stats.get("rejected_by_reason", {}).items()):
            if reason != "late":
                rejected.add_metric([reason], count)
        yield rejected
        if "input" in stats:
            yield CounterMetricFamily("ordertimeout_input_bytes", "Bytes read from the input.", value=stats["input"]["bytes"])
            yield CounterMetricFamily("ordertimeout_input_lines", "Lines read from the input.", value=stats["input"]["lines"])

    def _results(self, stats: dict) -> Iterator[Metric]:
        results = CounterMetricFamily("ordertimeout_results", "Results decided, by kind.", labels=["kind"])
        for kind in RESULT_KINDS:
            if kind in stats:
                results.add_metric([kind], stats[kind])
        yield results
        unmatched = CounterMetricFamily(
            "ordertimeout_unmatched", "Pays and cancels with no open order of their key.", labels=["type"]
        )
        unmatched.add_metric(["pay"], stats.get("unmatched_pays", 0))
        unmatched.add_metric(["cancel"], stats.get("unmatched_cancels", 0))
        yield unmatched
        yield CounterMetricFamily(
            "ordertimeout_discarded", "Open orders discarded without a result (--match next, as Flink does).",
            value=stats.get("discarded", 0),
        )
        yield GaugeMetricFamily("ordertimeout_open_orders", "Orders waiting for their pay.", value=stats["pending"])
        if "reminders_by_stage" in stats:
            stages = CounterMetricFamily("ordertimeout_reminders", "Reminders sent, by stage.", labels=["stage"])
            for stage, count in stats["reminders_by_stage"].items():
                stages.add_metric([stage], count)
            yield stages
        if self._open_by_window is not None:
            yield from _open_by_window(self._open_by_window(self._now_ms()))

    def _time(self, stats: dict, now: int) -> Iterator[Metric]:
        watermark = stats.get("watermark")
        if watermark is None:
            return  # processing time, or no event yet
        yield GaugeMetricFamily(
            "ordertimeout_watermark_seconds", "Event time: everything up to this time is settled (epoch seconds).",
            value=watermark / 1000,
        )
        yield GaugeMetricFamily(
            "ordertimeout_watermark_lag_seconds", "Event time: how far the watermark is behind the wall clock.",
            value=max(0, now - watermark) / 1000,
        )

    def _histograms(self) -> Iterator[Metric]:
        yield _histogram(
            "ordertimeout_pay_latency_seconds", "Time from create to pay of each success.",
            self._latencies.buckets(self._pay_bounds),
        )
        if self._timer_lateness is None:
            return  # a host without wall-clock timers of its own
        yield _histogram(
            "ordertimeout_timer_lateness_seconds",
            "How long after its deadline a timeout fired by the wall clock went out.",
            self._timer_lateness,
        )


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name,
        documentation,
        buckets=[(floatToGoString(bound / 1000), count) for bound, count in buckets.cumulative()],
        sum_value=buckets.sum / 1000,
    )


def _open_by_window(windows: dict) -> Iterator[Metric]:
    """Open orders by window, in ``le``-style buckets of their time left (cumulative)."""
    family = GaugeMetricFamily(
        "ordertimeout_open_orders_time_left",
        "Open orders by window, with at most le seconds left to their deadline (cumulative, as histogram buckets).",
        labels=["window", "le"],
    )
    for window, buckets in sorted(windows.items()):
        for bound, count in buckets:
            family.add_metric([window, "+Inf" if bound is None else floatToGoString(bound / 1000)], count)
    yield family


def _deliveries(stats: dict | None) -> Iterator[Metric]:
    """The notify sink's counters (its ``stats()``), when it runs."""
    if not stats:
        return
    outcomes = CounterMetricFamily("ordertimeout_deliveries", "Delivery attempts, by outcome.", labels=["outcome"])
    for outcome in ("delivered", "retried", "dead"):
        outcomes.add_metric([outcome], stats.get(outcome, 0))
    yield outcomes
    yield GaugeMetricFamily("ordertimeout_outbox_pending", "Results waiting to be delivered.", value=stats.get("pending", 0))
    yield GaugeMetricFamily(
        "ordertimeout_outbox_oldest_pending_age_seconds", "Age of the oldest result waiting to be delivered.",
        value=stats.get("oldest_pending_age_ms", 0) / 1000,
    )
    yield GaugeMetricFamily(
        "ordertimeout_dead_letters", "Results given up on, kept as dead letters (in the outbox now).",
        value=stats.get("dead_letters", 0),
    )
    yield GaugeMetricFamily(
        "ordertimeout_delivery_failures_in_row", "Delivery attempts failed since the last success.",
        value=stats.get("failures_in_row", 0),
    )


def _kafka(stats: dict | None) -> Iterator[Metric]:
    """The kafka host's figures, when it runs: assigned partitions, their lag, and the
    progress of the restores under way."""
    if not stats:
        return
    partitions = stats.get("partitions", {})
    yield GaugeMetricFamily("ordertimeout_kafka_assigned_partitions", "Input partitions assigned to this worker.", value=len(partitions))
    lag = GaugeMetricFamily(
        "ordertimeout_kafka_partition_lag", "Records of a partition not yet processed (end offset - position).",
        labels=["topic", "partition"],
    )
    read = GaugeMetricFamily(
        "ordertimeout_kafka_restore_records_read", "State records read so far by a partition's restore under way.",
        labels=["topic", "partition"],
    )
    total = GaugeMetricFamily(
        "ordertimeout_kafka_restore_records", "State records a partition's restore under way reads in all.",
        labels=["topic", "partition"],
    )
    for partition in partitions.values():
        labels = [str(partition["topic"]), str(partition["partition"])]
        if partition.get("lag") is not None:
            lag.add_metric(labels, partition["lag"])
        if partition.get("restore") is not None:
            read.add_metric(labels, partition["restore"]["read"])
            total.add_metric(labels, partition["restore"]["total"])
    yield lag
    yield read
    yield total


def registry(collector: RunCollector) -> CollectorRegistry:
    """A registry with the run's collector and the standard process and Python metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry

"""A worker's figures: its counters over the partitions it owns and owned, their lag and
restores, and what the status line and ``/healthz`` say about it.

A mixin of :class:`~.worker.Worker` (its ``tasks``, ``reports``, ``_retired``...), apart
from the Kafka clients: reads only, nothing here talks to the broker.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from ...rules.clocks import elapsed_ms
from ...rules.matcher import COUNTER_NAMES
from ...rules.pipeline import TimeMode
from .partition import PartitionTask

__all__ = ["WorkerFigures", "SUMMED"]

#: Counters summed over partitions for the status line and the summary.
SUMMED = ("events", *COUNTER_NAMES, "late", "rejected")


class WorkerFigures:
    """The reading half of :class:`~.worker.Worker`."""

    def status_notice(self) -> str | None:
        """What the status line shows instead of figures: connecting, or restoring."""
        return self.notice or self.reports.restoring_text()

    def checkpoint_problem(self) -> str | None:
        """Why checkpoints do not complete (for /healthz), or None."""
        now = asyncio.get_running_loop().time()
        stuck = [task.stuck(now, self.bound) for task in list(self.tasks.values())]
        return self.reports.checkpoint_text([reason for reason in stuck if reason])

    def health_note(self) -> str | None:
        """A remark for a healthy /healthz: no partitions, or restoring."""
        if self._closing or self._consumer is None or self.rebalances == 0:
            return None
        return self.reports.restoring_text() or (None if self.tasks else "no partitions assigned")

    def _retire(self, task: PartitionTask, leaving: bool = False) -> None:
        """Keep a partition's share of the counters once it leaves this worker (and, when
        the worker stops, its open orders: they wait in its state for the next owner)."""
        self._time_mode = self._time_mode or task.pipeline.time_mode
        for name, value in self._share(task).items():
            self._retired[name] += value
        if leaving and task.baseline is not None:
            self._left_open += task.pipeline.pending
        self.reports.checkpoint(task.partition, None)

    @staticmethod
    def _share(task: PartitionTask) -> dict:
        if task.baseline is None:
            return {}
        now = task.pipeline.stats()
        return {name: now[name] - task.baseline[name] for name in SUMMED}

    def partition_figures(self) -> dict:
        """Per partition owned now: its topic, number, lag (records after the next offset
        to process, from the broker's last reported high watermark; None until known) and
        while it restores, the state records read and their number."""
        topic, consumer = self.settings.topic, self._consumer
        figures = {}
        for partition, task in sorted(self.tasks.items()):
            highwater = consumer.highwater(TopicPartition(topic, partition)) if consumer is not None else None
            lag = None if highwater is None or task.offset is None else max(0, highwater - task.offset)
            figures[str(partition)] = {"topic": topic, "partition": partition, "lag": lag}
            if partition in self.reports.restoring:
                read, total = self.reports.restoring[partition]
                figures[str(partition)]["restore"] = {"read": read, "total": total}
        return figures

    def stats(self) -> dict:
        """This worker's counters: what it decided here, plus the open orders of the
        partitions it owns now (once stopped: of those it held at the end)."""
        stats = dict(self._retired)
        pending = self._left_open
        for task in list(self.tasks.values()):
            for name, value in self._share(task).items():
                stats[name] += value
            pending += task.pipeline.pending if task.ready else 0
        stats["pending"] = pending
        stats["time_mode"] = self.time_mode.value if self.time_mode else None
        return stats

    @property
    def time_mode(self) -> TimeMode | None:
        """The time mode of the partitions seen so far (all share the options)."""
        if self._time_mode is None:
            for task in list(self.tasks.values()):
                if task.pipeline.time_mode is not None:
                    self._time_mode = task.pipeline.time_mode
        return self._time_mode

    @property
    def frontier(self) -> float:
        """Event time: the lowest frontier of the owned partitions (the slowest watermark)."""
        frontiers = [task.pipeline.frontier for task in list(self.tasks.values()) if task.ready]
        return min(frontiers) if frontiers else float("-inf")

    @property
    def elapsed_ms(self) -> int:
        """Milliseconds from the start of the run to its end (or to now)."""
        return elapsed_ms(self.clock, self.started_ms, self.finished_ms)

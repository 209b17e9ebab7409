"""What a worker tells about its place in the group: one log line per event, and the
texts the status line and ``/healthz`` show.

    worker ──joined, assigned, restoring (progress), restored, revoked, reconnected,
             checkpoint failed / written again, stop timed out──▶ Log (text or JSON)

Each event is one line as it happens (text, or JSON with ``--log-format json``: the
``fields`` carry ``event``, ``group``, ``topic`` and the partitions), flushed at once so
a worker under systemd or Kubernetes (stderr not a terminal) is heard while it runs.
"""

from __future__ import annotations

import time
from typing import Callable

from .connect import WorkerSettings

__all__ = ["Reports"]

#: Seconds between two log lines about one restore's progress.
RESTORE_LOG_EVERY = 5.0


class _Silent:
    def write(self, level: str, message: str, fields: dict) -> None:
        pass

    def flush(self) -> None:
        pass


class Reports:
    """The worker's group events, told to ``log`` (an :class:`~ordertimeout.observe.logs.Log`;
    None: told to nobody), and what is under way (restores, failed checkpoints).
    ``clock`` (monotonic seconds) paces the restore progress lines."""

    def __init__(self, settings: WorkerSettings, log=None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.log = log if log is not None else _Silent()
        #: The input topic's partition count (set once the topics are checked).
        self.partitions: int | None = None
        #: Partitions restoring now: (state records read, records to read).
        self.restoring: dict[int, tuple[int, int]] = {}
        self._failed: dict[int, str] = {}
        self._joined = False
        self._lost = False
        self._logged: dict[int, float] = {}

    def _tell(self, level: str, message: str, **fields) -> None:
        fields = {"group": self.settings.group, "topic": self.settings.topic, **fields}
        try:
            self.log.write(level, message, fields)
            self.log.flush()
        except OSError:
            pass  # stderr cannot be written: the work goes on

    # -- the group -------------------------------------------------------------------

    def assigned(self, partitions: list[int], rebalance: int) -> None:
        """A rebalance ended; ``partitions`` are this worker's input partitions now."""
        group, topic = self.settings.group, self.settings.topic
        event = "joined" if not self._joined else "assigned"
        opening = f"joined group {group}: " if not self._joined else f"group {group} rebalanced: "
        self._joined = True
        if partitions:
            self._tell("info", f"{opening}assigned {topic} partitions {_list(partitions)}", event=event,
                       partitions=partitions, rebalance=rebalance)
            return
        count = f" (it has {self.partitions})" if self.partitions is not None else ""
        self._tell("warning", f"{opening}no partitions assigned: the other workers hold every partition of "
                   f"{topic}{count}; this worker waits as a spare", event=event, partitions=[], rebalance=rebalance)

    def revoked(self, partitions: list[int]) -> None:
        """``partitions`` left this worker in a rebalance (checkpointed first)."""
        self._tell("info", f"group {self.settings.group}: revoked {self.settings.topic} partitions "
                   f"{_list(partitions)} (checkpointed)", event="revoked", partitions=partitions)

    def connection(self, attempt: int, reason: str | None) -> None:
        """The cluster stopped answering mid-run (``reason``), or answers again (None)."""
        bootstrap = self.settings.client.bootstrap
        if reason is not None:
            if not self._lost:
                self._lost = True
                self._tell("warning", f"lost the Kafka cluster at {bootstrap} ({reason}); reconnecting",
                           event="disconnected", bootstrap=bootstrap, reason=reason)
            return
        if self._lost:
            self._lost = False
            self._tell("info", f"reconnected to the Kafka cluster at {bootstrap}", event="reconnected",
                       bootstrap=bootstrap)

    # -- restores ----------------------------------------------------------------------

    def restore_progress(self, partition: int, read: int, total: int, started: float) -> None:
        """A restore has read ``read`` of ``total`` state records."""
        self.restoring[partition] = (read, total)
        now = self.clock()
        if read == 0:
            self._logged[partition] = now
            if total:
                self._tell("info", f"partition {partition}: restoring {total:,} state records from "
                           f"{self.settings.state_topic}", event="restoring", partition=partition, read=0, total=total)
            return
        if read < total and now - self._logged.get(partition, 0.0) >= RESTORE_LOG_EVERY:
            self._logged[partition] = now
            rate = read / max(now - started, 1e-9)
            self._tell("info", f"partition {partition}: restoring: {read:,} of {total:,} state records "
                       f"({read / total:.0%}, {rate:,.0f}/s)", event="restoring", partition=partition, read=read,
                       total=total)

    def restored(self, partition: int, orders: int, seconds: float) -> None:
        """A restore is done: ``orders`` open orders in ``seconds``."""
        self._logged.pop(partition, None)
        self._tell("info", f"partition {partition}: restored {orders:,} open orders in {seconds:.1f}s",
                   event="restored", partition=partition, orders=orders, seconds=round(seconds, 3))

    def restoring_text(self) -> str | None:
        """The restores under way, for the status line and /healthz (None: none)."""
        if not self.restoring:
            return None
        parts = []
        for partition, (read, total) in sorted(self.restoring.items()):
            share = f" ({read / total:.0%})" if total else ""
            parts.append(f"partition {partition} {read:,} of {total:,}{share}")
        return "restoring state: " + ", ".join(parts)

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint(self, partition: int, reason: str | None) -> None:
        """A checkpoint of ``partition`` failed (``reason``) or completed again (None)."""
        if reason is None:
            if self._failed.pop(partition, None) is not None:
                self._tell("info", f"partition {partition}: checkpoint written again", event="checkpoint",
                           partition=partition)
            return
        if partition not in self._failed:
            self._tell("warning", f"partition {partition}: checkpoint not completed: {reason}; "
                       "matching goes on, the next checkpoint tries again", event="checkpoint_failed",
                       partition=partition, reason=reason)
        self._failed[partition] = reason

    def checkpoint_text(self, stuck: list[str]) -> str | None:
        """Why checkpoints do not complete (failed ones, and ``stuck`` ones), or None."""
        reasons = [f"partition {partition}: {reason}" for partition, reason in sorted(self._failed.items())]
        reasons += stuck
        return "; ".join(reasons) or None

    def unexpected(self, message: str, error: BaseException | None) -> None:
        """An error no task waited for (one line, no traceback)."""
        what = f": {type(error).__name__}: {error}" if error is not None else ""
        self._tell("warning", f"{message}{what}", event="background_error")

    def stop_timed_out(self, partitions: list[int], budget: float) -> None:
        """Leaving partitions did not finish their last checkpoint within ``budget``."""
        self._tell("warning", f"partitions {_list(partitions)}: the last checkpoint did not complete within "
                   f"{budget:g}s (--drain-timeout + grace); the next owner reads again from the last saved "
                   "state", event="stop_timed_out", partitions=partitions)


def _list(partitions: list[int]) -> str:
    return ", ".join(str(partition) for partition in partitions)

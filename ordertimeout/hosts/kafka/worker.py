"""The worker: one member of the consumer group, hosting a task per assigned partition.

    input topic ──▶ consumer (group) ──batches──▶ PartitionTask per partition ──▶ results topic
                        │ rebalance listener          (pipeline, timers)        └─▶ stdout
                        │   assigned: pause, restore, seek, resume        ──▶ <group>-state
                        └── revoked: flush results, write state, commit   ──▶ group offsets
                                                                           └─▶ --webhook/--exec

With sinks (a :class:`~ordertimeout.notify.Notifier`), a partition commits only once the
results its offsets cover have left the in-memory outbox, so a crash loses none of them:
the next owner reads that input again. While the outbox is over ``--outbox-limit`` the
worker pauses its partitions (fetching stops, the group membership and heartbeats go on).

Records are JSON lines as for ``watch`` (the record value; the record key is not used
for grouping, the ``--key`` field is). The worker never ends on its own: it stops on a
signal, checkpointing every partition first, so a restart sends nothing twice. If the
cluster stops answering mid-run, the worker says so (``notice``) and keeps trying for
``--connect-timeout``; then it stops without saving more (nothing can be written) and
raises :class:`KafkaRunError`: the next owner reads again from the last saved state.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from ...rules.clocks import Clock, elapsed_ms
from ...rules.matcher import COUNTER_NAMES, Result
from ...rules.pipeline import Pipeline, TimeMode
from ...outputs.sinks import RejectReporter, ResultWriter, json_line
from .changelog import ChangelogError, Record, Restored, epoch_of, fold
from .connect import ClientSettings, KafkaRunError, WorkerSettings, check_topics, connect_admin, watch_cluster
from .partition import PartitionTask

__all__ = ["Worker", "WorkerSettings"]

# aiokafka logs every rebalance step as a warning; the worker reports what matters itself.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

#: Counters summed over partitions for the status line and the summary.
_SUMMED = ("events", *COUNTER_NAMES, "late", "rejected")


class Worker(ConsumerRebalanceListener):
    """One consumer-group member; ``run()`` until cancelled.

    ``make_pipeline()`` builds a fresh pipeline for each assigned partition; ``config``
    holds the settings that give state its meaning (checked against the changelog).
    The worker also answers ``stats()``, ``time_mode`` and ``frontier`` for the status
    line and the summary, over the partitions it owns now and owned before.
    """

    def __init__(self, settings: WorkerSettings, make_pipeline: Callable[[], Pipeline], config: dict,
                 clock: Clock, writer: ResultWriter, reporter: RejectReporter, notifier=None) -> None:
        self.settings = settings
        self.make_pipeline = make_pipeline
        self.config = config
        self.clock = clock
        self.writer = writer
        self.reporter = reporter
        self.notifier = notifier
        #: Seconds a leaving partition waits for its deliveries (None without sinks).
        self.drain_timeout: float | None = None
        if notifier is not None:
            notifier.track()
            self.drain_timeout = notifier.drain_timeout
        self.paused = False  # by backpressure: the outbox is over its limit
        self.tasks: dict[int, PartitionTask] = {}
        self.rebalances = 0
        self.produced = 0
        #: While connecting: what the status line says instead of figures.
        self.notice: str | None = None
        self.started_ms: int | None = None
        self.finished_ms: int | None = None
        self._retired = dict.fromkeys(_SUMMED, 0)
        self._time_mode: TimeMode | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._failure: BaseException | None = None
        #: Set once the cluster was unreachable for --connect-timeout: leave without saving.
        self._lost = False

    # -- running ---------------------------------------------------------------------

    async def run(self, on_retry: Callable[[int, str], None] | None = None) -> None:
        """Connect, join the group and process until cancelled; then checkpoint and leave."""
        self.started_ms = self.clock.now_ms()
        settings = self.settings
        watch: asyncio.Task | None = None
        try:
            on_retry = on_retry or (lambda attempt, reason: None)
            await self._connect(on_retry)
            consumer = self._consumer
            consumer.subscribe([settings.topic], listener=self)
            watch = asyncio.create_task(self._watch_cluster(on_retry), name="cluster-watch")
            watch.add_done_callback(self._task_done)
            while True:
                if self.notifier is not None:
                    self._pace()
                batches = await consumer.getmany(timeout_ms=200)
                if self._failure is not None:
                    raise self._failure
                for tp, records in batches.items():
                    task = self.tasks.get(tp.partition)
                    if task is not None and records:
                        await task.queue.put(records)
        except KafkaError as error:
            raise KafkaRunError(f"Kafka at {settings.client.bootstrap}: {error}") from None
        finally:
            if watch is not None:
                watch.cancel()
            try:
                await asyncio.shield(self._shutdown())
            finally:
                self.finished_ms = self.clock.now_ms()

    def _pace(self) -> None:
        """Pause every partition while the outbox is over its limit, resume the restored
        ones after. getmany goes on being called (returning nothing), so the consumer
        stays a live member of the group."""
        full = self.notifier.relay.full()
        if full and not self.paused:
            self.paused = True
            self._consumer.pause(*self._consumer.assignment())
        elif self.paused and not full:
            self.paused = False
            for task in list(self.tasks.values()):
                if task.ready:
                    self.resume(task.partition)

    async def _connect(self, on_retry: Callable[[int, str], None]) -> None:
        settings = self.settings
        bootstrap = settings.client.bootstrap

        def retrying(attempt: int, reason: str) -> None:
            self.notice = f"retrying ({attempt}): cannot reach {bootstrap}: {reason}"
            on_retry(attempt, reason)

        self.notice = f"connecting to {bootstrap}"
        admin = await connect_admin(settings.client, settings.connect_timeout, retrying)
        try:
            await check_topics(admin, bootstrap, settings.topic, settings.results_topic, settings.state_topic,
                               settings.create_topics, settings.replication)
        finally:
            await admin.close()
        client = settings.client.kwargs()
        self._producer = AIOKafkaProducer(**client, acks="all", linger_ms=5, request_timeout_ms=settings.request_timeout)
        self._consumer = AIOKafkaConsumer(
            **client, group_id=settings.group, enable_auto_commit=False, auto_offset_reset=settings.start,
            session_timeout_ms=settings.session_timeout, request_timeout_ms=settings.request_timeout,
            heartbeat_interval_ms=max(100, min(3000, settings.session_timeout // 5)),
        )
        try:
            for client_ in (self._producer, self._consumer):
                await client_.start()
        except KafkaError as error:
            raise KafkaRunError(f"cannot connect to {bootstrap}: {error}") from None
        self.notice = None

    async def _watch_cluster(self, on_retry: Callable[[int, str], None]) -> None:
        """getmany and produce retry for ever on their own: fail the run (leaving without
        saving) once the cluster has not answered for --connect-timeout."""
        bootstrap = self.settings.client.bootstrap

        def tell(attempt: int, reason: str | None) -> None:
            self.notice = None if reason is None else f"retrying ({attempt}): cannot reach {bootstrap}: {reason}"
            if reason is not None:
                on_retry(attempt, reason)

        try:
            await watch_cluster(self._consumer.topics, bootstrap, self.settings.connect_timeout,
                                self.settings.request_timeout, tell)
        except KafkaRunError:
            self._lost = True
            raise

    async def _shutdown(self) -> None:
        """Checkpoint every owned partition, then leave the group and close the clients.
        With the cluster lost, nothing can be saved: the partitions end where they are."""
        try:
            if self._lost:
                tasks, self.tasks = list(self.tasks.values()), {}
                await asyncio.gather(*(task.abandon() for task in tasks))
                for task in tasks:
                    self._retire(task)
                self.writer.flush()
            else:
                await self._stop_tasks(list(self.tasks))
        finally:
            for client in (self._consumer, self._producer):
                if client is not None:
                    try:
                        # Without a cluster, leaving the group and flushing would wait for ever.
                        async with asyncio.timeout(2.0 if self._lost else None):
                            await client.stop()
                    except (KafkaError, TimeoutError):
                        pass  # leaving anyway: the group notices by the session timeout
                    except asyncio.CancelledError:
                        # Shielded, so not ours: aiokafka's own tasks, cancelled by its
                        # stop() while the cluster is gone.
                        if not self._lost:
                            raise

    # -- the rebalance listener --------------------------------------------------------

    async def on_partitions_revoked(self, revoked) -> None:
        """Before a rebalance: each revoked partition writes out what it decided and commits."""
        await self._stop_tasks([tp.partition for tp in revoked if tp.topic == self.settings.topic])

    async def on_partitions_assigned(self, assigned) -> None:
        """After a rebalance: pause each new partition and start its task, which restores
        the state and resumes the partition at the offset after it."""
        self.rebalances += 1
        for tp in assigned:
            if tp.topic != self.settings.topic or tp.partition in self.tasks:
                continue
            self._consumer.pause(tp)
            task = PartitionTask(tp.partition, self.make_pipeline(), self, self.config, self.settings.checkpoint_every)
            self.tasks[tp.partition] = task
            task.start().add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _stop_tasks(self, partitions: list[int]) -> None:
        tasks = [self.tasks.pop(partition) for partition in partitions if partition in self.tasks]
        outcomes = await asyncio.gather(*(task.stop() for task in tasks), return_exceptions=True)
        for task in tasks:
            self._retire(task)
        self.writer.flush()
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
                # Raised inside the rebalance listener, aiokafka would only log it: the
                # main loop raises it on its next round.
                self._failure = self._failure or outcome
                raise outcome

    # -- what partition tasks ask of their host ------------------------------------------

    async def restore(self, partition: int) -> Restored:
        """Read partition ``partition`` of the state topic from its start to its end."""
        tp = TopicPartition(self.settings.state_topic, partition)
        # A consumer of its own per restore (no group): assigned the one partition, read, closed.
        consumer = AIOKafkaConsumer(**self.settings.client.kwargs(), enable_auto_commit=False,
                                    auto_offset_reset="earliest", request_timeout_ms=self.settings.request_timeout)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            records = []
            # An empty partition needs no fetch (which would wait for data that never comes).
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=500)
                records += [(record.key, record.value, epoch_of(record.headers)) for record in batch.get(tp, ())]
                # The fetch's high watermark can only be later than ListOffsets' answer
                # (which some brokers give as the start of the last batch).
                end = max(end, consumer.highwater(tp) or 0)
        finally:
            await consumer.stop()
        try:
            return fold(partition, records, self.config)
        except ChangelogError as error:
            raise KafkaRunError(f"{self.settings.state_topic}: {error}") from None

    async def start_position(self, partition: int, restored_offset: int | None) -> int:
        """Seek to the offset after the restored state (else the group's committed offset,
        else ``--start``) and return it."""
        tp = TopicPartition(self.settings.topic, partition)
        if restored_offset is not None:
            self._consumer.seek(tp, restored_offset)
            return restored_offset
        return await self._consumer.position(tp)

    def resume(self, partition: int) -> None:
        """Start fetching the partition again (unless paused by backpressure: later)."""
        if not self.paused:
            self._consumer.resume(TopicPartition(self.settings.topic, partition))

    async def send_result(self, result: Result) -> asyncio.Future:
        """Queue one result for the results topic; returns its delivery future."""
        self.produced += 1
        return await self._producer.send(
            self.settings.results_topic, json_line(result)[:-1], key=result.key.encode("utf-8", "surrogatepass")
        )

    async def send_state(self, partition: int, records: list[Record]) -> None:
        """Write one changelog batch and wait until the broker has all of it."""
        send = self._producer.send
        topic = self.settings.state_topic
        futures = [
            await send(topic, record.value, key=record.key, partition=partition, headers=record.headers)
            for record in records
        ]
        await asyncio.gather(*futures)

    async def commit(self, partition: int, offset: int) -> None:
        """Commit the group offset (for lag tools; the state's own offset is what counts)."""
        try:
            await self._consumer.commit({TopicPartition(self.settings.topic, partition): offset})
        except KafkaError:
            pass  # a rebalance under way: the state already says where this partition is

    def show(self, results: list[Result]) -> None:
        """Results to stdout (``--json`` or rows). Returns once every byte is written (the
        writer loops over partial writes, also when a stop signal interrupts one), so the
        results are shown before they are produced and before any commit covering them;
        a stop waits for a slow reader rather than cut the write."""
        self.writer.write(results)
        self.writer.flush()

    def deliver(self, results: list[Result]):
        """Results to the sinks; a future done once they left the outbox (or None)."""
        return None if self.notifier is None else self.notifier.add_tracked(results)

    def reject(self, partition: int, offset: int, reason: str, raw: bytes) -> None:
        """A record that is not an event: reported with its partition and offset."""
        self.reporter.report(f"{self.settings.topic}-{partition} offset", offset, reason, raw)
        self.reporter.flush()

    # -- figures -------------------------------------------------------------------------

    def _retire(self, task: PartitionTask) -> None:
        """Keep a partition's share of the counters once it leaves this worker."""
        self._time_mode = self._time_mode or task.pipeline.time_mode
        for name, value in self._share(task).items():
            self._retired[name] += value

    @staticmethod
    def _share(task: PartitionTask) -> dict:
        if task.baseline is None:
            return {}
        now = task.pipeline.stats()
        return {name: now[name] - task.baseline[name] for name in _SUMMED}

    def partition_figures(self) -> dict:
        """Per partition owned now: its topic, number and lag (records after the next offset
        to process, from the broker's last reported high watermark; None until known)."""
        topic, consumer = self.settings.topic, self._consumer
        figures = {}
        for partition, task in sorted(self.tasks.items()):
            highwater = consumer.highwater(TopicPartition(topic, partition)) if consumer is not None else None
            lag = None if highwater is None or task.offset is None else max(0, highwater - task.offset)
            figures[str(partition)] = {"topic": topic, "partition": partition, "lag": lag}
        return figures

    def stats(self) -> dict:
        """This worker's counters: what it decided here, plus the open orders it owns now."""
        stats = dict(self._retired)
        pending = 0
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

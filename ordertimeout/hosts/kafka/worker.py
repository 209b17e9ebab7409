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
signal, checkpointing every partition first, so a restart sends nothing twice. Every
wait on the broker is bounded: a stop (or a revocation) ends within ``--drain-timeout``
plus :data:`STOP_GRACE` seconds whatever the broker does, and a checkpoint that cannot
complete is reported (``checkpoint_problem``, for ``/healthz``). If the cluster stops
answering mid-run, the worker says so (``notice``) and keeps trying for
``--connect-timeout``; then it stops without saving more (nothing can be written) and
raises :class:`KafkaRunError`: the next owner reads again from the last saved state.
Joins, assignments, restores (with progress), revocations and reconnects are logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from ...rules.clocks import Clock
from ...rules.pipeline import Pipeline, TimeMode
from ...outputs.sinks import RejectReporter, ResultWriter
from .connect import (ClientSettings, KafkaRunError, WorkerSettings, check_topics, connect_admin, group_timeouts,
                      watch_cluster)
from .dead_letters import DeadLetters
from .partition import PartitionTask
from .produce import BATCH_BYTES, Outgoing
from .figures import SUMMED, WorkerFigures
from .services import TaskServices
from .reports import Reports

__all__ = ["Worker", "WorkerSettings", "ClientSettings", "STOP_GRACE"]

# aiokafka logs every rebalance step as a warning; the worker reports what matters itself.
logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

#: Records handed to a partition task at a time.
FEED_SLICE = 2000

#: Seconds a stop or a revocation may take beyond --drain-timeout (writing the last state
#: and committing); then what is not done is given up: the next owner reads it again.
STOP_GRACE = 5.0


class Worker(TaskServices, WorkerFigures, ConsumerRebalanceListener):
    """One consumer-group member; ``run()`` until cancelled.

    ``make_pipeline()`` builds a fresh pipeline for each assigned partition; ``config``
    holds the settings that give state its meaning (checked against the changelog);
    ``log`` (an :class:`~ordertimeout.observe.logs.Log`) gets one line per group event.
    The worker also answers ``stats()``, ``time_mode`` and ``frontier`` for the status
    line and the summary, over the partitions it owns now and owned before.
    """

    def __init__(self, settings: WorkerSettings, make_pipeline: Callable[[], Pipeline], config: dict,
                 clock: Clock, writer: ResultWriter, reporter: RejectReporter, notifier=None, log=None) -> None:
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
        self.reports = Reports(settings, log)
        self.paused = False  # by backpressure: the outbox is over its limit
        self.tasks: dict[int, PartitionTask] = {}
        self.rebalances = 0
        #: While connecting: what the status line says instead of figures.
        self.notice: str | None = None
        self.started_ms: int | None = None
        self.finished_ms: int | None = None
        self._retired = dict.fromkeys(SUMMED, 0)
        self._left_open = 0  # open orders of the partitions held when the worker stopped
        self._time_mode: TimeMode | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._outgoing: Outgoing | None = None
        self._restore_started: dict[int, float] = {}  # partitions restoring: since when
        self._failure: BaseException | None = None
        #: Set once the cluster was unreachable for --connect-timeout: leave without saving.
        self._lost = False
        self.dead_letters: DeadLetters | None = None  # with sinks: <group>-dead
        #: Set once the worker stops: an assignment met during the stop starts nothing.
        self._closing = False

    @property
    def bound(self) -> float:
        """Seconds any one request to the broker may take (--request-timeout)."""
        return self.settings.request_timeout / 1000

    @property
    def produced(self) -> int:
        """Results produced to the results topic."""
        return self._outgoing.results if self._outgoing is not None else 0

    # -- running ---------------------------------------------------------------------

    async def run(self, on_retry: Callable[[int, str], None] | None = None) -> None:
        """Connect, join the group and process until cancelled; then checkpoint and leave."""
        self.started_ms = self.clock.now_ms()
        settings = self.settings
        watch: asyncio.Task | None = None
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._unretrieved)
        try:
            on_retry = on_retry or (lambda attempt, reason: None)
            await self._connect(on_retry)
            if self.notifier is not None:
                self.dead_letters = DeadLetters.for_worker(self)
                await self.dead_letters.start()
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
                    # In slices: matching a slice holds the loop for milliseconds, not for a
                    # whole fetch, so the next fetches and the acks go on meanwhile.
                    for start in range(0, len(records) if task is not None else 0, FEED_SLICE):
                        await task.queue.put(records[start:start + FEED_SLICE])
        except KafkaError as error:
            raise KafkaRunError(f"Kafka at {settings.client.bootstrap}: {error}") from None
        finally:
            if watch is not None:
                watch.cancel()
            try:
                await asyncio.shield(self._shutdown())
            finally:
                self.finished_ms = self.clock.now_ms()
                loop.set_exception_handler(previous_handler)

    def _unretrieved(self, loop, context: dict) -> None:
        """aiokafka's own tasks and futures that end in an error nobody waits for any more
        (a commit given up after --request-timeout, a fetch cut short by a stop): the
        worker has reported what matters; anything else becomes one warning line, never
        a traceback."""
        error = context.get("exception")
        if isinstance(error, (KafkaError, asyncio.CancelledError, ConnectionError)):
            return
        self.reports.unexpected(context.get("message", "error in a background task"), error)

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
            async with asyncio.timeout(self.bound):
                self.reports.partitions = await check_topics(
                    admin, bootstrap, settings.topic, settings.results_topic, settings.state_topic,
                    settings.create_topics, settings.replication)
        except TimeoutError:
            raise KafkaRunError(f"the Kafka cluster at {bootstrap} did not answer about the topics "
                                f"within {self.bound:g}s (--request-timeout)") from None
        finally:
            await admin.close()
        client = settings.client.kwargs()
        self._producer = AIOKafkaProducer(**client, acks="all", linger_ms=5, max_batch_size=BATCH_BYTES,
                                          request_timeout_ms=settings.request_timeout)
        self._consumer = AIOKafkaConsumer(
            **client, group_id=settings.group, enable_auto_commit=False, auto_offset_reset=settings.start,
            **group_timeouts(settings.session_timeout), request_timeout_ms=settings.request_timeout,
            max_partition_fetch_bytes=1024 * 1024,
        )
        self._outgoing = Outgoing(self._producer, settings.results_topic, settings.state_topic)
        try:
            async with asyncio.timeout(settings.connect_timeout / 1000):
                for client_ in (self._producer, self._consumer):
                    await client_.start()
                await self._outgoing.start()
        except (KafkaError, TimeoutError) as error:
            raise KafkaRunError(f"cannot connect to {bootstrap}: {error or 'no answer'}") from None
        self.notice = None

    async def _watch_cluster(self, on_retry: Callable[[int, str], None]) -> None:
        """getmany and produce retry for ever on their own: fail the run (leaving without
        saving) once the cluster has not answered for --connect-timeout."""
        bootstrap = self.settings.client.bootstrap

        def tell(attempt: int, reason: str | None) -> None:
            self.notice = None if reason is None else f"retrying ({attempt}): cannot reach {bootstrap}: {reason}"
            if reason is not None:
                on_retry(attempt, reason)
            self.reports.connection(attempt, reason)

        try:
            await watch_cluster(self._consumer.topics, bootstrap, self.settings.connect_timeout,
                                self.settings.request_timeout, tell)
        except KafkaRunError:
            self._lost = True
            raise

    async def _shutdown(self) -> None:
        """Checkpoint every owned partition (within the stop budget), then leave the group
        and close the clients. With the cluster lost, nothing can be saved: the
        partitions end where they are."""
        self._closing = True
        try:
            if self._lost:
                await self._abandon(list(self.tasks), leaving=True)
            else:
                await self._stop_tasks(list(self.tasks), leaving=True)
        finally:
            # Leaving the group lets aiokafka finish a rebalance under way (its close awaits
            # it): an assignment then starts nothing, since the worker is closing.
            if self.dead_letters is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.dead_letters.stop(), self.bound)
            for client in (self._consumer, self._producer):
                if client is self._producer and self._outgoing is not None:
                    await self._outgoing.close()
                if client is not None:
                    try:
                        async with asyncio.timeout(2.0):
                            await client.stop()
                    except (KafkaError, TimeoutError):
                        pass  # leaving anyway: the group notices by the session timeout
                    except asyncio.CancelledError:
                        # Shielded, so not ours: aiokafka's own tasks, cancelled by its
                        # stop() while the cluster is gone.
                        if not self._lost:
                            raise
                if client is self._consumer and self.tasks:  # (started before the stop began)
                    await self._abandon(list(self.tasks), leaving=True)

    # -- the rebalance listener --------------------------------------------------------

    async def on_partitions_revoked(self, revoked) -> None:
        """Before a rebalance: each revoked partition writes out what it decided and commits."""
        mine = [tp.partition for tp in revoked if tp.topic == self.settings.topic and tp.partition in self.tasks]
        await self._stop_tasks(mine)
        if mine and not self._closing:
            self.reports.revoked(mine)

    async def on_partitions_assigned(self, assigned) -> None:
        """After a rebalance: pause each new partition and start its task, which restores
        the state and resumes the partition at the offset after it."""
        self.rebalances += 1
        if self._closing:
            return  # stopping: the partitions go to the others once this worker has left
        mine = sorted(tp.partition for tp in assigned if tp.topic == self.settings.topic)
        self.reports.assigned(mine, self.rebalances)
        for partition in mine:
            if partition in self.tasks:
                continue
            self._consumer.pause(TopicPartition(self.settings.topic, partition))
            task = PartitionTask(partition, self.make_pipeline(), self, self.config, self.settings.checkpoint_every)
            self.tasks[partition] = task
            task.start().add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _stop_tasks(self, partitions: list[int], leaving: bool = False) -> None:
        """Checkpoint and end the tasks of ``partitions``, within --drain-timeout plus
        STOP_GRACE: what is not done by then is given up (the next owner reads it again)."""
        tasks = [self.tasks.pop(partition) for partition in partitions if partition in self.tasks]
        if not tasks:
            return
        stops = [asyncio.ensure_future(task.stop()) for task in tasks]
        budget = (self.settings.drain_timeout if self.drain_timeout is None else self.drain_timeout) + STOP_GRACE
        _, late = await asyncio.wait(stops, timeout=budget)
        if late:
            for stop in late:
                stop.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            stuck = [task for task, stop in zip(tasks, stops) if stop in late]
            await asyncio.gather(*(task.abandon() for task in stuck))
            self.reports.stop_timed_out([task.partition for task in stuck], budget)
        for task in tasks:
            self._retire(task, leaving)
        self.writer.flush()
        for stop in stops:
            if not stop.cancelled() and stop.exception() is not None:
                # Raised inside the rebalance listener, aiokafka would only log it: the
                # main loop raises it on its next round.
                self._failure = self._failure or stop.exception()
                raise stop.exception()

    async def _abandon(self, partitions: list[int], leaving: bool = False) -> None:
        tasks = [self.tasks.pop(partition) for partition in partitions if partition in self.tasks]
        await asyncio.gather(*(task.abandon() for task in tasks))
        for task in tasks:
            self._retire(task, leaving)
        self.writer.flush()


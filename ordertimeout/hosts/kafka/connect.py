"""Reaching the cluster: client and worker settings (TLS, SASL, topics, timeouts),
connecting with retries, the topics.

Imported only by ``ordertimeout kafka`` (it loads aiokafka). Failures become
:class:`KafkaRunError` with a message naming what is wrong, never a traceback.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from ...errors import SourceError
from .changelog import state_topic

__all__ = ["ClientSettings", "WorkerSettings", "KafkaRunError", "connect_admin", "check_topics", "watch_cluster"]


class KafkaRunError(SourceError):
    """The cluster or its topics cannot be used; the message says what and where."""


@dataclass
class ClientSettings:
    """How every client of a worker reaches the cluster: aiokafka's connection options."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    extra: dict = field(default_factory=dict)

    def kwargs(self) -> dict:
        """Keyword arguments for any aiokafka client."""
        options = {"bootstrap_servers": self.bootstrap.split(","), "security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            options["ssl_context"] = context
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        options.update(self.extra)
        return options


async def connect_admin(settings: ClientSettings, timeout_ms: int,
                        on_retry: Callable[[int, str], None]) -> AIOKafkaAdminClient:
    """An admin client connected to the cluster, retrying until ``timeout_ms`` has passed.

    ``on_retry(attempt, reason)`` is told about each failed attempt (for the status line).
    """
    deadline = time.monotonic() + timeout_ms / 1000
    attempt, delay = 0, 0.2
    while True:
        attempt += 1
        admin = AIOKafkaAdminClient(**settings.kwargs(), request_timeout_ms=max(1000, min(timeout_ms, 30_000)))
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(0.1, remaining)):
                await admin.start()
            return admin
        except (KafkaError, OSError, TimeoutError) as error:
            await admin.close()
            reason = _describe(error)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaRunError(
                f"cannot reach the Kafka cluster at {settings.bootstrap} within {timeout_ms / 1000:g}s "
                f"(--connect-timeout): {reason}"
            )
        on_retry(attempt, reason)
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, 5.0)


async def watch_cluster(probe: Callable[[], Awaitable], bootstrap: str, timeout_ms: int, request_timeout_ms: int,
                        tell: Callable[[int, str | None], None]) -> None:
    """Run ``probe()`` (a cheap metadata request) every second, for ever. While it fails,
    ``tell(attempt, reason)``; once it answers again, ``tell(0, None)``; once it has failed
    for ``timeout_ms`` on end, raise :class:`KafkaRunError` naming the cluster."""
    loop = asyncio.get_running_loop()
    limit = timeout_ms / 1000
    probe_timeout = max(1.0, min(request_timeout_ms / 1000, 2.0))  # a metadata request is cheap
    lost_since, attempt = None, 0
    while True:
        await asyncio.sleep(1.0)
        try:
            async with asyncio.timeout(probe_timeout):
                await probe()
        except (KafkaError, OSError, TimeoutError):
            attempt += 1
            now = loop.time()
            lost_since = now if lost_since is None else lost_since
            if now - lost_since >= limit:
                raise KafkaRunError(
                    f"lost the Kafka cluster at {bootstrap}: no broker answered for "
                    f"{limit:g}s (--connect-timeout); state saved up to the last checkpoint"
                ) from None
            tell(attempt, "lost mid-run, no broker answered")
            continue
        if attempt:
            lost_since, attempt = None, 0
            tell(0, None)


def _describe(error: BaseException) -> str:
    if isinstance(error, (TimeoutError, KafkaConnectionError)):
        return "no broker answered"  # aiokafka's text lists address tuples: no help to a reader
    return str(error) or type(error).__name__


async def check_topics(admin: AIOKafkaAdminClient, bootstrap: str, topic: str, results_topic: str,
                       state_topic: str, create_partitions: int | None, replication: int = 1) -> int:
    """Make sure the three topics exist (creating the missing ones with ``replication``
    copies); return the input topic's partition count.

    The state topic must have one partition per input partition. Everything is checked
    before anything is created: an existing input topic decides the partition count of
    a state topic created here (``--create-topics N`` must then agree with it), so a
    mistyped N leaves no topic behind that blocks the next start.
    """
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in (topic, results_topic, state_topic) if name not in existing]
        if missing and create_partitions is None:
            raise KafkaRunError(
                f"missing topic{'s' if len(missing) > 1 else ''} on {bootstrap}: {', '.join(missing)} "
                "(create them, or pass --create-topics N to create them with N partitions)"
            )
        counts = await _partition_counts(admin, [name for name in (topic, state_topic) if name in existing])
    except KafkaError as error:
        raise KafkaRunError(f"cannot read the topics on {bootstrap}: {error}") from None
    inputs = counts.get(topic, create_partitions)
    if topic in counts and create_partitions is not None and missing and create_partitions != inputs:
        raise KafkaRunError(
            f"--create-topics {create_partitions} does not match {topic}, which has {inputs} partitions: "
            f"the state topic needs one partition per input partition (use --create-topics {inputs}); "
            "nothing was created"
        )
    if state_topic in counts and counts[state_topic] != inputs:
        raise KafkaRunError(
            f"{state_topic} has {counts[state_topic]} partitions and {topic} has {inputs}: the state topic "
            f"needs one partition per input partition. {_repair(bootstrap, state_topic, inputs)}"
        )
    if missing:
        try:
            await admin.create_topics([
                NewTopic(
                    name, inputs, replication,
                    # The changelog keeps the latest record per key: compaction bounds it.
                    topic_configs={"cleanup.policy": "compact"} if name == state_topic else {},
                )
                for name in missing
            ])
        except KafkaError as error:
            raise KafkaRunError(f"cannot create {', '.join(missing)} on {bootstrap}: {error}") from None
    return inputs


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    if not topics:
        return {}
    return {description["topic"]: len(description["partitions"]) for description in await admin.describe_topics(topics)}


def _repair(bootstrap: str, state_topic: str, partitions: int) -> str:
    """The commands that mend a state topic of the wrong size."""
    return (
        f"If it holds no state worth keeping (say a wrong --create-topics made it), delete it: "
        f"kafka-topics.sh --bootstrap-server {bootstrap} --delete --topic {state_topic} "
        f"(or: rpk topic delete {state_topic}), then start a worker with --create-topics {partitions}; "
        "the partitions then go on from the group's committed offsets"
    )


def group_timeouts(session_timeout: int) -> dict:
    """aiokafka's group settings for a member with ``session_timeout`` ms (--session-timeout):
    five heartbeats a session, so one or two lost to a busy loop do not cost the membership."""
    return {"session_timeout_ms": session_timeout,
            "heartbeat_interval_ms": max(100, min(3000, session_timeout // 5))}


@dataclass
class WorkerSettings:
    """What a worker reads, where it writes, and how it behaves in the group."""

    client: ClientSettings
    topic: str
    group: str
    results_topic: str
    start: str = "earliest"
    create_topics: int | None = None
    replication: int = 1
    connect_timeout: int = 30_000
    session_timeout: int = 10_000
    request_timeout: int = 30_000
    checkpoint_every: int = 1000
    #: Seconds a stop or a revocation waits for what is under way (--drain-timeout);
    #: the worker adds a few seconds to write the last state and commit, then leaves.
    drain_timeout: float = 30.0

    @property
    def state_topic(self) -> str:
        """The changelog topic, ``<group>-state``."""
        return state_topic(self.group)

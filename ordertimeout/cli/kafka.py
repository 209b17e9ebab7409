"""`ordertimeout kafka`: a consumer group of matchers on a Kafka topic.

The matching and time options are the very ``click`` options of ``watch`` (taken from
that command, so both always agree); aiokafka is imported only when this command runs.
"""

from __future__ import annotations

import gc
import sys

import click

from ..outputs import terminal
from ..rules.clocks import LoopClock
from ..rules.events import EventParser, EventSchema
from ..rules.pipeline import Pipeline, TimeMode
from ..outputs.rows import HumanFormatter
from ..outputs.sinks import JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from .build import _window_stats, check_event_options
from .common import _execute, _Run
from .deadline_options import deadlines_from
from .streams import _Stdout
from .options import _fields, output_options
from .metrics_options import metrics_options, monitor_from
from .notify_options import build_notifier, notify_options
from .options import Duration
from .settings_report import settings_of
from .watch import watch as _watch

#: The options of ``watch`` that mean the same here: what to match and how time runs.
SHARED_WATCH_OPTIONS = (
    "within", "key_field", "type_field", "create_type", "pay_type", "cancel_type", "time_field",
    "time_unit", "processing_time", "lateness", "idle", "max_future", "within_by", "deadline_field", "remind",
    "remind_before",
)


@click.command()
@click.option("--bootstrap", required=True, metavar="HOST:PORT[,...]", help="Kafka brokers to start from.")
@click.option("--topic", required=True, help="Input topic of order events (JSON values).")
@click.option("--group", required=True, help="Consumer group; its state lives in the topic GROUP-state.")
@click.option("--results-topic", required=True, help="Topic the results are produced to (key: the result's key).")
@click.option("--start", type=click.Choice(["earliest", "latest"]), default="earliest", show_default=True, help="Where a partition without state or committed offset starts.")
@click.option("--create-topics", type=click.IntRange(min=1), default=None, metavar="N", help="Create missing topics with N partitions (the state topic compacted).")
@click.option("--replication-factor", type=click.IntRange(min=1), default=1, show_default=True, help="Copies of each partition for topics made by --create-topics (3 on a production cluster).")
@click.option("--connect-timeout", type=Duration(), default="30s", show_default=True, help="Give up (exit 1) when the cluster cannot be reached for this long.")
@click.option("--session-timeout", type=Duration(), default="10s", show_default=True, help="A worker silent this long leaves the group and its partitions move.")
@click.option("--request-timeout", type=Duration(), default="30s", show_default=True, help="A broker request unanswered this long is given up (a state write or commit goes again with the next checkpoint, and /healthz says so); it also bounds joining the group.")
@click.option("--checkpoint-every", type=Duration(), default="1s", show_default=True, help="Longest time between two state writes and commits per partition.")
@click.option("--security-protocol", type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]), default="PLAINTEXT", show_default=True, help="How to talk to the brokers.")
@click.option("--sasl-mechanism", type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]), default=None, help="SASL login mechanism.")
@click.option("--sasl-username", default=None, help="SASL user.")
@click.option("--sasl-password", default=None, help="SASL password; prefer the variable ORDERTIMEOUT_SASL_PASSWORD, which ps does not show.")
@click.option("--ssl-cafile", type=click.Path(dir_okay=False, exists=True), default=None, help="CA bundle to verify the brokers (default: the system's).")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, exists=True), default=None, help="Client certificate for mutual TLS.")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, exists=True), default=None, help="Key of --ssl-certfile.")
@output_options
@notify_options
@metrics_options
def kafka(bootstrap, topic, group, results_topic, start, create_topics, replication_factor, connect_timeout, session_timeout,
          request_timeout, checkpoint_every, security_protocol, sasl_mechanism, sasl_username, sasl_password, ssl_cafile,
          ssl_certfile, ssl_keyfile, **params) -> None:
    """Match order events from a Kafka topic as one worker of a consumer group.

    Start the same command on as many machines as you like (up to one per partition):
    the group spreads the partitions, each partition has its own matcher and watermark,
    its state lives in the topic GROUP-state, and results go to --results-topic as the
    JSON objects --json prints. Stop with SIGTERM, SIGINT or SIGHUP: the worker saves
    its state and commits first, so a restart sends nothing twice. With --webhook or
    --exec, a partition commits only after its results are delivered (or dead), so a
    crashed worker's undelivered results are decided and sent again by the next owner.

    \b
    Examples:
      ordertimeout kafka --bootstrap localhost:9092 --topic orders --group ot \\
          --results-topic order-results --within 15m --idle 30s
      ordertimeout kafka ... --create-topics 12 --json | jq -c 'select(.result=="timeout")'
    """
    from ..hosts.kafka.connect import ClientSettings
    from ..hosts.kafka.worker import Worker, WorkerSettings

    drain_timeout = params["drain_timeout"] / 1000  # (build_notifier takes the delivery options)
    notifier = build_notifier(params)
    lateness, idle = params["lateness"], params["idle"]
    deadlines = deadlines_from(params, params["processing_time"])
    within = deadlines.plain_window
    check_event_options(match_mode=params["match_mode"], create_type=params["create_type"], pay_type=params["pay_type"],
                        cancel_type=params["cancel_type"], processing_time=params["processing_time"], idle=idle,
                        lateness=lateness)
    if sasl_mechanism and not security_protocol.startswith("SASL"):
        raise click.UsageError("--sasl-mechanism needs --security-protocol SASL_PLAINTEXT or SASL_SSL")
    schema = EventSchema(
        key_field=params["key_field"], type_field=params["type_field"], time_field=params["time_field"],
        create_type=params["create_type"], pay_type=params["pay_type"], cancel_type=params["cancel_type"],
        time_unit=params["time_unit"], **deadlines.schema_fields(),
    )
    time_mode = TimeMode.PROCESSING if params["processing_time"] else TimeMode.EVENT if deadlines.deadline_field else None

    def make_pipeline() -> Pipeline:
        return Pipeline(EventParser(schema), deadlines.matcher(params["match_mode"], params["paid_late"]),
                        time_mode=time_mode, lateness=lateness, idle=idle, max_future=params["max_future"])

    config = {
        "key": schema.key_field, "type_field": schema.type_field, "create_type": schema.create_type,
        "pay_type": schema.pay_type, "cancel_type": schema.cancel_type, "within_ms": within,
        "match": params["match_mode"], "lateness_ms": lateness, "paid_late_ms": params["paid_late"],
        **deadlines.config(),
    }
    color = params["color"]
    out = OutputBuffer(_Stdout(sys.stdout.buffer))  # every byte written, also when a stop interrupts
    if params["as_json"]:
        formatter = JsonFormatter()
    else:
        formatter = HumanFormatter(within, terminal.painter(sys.stdout, color), _fields(params["fields"]),
                                   params["local_time"])
    writer = ResultWriter(out, formatter, params["only"])
    err = terminal.AboveStatus(sys.stderr)
    monitor = monitor_from(params, err)
    reporter = RejectReporter(err, show_source=True, log=monitor.log)
    if notifier is not None:
        notifier.report_to(monitor.log.write)  # failing and recovered delivery, dead letters
    client = ClientSettings(
        bootstrap, security_protocol=security_protocol, sasl_mechanism=sasl_mechanism, sasl_username=sasl_username,
        sasl_password=sasl_password, ssl_cafile=ssl_cafile, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
    )
    settings = WorkerSettings(
        client, topic, group, results_topic, start=start, create_topics=create_topics, replication=replication_factor,
        connect_timeout=connect_timeout, session_timeout=session_timeout, request_timeout=request_timeout,
        checkpoint_every=checkpoint_every, drain_timeout=drain_timeout,
    )
    worker = Worker(settings, make_pipeline, config, LoopClock(), writer, reporter, notifier, log=monitor.log)
    if notifier is not None:
        # Each leaving partition waits --drain-timeout for its own deliveries; what is still
        # pending after that is not committed, so waiting once more at the end gains nothing.
        notifier.drain_timeout = 0
    # The worker stands in for the pipeline and the runtime of a local run: it answers
    # stats(), time_mode, frontier, clock, elapsed_ms and reporter over its partitions.
    run = _Run(
        worker, worker, out, writer, within, params["stats_path"], params["quiet"], color,
        {"within_ms": within, "match": params["match_mode"], **_window_stats(deadlines)},
        notice=worker.status_notice,
        progress=not params["quiet"] and not monitor.log.is_json
        and terminal.wants_progress(params["progress"], sys.stderr, None), err=err,
        settings=settings_of(click.get_current_context()) if params["verbose"] else None, monitor=monitor,
        notifier=notifier,
    )
    # /healthz: the input has failed while the cluster cannot be reached (retrying).
    monitor.health.probes["input"] = lambda: worker.notice if "cannot reach" in (worker.notice or "") else None
    # A checkpoint that cannot complete (state write or commit unanswered) is unhealthy;
    # a worker without partitions (a spare) or restoring is healthy, with a note.
    monitor.health.probes["checkpoint"] = worker.checkpoint_problem
    monitor.health.notes["kafka"] = worker.health_note
    told = False

    def on_retry(attempt: int, reason: str) -> None:
        nonlocal told
        if told or params["quiet"] or run.progress:
            return  # the status line shows it
        told = True
        monitor.log.warning(
            f"cannot reach the Kafka cluster at {bootstrap} ({reason}); retrying for up to "
            f"{connect_timeout / 1000:g}s (--connect-timeout)", bootstrap=bootstrap, reason=reason,
        )

    async def consume() -> None:
        try:
            await worker.run(on_retry)
        finally:
            run.extra_stats.update(rebalances=worker.rebalances, produced=worker.produced)

    # The worker makes a few objects per record (the client's records, results, batches)
    # that die young: collecting every 700 allocations took a quarter of its CPU
    # (measured, 300k events); every 100,000 it is a few percent, memory barely moves.
    gc.set_threshold(100_000, 50, 100)
    _execute(run, consume)


# The matching and time options are watch's own option objects, so the two never drift.
kafka.params.extend(param for param in _watch.params if param.name in SHARED_WATCH_OPTIONS)

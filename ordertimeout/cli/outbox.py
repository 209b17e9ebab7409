"""`ordertimeout outbox STATE`: what waits for delivery in a state file, and dead letters back.

Both work while a run holds the file: the list is the file as of the run's last commit,
and ``--retry-dead`` becomes a request the run carries out (it alone writes the file).
``ordertimeout outbox --kafka ...`` does the same for a consumer group's dead letters,
kept in the topic ``<group>-dead`` (see :mod:`..hosts.kafka.dead_letters`).
"""

from __future__ import annotations

import asyncio
import copy
import sys
import time

import click
import orjson
from click.core import ParameterSource

from ..notify.outbox import OutboxError, dead_letters
from ..notify.outbox_file import in_use, read_rows, request_retry, retry_dead
from ..outputs.rows import format_time
from .kafka import kafka as _kafka

#: The options of ``kafka`` that say how to reach the cluster, and which group.
KAFKA_OPTIONS = ("bootstrap", "group", "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
                 "ssl_cafile", "ssl_certfile", "ssl_keyfile", "request_timeout")


OUTBOX_EXAMPLES = """\b
Examples:
  ordertimeout outbox orders.db
  ordertimeout outbox orders.db --json | jq -c 'select(.state == "dead")'
  ordertimeout outbox orders.db --retry-dead     # after the endpoint is fixed
  ordertimeout outbox --kafka --bootstrap localhost:9092 --group ot [--retry-dead]

Both work while a watch holds the file: the list shows its last checkpoint, and
--retry-dead asks the running watch, which moves them back within a second.
"""


@click.command(epilog=OUTBOX_EXAMPLES)
@click.argument("state_path", metavar="[STATE]", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--kafka", "use_kafka", is_flag=True,
              help="The dead letters of an `ordertimeout kafka` group (the topic GROUP-dead) instead of a state "
              "file: give --bootstrap and --group as to `kafka`.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row, for jq and programs.")
@click.option("--retry-dead", is_flag=True,
              help="Move every dead letter back to pending, with a fresh --deliver-max-age (after the endpoint "
              "is fixed): a running watch holding STATE delivers them at once, otherwise the next run does.")
def outbox(state_path, as_json, use_kafka, **options) -> None:
    """List the results waiting for delivery (pending) and given up (dead) in a --state file,
    oldest first, also while a watch runs on it (or, with --kafka, a group's dead letters).
    """
    if use_kafka:
        if state_path is not None:
            raise click.UsageError("give STATE or --kafka, not both")
        return _kafka_outbox(as_json, options)
    if state_path is None:
        raise click.UsageError("give the --state file (STATE), or --kafka with --bootstrap and --group")
    context = click.get_current_context()
    given = [name for name in KAFKA_OPTIONS if context.get_parameter_source(name) is ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--{given[0].replace('_', '-')} is for --kafka")
    try:
        if options["retry_dead"]:
            if in_use(state_path):
                moved = request_retry(state_path)
                click.echo(f"ordertimeout: the running ordertimeout moved {dead_letters(moved)} back to pending; "
                           "it delivers them now", err=True)
            else:
                moved = retry_dead(state_path, time.time_ns() // 1_000_000)
                click.echo(f"ordertimeout: {dead_letters(moved)} moved back to pending; the next run with "
                           "this --state delivers them", err=True)
            return
        running = in_use(state_path)
        rows = read_rows(state_path)
    except OutboxError as error:
        raise click.ClickException(str(error)) from None
    _write_rows(rows, as_json)
    pending = sum(not entry.dead for entry in rows)
    as_of = " (as of the last checkpoint of the ordertimeout running on it)" if running else ""
    click.echo(f"ordertimeout: {pending:,} pending, {len(rows) - pending:,} dead{as_of}", err=True)


def _write_rows(rows, as_json: bool, states=None) -> None:
    out = sys.stdout.buffer
    for number, entry in enumerate(rows):
        if as_json:
            state = states[number] if states is not None else "dead" if entry.dead else "pending"
            record = {"state": state, "sink": entry.sink, "id": entry.id,
                      "key": entry.key, "decided": entry.enqueued, "attempts": entry.attempts,
                      "next_attempt": None if entry.dead else entry.next_attempt, "last_error": entry.last_error,
                      "result": orjson.loads(entry.body)}
            out.write(orjson.dumps(record) + b"\n")
        else:
            state = (states[number] if states is not None else "dead" if entry.dead else "pending").ljust(8)
            when = "" if entry.dead or states is not None else f"next {format_time(entry.next_attempt)}"
            row = "  ".join((state, f"{entry.sink:<7}", entry.id, f"attempts {entry.attempts}", when, entry.last_error))
            out.write(row.rstrip().encode("utf-8", "backslashreplace") + b"\n")
    out.flush()


def _kafka_outbox(as_json: bool, options: dict) -> None:
    """``--kafka``: list the group's dead letters, or re-queue them to its running workers."""
    if not options["bootstrap"] or not options["group"]:
        raise click.UsageError("--kafka needs --bootstrap and --group (as given to `ordertimeout kafka`)")
    from ..hosts.kafka.connect import ClientSettings, KafkaRunError
    from ..hosts.kafka.dead_letters import DEAD, dead_topic, read_dead_letters, requeue

    client = ClientSettings(
        options["bootstrap"], security_protocol=options["security_protocol"], sasl_mechanism=options["sasl_mechanism"],
        sasl_username=options["sasl_username"], sasl_password=options["sasl_password"],
        ssl_cafile=options["ssl_cafile"], ssl_certfile=options["ssl_certfile"], ssl_keyfile=options["ssl_keyfile"])
    group, timeout = options["group"], options["request_timeout"]
    topic = dead_topic(group)
    try:
        letters = asyncio.run(read_dead_letters(client, group, timeout))
        if options["retry_dead"]:
            dead = [entry for state, entry in letters if state == DEAD]
            asked = asyncio.run(requeue(client, group, dead, timeout))
            click.echo(f"ordertimeout: {dead_letters(asked)} re-queued in {topic}; a running worker of {group} "
                       "delivers them (it says so on stderr), or the next one started", err=True)
            return
    except KafkaRunError as error:
        raise click.ClickException(str(error)) from None
    _write_rows([entry for _, entry in letters], as_json, [state for state, _ in letters])
    dead = sum(state == DEAD for state, _ in letters)
    click.echo(f"ordertimeout: {dead:,} dead, {len(letters) - dead:,} re-queued (in {topic})", err=True)


def _kafka_option(name: str) -> click.Option:
    """``kafka``'s own option (so both always agree), optional here: only --kafka uses it."""
    param = copy.copy(next(param for param in _kafka.params if param.name == name))
    param.required = False
    return param


outbox.params.extend(_kafka_option(name) for name in KAFKA_OPTIONS)

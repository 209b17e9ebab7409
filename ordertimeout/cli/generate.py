"""`ordertimeout generate`: deterministic synthetic traffic."""

from __future__ import annotations

import random
import sys

import click

from ..inputs.simulator import generate_traffic
from ..outputs.sinks import OutputBuffer
from .common import EXIT_BROKEN_PIPE, Duration, _silence_stdout

GENERATE_EXAMPLES = """\b
Examples:
  ordertimeout generate --events 20 --users 3 | ordertimeout watch
  ordertimeout generate --events 1000000 --users 100000 -o big.jsonl
"""


@click.command(epilog=GENERATE_EXAMPLES)
@click.option("--events", "event_count", type=click.IntRange(min=0), default=1000, show_default=True, help="Number of events to write.")
@click.option("--users", type=click.IntRange(min=1), default=100, show_default=True, help="Number of distinct users (keys).")
@click.option("--pay-ratio", type=click.FloatRange(0, 1), default=0.7, show_default=True, help="Share of orders that get a pay (some pay too late).")
@click.option("--within", type=Duration(), default="1s", show_default=True, help="The window the pay delays are spread around.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=10_000.0, show_default=True, help="Events per second of event time.")
@click.option("--disorder", type=Duration(allow_zero=True), default="0", show_default=True, help="Shuffle events within this bound (watch them with --lateness of at least as much).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: the same seed gives the same bytes.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-", help="Write to FILE instead of stdout.")
def generate(event_count, users, pay_ratio, within, rate, disorder, seed, output) -> None:
    """Write synthetic shop traffic as JSON lines, deterministic by --seed.

    Events carry userId, type, orderId, amount and ts (epoch ms), in time order
    unless --disorder is given.
    """
    lines = generate_traffic(
        random.Random(seed), events=event_count, users=users, pay_ratio=pay_ratio,
        within_ms=within, rate_per_s=rate, disorder_ms=disorder,
    )
    try:
        target = sys.stdout.buffer if output == "-" else open(output, "wb")
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
    out = OutputBuffer(target)
    name = "stdout" if output == "-" else output
    try:
        for line in lines:
            out.write(line + b"\n")
        out.flush()
    except BrokenPipeError:
        _silence_stdout()
        sys.exit(EXIT_BROKEN_PIPE)  # the reader left (| head), as for watch
    except OSError as error:  # a full disk
        _silence_stdout()
        raise click.ClickException(f"cannot write {name}: {error.strerror or error}") from None
    finally:
        if target is not sys.stdout.buffer:
            try:
                target.close()
            except OSError:
                pass  # the write that failed was reported

"""The command line: validate options, build the pipeline, run it, report. Nothing else.

Library errors become ``click`` errors here: usage mistakes exit 2, run failures print
``Error: ...`` and exit 1, a reader that leaves (``| head``) ends the run quietly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import click
import orjson

from . import __version__
from .clocks import LoopClock
from .durations import DurationError, format_duration, parse_duration
from .events import TIME_UNITS, EventParser, EventSchema
from .matcher import Matcher, Mode
from .pipeline import Pipeline, TimeMode
from .runtime import Runtime, StrictStop
import random

from .simulator import cycle_events, generate_traffic
from .sinks import HumanFormatter, JsonFormatter, OutputBuffer, RejectReporter, ResultWriter
from .sources import ChunkReader, Input, SourceError


class Duration(click.ParamType):
    """A click parameter for durations like ``1s``, ``250ms``, ``1h30m`` (milliseconds)."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: Any, param, ctx) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value), allow_zero=self.allow_zero)
        except DurationError as error:
            self.fail(str(error), param, ctx)


def _common_output_options(function: Callable) -> Callable:
    options = [
        click.option("--json", "as_json", is_flag=True, help="One JSON object per result per line, e.g. for jq."),
        click.option(
            "--only",
            type=click.Choice(["success", "timeout"]),
            help="Print one kind of result only (statistics still count both). Example: --only timeout",
        ),
        click.option(
            "--stats",
            "stats_path",
            type=click.Path(dir_okay=False, writable=True),
            help="At exit, write the run's counters as a JSON object to FILE. Example: --stats stats.json",
        ),
        click.option("--quiet", "-q", is_flag=True, help="No summary on stderr at exit."),
        click.option(
            "--match",
            "match_mode",
            type=click.Choice([mode.value for mode in Mode]),
            default=Mode.EACH.value,
            show_default=True,
            help="each: every create gets one result; next: Flink .next(); followed-by: Flink .followedBy().",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@dataclass
class _Run:
    """What one command run needs at its end: where to report and what to count."""

    pipeline: Pipeline
    runtime: Runtime
    out: OutputBuffer
    stats_path: str | None
    quiet: bool
    extra_stats: dict = field(default_factory=dict)
    stop_signal: int | None = None


def _painter(color: str) -> Callable[[str, str], str] | None:
    """Terminal codes for our styles, decided by rich (terminal or not, NO_COLOR, --color)."""
    from rich.console import Console
    from rich.text import Text

    if color == "never":
        return None
    console = Console(file=sys.stdout, force_terminal=True if color == "always" else None)
    if console.no_color or console.color_system is None:
        return None
    styles = {"success": "bold green", "timeout": "bold red", "cancelled": "yellow", "dim": "dim"}
    codes = {}
    for name, style in styles.items():
        with console.capture() as captured:
            console.print(Text("\0", style=style), end="")
        codes[name] = tuple(captured.get().split("\0", 1))
    return lambda style, text: codes[style][0] + text + codes[style][1]


def _build(
    *,
    within: int,
    match_mode: str,
    as_json: bool,
    only: str | None,
    quiet: bool,
    stats_path: str | None,
    schema: EventSchema,
    time_mode: TimeMode | None,
    lateness: int,
    rejects_path: str | None,
    strict: bool,
    show_source: bool,
) -> _Run:
    out = OutputBuffer(sys.stdout.buffer)
    formatter = JsonFormatter() if as_json else HumanFormatter(within, _painter("auto"))
    rejects = None
    if rejects_path is not None:
        try:
            rejects = open(rejects_path, "ab")
        except OSError as error:
            raise click.ClickException(f"cannot open {rejects_path}: {error.strerror}") from None
    reporter = RejectReporter(sys.stderr, rejects, show_source=show_source)
    pipeline = Pipeline(
        EventParser(schema), Matcher(within, match_mode), time_mode=time_mode, lateness=lateness
    )
    runtime = Runtime(pipeline, LoopClock(), ResultWriter(out, formatter, only), reporter, strict=strict)
    return _Run(pipeline, runtime, out, stats_path, quiet, {"within_ms": within, "match": match_mode})


async def _until_signal(run: _Run, main: Callable[[], Any]) -> None:
    """Run ``main``; SIGINT or SIGTERM stops it in order, a second one exits at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if run.stop_signal is not None:
            os._exit(128 + signum)  # the second Ctrl-C: the user wants out now
        run.stop_signal = signum
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await main()
    except asyncio.CancelledError:
        if run.stop_signal is None:
            raise
        task.uncancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _execute(run: _Run, main: Callable[[], Any]) -> None:
    """Run ``main`` (a coroutine function) and report, turning failures into clean exits.

    Stopped by a signal, the run writes every result already decided, reports the
    still-open orders as pending and exits with 128 + the signal number (130, 143).
    """
    exit_code = 0
    broken_pipe = False
    try:
        asyncio.run(_until_signal(run, main))
        if run.stop_signal is not None:
            exit_code = 128 + run.stop_signal
            run.out.flush()
    except BrokenPipeError:
        broken_pipe = True
        _silence_stdout()
    except StrictStop:
        exit_code = 1
    except SourceError as error:
        _flush_quietly(run.out)
        _finish(run, quiet=run.quiet)
        raise click.ClickException(str(error)) from None
    _finish(run, quiet=run.quiet or broken_pipe)
    if exit_code:
        sys.exit(exit_code)


def _flush_quietly(out: OutputBuffer) -> None:
    try:
        out.flush()
    except BrokenPipeError:
        _silence_stdout()


def _silence_stdout() -> None:
    """After the reader of stdout left, point fd 1 at /dev/null so exit flushes stay quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (e.g. under a test runner): nothing to silence


def _finish(run: _Run, quiet: bool) -> None:
    stats = run.pipeline.stats()
    stats["elapsed_s"] = round(run.runtime.elapsed_ms / 1000, 3)
    stats.update(run.extra_stats)
    run.runtime.reporter.close()
    if run.stats_path is not None:
        try:
            with open(run.stats_path, "wb") as handle:
                handle.write(orjson.dumps(stats, option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as error:
            raise click.ClickException(f"cannot write {run.stats_path}: {error.strerror}") from None
    if not quiet:
        click.echo(_summary(stats), err=True)


def _summary(stats: dict) -> str:
    mode = stats["time_mode"] or "no events"
    parts = [
        f"{stats['events']} events",
        f"{stats['success']} success",
        f"{stats['timeout']} timeout",
    ]
    for name in ("cancelled", "discarded", "unmatched_pays", "late", "rejected", "pending"):
        if stats.get(name) or name in ("late", "rejected", "pending"):
            parts.append(f"{stats[name]} {name.replace('_', ' ')}")
    return f"ordertimeout: {', '.join(parts)} ({mode} time, {stats['elapsed_s']:.2f}s)"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ordertimeout")
def main() -> None:
    """Find orders that were created and not paid within a time limit.

    \b
    Examples:
      ordertimeout simulate
      cat events.jsonl | ordertimeout watch --within 1s
      ordertimeout watch events.jsonl --json | jq 'select(.result == "timeout")'
    """


@main.command()
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--within", type=Duration(), default="1s", show_default=True, help="The time limit to pay, e.g. 1s, 250ms, 1.5s, 10m, 1h30m, 2d.")
@_common_output_options
@click.option("--key", "key_field", default="userId", show_default=True, help="Field that groups events (dotted paths reach nested fields). Example: --key order.user.id")
@click.option("--type-field", default="type", show_default=True, help="Field holding the event type. Example: --type-field event")
@click.option("--create-type", default="create", show_default=True, help="Type value of an order creation. Example: --create-type order_created")
@click.option("--pay-type", default="pay", show_default=True, help="Type value of a payment. Example: --pay-type order_paid")
@click.option("--time-field", default="ts", show_default=True, help="Field holding the event time. Example: --time-field meta.ts")
@click.option("--time-unit", type=click.Choice(list(TIME_UNITS)), default="ms", show_default=True, help="Unit of numeric times (ISO-8601 strings are also read). Example: --time-unit s")
@click.option("--processing-time", is_flag=True, help="Use arrival time even when events carry a time field.")
@click.option("--lateness", type=Duration(allow_zero=True), default="0", show_default=True, help="Bounded out-of-orderness in event time. Example: --lateness 500ms")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), help="Append every unused input line (malformed, late) to FILE as JSON. Example: --rejects rejects.jsonl")
@click.option("--strict", is_flag=True, help="Stop at the first rejected line with exit status 1.")
def watch(files, within, as_json, only, stats_path, quiet, match_mode, key_field, type_field, create_type, pay_type, time_field, time_unit, processing_time, lateness, rejects_path, strict) -> None:
    """Match order events read as JSON lines from FILES (or stdin) and print results.

    \b
    Examples:
      cat events.jsonl | ordertimeout watch --within 1s
      ordertimeout watch sample_data/orders.jsonl --json | jq -c 'select(.result=="timeout")'
      ordertimeout watch --processing-time --within 30s -
    """
    inputs = _inputs(files)
    schema = EventSchema(
        key_field=key_field,
        type_field=type_field,
        time_field=time_field,
        create_type=create_type,
        pay_type=pay_type,
        time_unit=time_unit,
    )
    run = _build(
        within=within,
        match_mode=match_mode,
        as_json=as_json,
        only=only,
        quiet=quiet,
        stats_path=stats_path,
        schema=schema,
        time_mode=TimeMode.PROCESSING if processing_time else None,
        lateness=lateness,
        rejects_path=rejects_path,
        strict=strict,
        show_source=len(inputs) > 1,
    )
    _execute(run, lambda: run.runtime.watch(ChunkReader(inputs)))


def _inputs(files: tuple[str, ...]) -> list[Input]:
    """The inputs to read, checked up front so a typo fails before any output."""
    if not files:
        files = ("-",)
    inputs = []
    for path in files:
        if path == "-":
            inputs.append(Input("<stdin>", stream=sys.stdin.buffer))
            continue
        try:
            os.close(os.open(path, os.O_RDONLY))
        except OSError as error:
            raise click.ClickException(f"cannot open {path}: {error.strerror}") from None
        if os.path.isdir(path):
            raise click.ClickException(f"cannot read {path}: it is a directory")
        inputs.append(Input(path, path=path))
    return inputs


@main.command()
@click.option("--within", type=Duration(), default="1.5s", show_default=True, help="The time limit to pay. --within 1s reproduces the original demo. Example: --within 1s")
@click.option("--interval", type=Duration(), default="1s", show_default=True, help="Time between simulated events. Example: --interval 20ms")
@click.option("--count", type=click.IntRange(min=0), default=None, help="Stop after N events (default: run forever). Example: --count 30")
@_common_output_options
def simulate(within, interval, count, as_json, only, stats_path, quiet, match_mode) -> None:
    """Run the built-in demo: user 1 creates and never pays, user 2 creates and pays.

    One event every --interval, matched in event time as it happens.

    \b
    Examples:
      ordertimeout simulate
      ordertimeout simulate --within 1s          # the original demo: every pay is too late
      ordertimeout simulate --count 30 --interval 20ms --within 30ms --json
    """
    run = _build(
        within=within,
        match_mode=match_mode,
        as_json=as_json,
        only=only,
        quiet=quiet,
        stats_path=stats_path,
        schema=EventSchema(),
        time_mode=TimeMode.EVENT,
        lateness=0,
        rejects_path=None,
        strict=False,
        show_source=False,
    )

    async def simulation() -> None:
        start = run.runtime.clock.now_ms()
        await run.runtime.simulate(cycle_events(start, interval, count))

    _execute(run, simulation)


@main.command()
@click.option("--events", "event_count", type=click.IntRange(min=0), default=1000, show_default=True, help="Number of events to write. Example: --events 1000000")
@click.option("--users", type=click.IntRange(min=1), default=100, show_default=True, help="Number of distinct users (keys). Example: --users 100000")
@click.option("--pay-ratio", type=click.FloatRange(0, 1), default=0.7, show_default=True, help="Share of orders that get a pay (some pay too late). Example: --pay-ratio 0.5")
@click.option("--within", type=Duration(), default="1s", show_default=True, help="The window the pay delays are spread around. Example: --within 15m")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=10_000.0, show_default=True, help="Events per second of event time. Example: --rate 100")
@click.option("--disorder", type=Duration(allow_zero=True), default="0", show_default=True, help="Shuffle events within this bound (use --lateness of at least as much). Example: --disorder 500ms")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: the same seed gives the same bytes. Example: --seed 42")
@click.option("--output", "-o", type=click.Path(dir_okay=False, allow_dash=True), default="-", help="Write to FILE instead of stdout. Example: -o events.jsonl")
def generate(event_count, users, pay_ratio, within, rate, disorder, seed, output) -> None:
    """Write synthetic shop traffic as JSON lines, deterministic by --seed.

    Events carry userId, type, orderId, amount and ts (epoch ms), in time order
    unless --disorder is given.

    \b
    Examples:
      ordertimeout generate --events 20 --users 3 | ordertimeout watch
      ordertimeout generate --events 1000000 --users 100000 -o big.jsonl
    """
    lines = generate_traffic(
        random.Random(seed),
        events=event_count,
        users=users,
        pay_ratio=pay_ratio,
        within_ms=within,
        rate_per_s=rate,
        disorder_ms=disorder,
    )
    try:
        target = sys.stdout.buffer if output == "-" else open(output, "wb")
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
    out = OutputBuffer(target)
    try:
        for line in lines:
            out.write(line + b"\n")
        out.flush()
    except BrokenPipeError:
        _silence_stdout()
    finally:
        if target is not sys.stdout.buffer:
            target.close()

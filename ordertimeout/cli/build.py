"""Building one run from a command's options: the pipeline, the runtime and the sinks
(``watch``, ``simulate``; ``kafka`` shares the checks), and the checks that refuse options
contradicting each other."""

from __future__ import annotations

import sys

import click

from ..hosts.runtime import MAX_LINE_BYTES, Runtime
from ..outputs import terminal
from ..outputs.rows import HumanFormatter
from ..outputs.sinks import JsonFormatter, OutputBuffer, ResultWriter
from ..rules.clocks import LoopClock
from ..rules.events import EventParser, EventSchema
from ..rules.matcher import Mode
from ..rules.pipeline import Pipeline, TimeMode
from .common import _is_terminal, _Run
from .deadline_options import Deadlines
from .metrics_options import monitor_from
from .options import _fields
from .settings_report import settings_of
from .streams import _DiagnosingReporter, _Stdout

__all__ = ["check_event_options", "_build", "stdin_hint"]


def check_event_options(*, match_mode: str, create_type: str, pay_type: str, cancel_type: str | None,
                        processing_time: bool, idle: int | None, lateness: int) -> None:
    """Refuse the event options that contradict each other (``watch`` and ``kafka`` alike)."""
    if cancel_type is not None and match_mode != Mode.EACH.value:
        raise click.UsageError("--cancel-type works with --match each only (Flink's modes have no cancel)")
    if processing_time and (idle is not None or lateness):
        raise click.UsageError("--idle and --lateness are for event time; processing time has no disorder to wait for")
    # One value for two kinds: the parser would take every such event as the first of
    # them (a pay as a create), so the run would quietly report nothing or the wrong kind.
    named = [("--create-type", create_type), ("--pay-type", pay_type), ("--cancel-type", cancel_type)]
    for index, (option, value) in enumerate(named):
        for other, other_value in named[index + 1 :]:
            if value is not None and value == other_value:
                raise click.UsageError(f"{option} and {other} are both {value!r}: each type needs its own value")


def _build(params: dict, schema: EventSchema, time_mode: TimeMode | None, *, deadlines: Deadlines,
           rejects_path=None, strict=False, show_source=False, lateness=0, idle=None,
           max_line_bytes=MAX_LINE_BYTES, stdin=None, reads_stdin=True) -> _Run:
    """The pipeline, runtime and sinks for one run, from the command's options.

    ``deadlines``: the windows and reminders (:func:`.deadline_options.deadlines_from`).
    ``stdin``: the process's stdin, and ``reads_stdin`` whether events come from it (they
    decide ``--progress`` auto).
    """
    from .notify_options import build_notifier  # (that module builds on this one)

    notifier = build_notifier(params)
    within, color = deadlines.plain_window, params["color"]
    if sys.stdout is None or sys.stderr is None:  # started with `>&-` or `2>&-`
        raise click.ClickException("cannot write: stdout or stderr is closed")
    out = OutputBuffer(_Stdout(sys.stdout.buffer))
    if params["as_json"]:
        formatter = JsonFormatter()
    else:
        formatter = HumanFormatter(within, terminal.painter(sys.stdout, color), _fields(params["fields"]),
                                   params["local_time"])
    rejects = None
    if rejects_path is not None:
        try:
            rejects = open(rejects_path, "ab")
        except OSError as error:
            raise click.BadParameter(f"cannot write {rejects_path}: {error.strerror}",
                                     param_hint="'--rejects'") from None
    err = terminal.AboveStatus(sys.stderr)
    monitor = monitor_from(params, err)
    if notifier is not None:
        notifier.report_to(monitor.log.write)
    reporter = _DiagnosingReporter(err, rejects, show_source=show_source, rejects_name=rejects_path or "",
                                   log=monitor.log)
    pipeline = Pipeline(
        EventParser(schema), deadlines.matcher(params["match_mode"], params["paid_late"]), time_mode=time_mode,
        lateness=lateness, idle=idle, max_future=params.get("max_future"),
    )
    writer = ResultWriter(out, formatter, params["only"])
    runtime_writer = writer if notifier is None else notifier.writer(writer)
    runtime = Runtime(pipeline, LoopClock(), runtime_writer, reporter, strict=strict, max_line_bytes=max_line_bytes)
    ctx = click.get_current_context(silent=True)
    return _Run(
        pipeline, runtime, out, writer, within, params["stats_path"], params["quiet"], color,
        {"within_ms": within, "match": params["match_mode"], **_window_stats(deadlines)},
        # JSON logs are for collectors: no status line drawn between their lines.
        progress=not params["quiet"] and not monitor.log.is_json
        and terminal.wants_progress(params["progress"], sys.stderr, stdin, sys.stdout, reads_stdin=reads_stdin),
        err=err, notifier=notifier,
        settings=settings_of(ctx) if params["verbose"] and ctx is not None else None,
        monitor=monitor,
    )


def _window_stats(deadlines: Deadlines) -> dict:
    """The windows and reminders for the statistics, when there are any beyond --within."""
    stats: dict = {}
    if deadlines.windows or deadlines.deadline_field:
        stats["windows"] = deadlines.describe()
    if deadlines.remind or deadlines.remind_before:
        stats["remind_ms"], stats["remind_before_ms"] = list(deadlines.remind), list(deadlines.remind_before)
    return stats


def stdin_hint(inputs) -> None:
    """``watch`` with nothing to read but a terminal: say how to feed it, then read it."""
    if any(source.path is None and _is_terminal(source.stream) for source in inputs):
        click.echo(
            "ordertimeout: no FILE given, so reading order events typed here:\n"
            "  one JSON object per line, Ctrl-D to end.\n"
            "  Or give a FILE (ordertimeout watch events.jsonl),\n"
            "  or pipe events in (cat events.jsonl | ordertimeout watch).",
            err=True,
        )

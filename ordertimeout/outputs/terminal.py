"""The terminal: colours, the live status line and the exit summary, drawn with rich.

Everything here writes to stderr (or returns escape codes for stdout rows); nothing
touches the results. The status line is one line, cropped to one column less than the
terminal (so it never wraps), redrawn in place, and lifted off before anything else is
written to the same terminal (a result row, a warning), so it never mixes into them.

rich is imported only by the functions that draw for a person: a run whose stdout and
stderr are not terminals (``--json | jq``, a service) never loads it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, TextIO

from ..rules.durations import format_duration
from .rows import format_time

if TYPE_CHECKING:
    from rich.console import Console

    from ..observe.histogram import LatencyCounts

__all__ = [
    "painter", "StatusLine", "AboveStatus", "latency_figures", "summary_text", "summary_table",
    "stderr_console", "wants_status", "wants_progress", "plural",
]

_STYLES = {"success": "bold green", "timeout": "bold red", "cancelled": "yellow", "reminder": "cyan", "dim": "dim"}


def _console(file: TextIO, color: str) -> "Console":
    from rich.console import Console

    return Console(
        file=file,
        force_terminal=True if color == "always" else None,
        # --color always overrides NO_COLOR, as the NO_COLOR convention asks.
        no_color={"never": True, "always": False}.get(color),
        color_system=None if color == "never" else "auto",
        highlight=False,
    )


def painter(file: TextIO, color: str) -> Callable[[str, str], str] | None:
    """A function wrapping text in the escape codes of a style, or None for plain text.

    ``color`` is auto (colour only on a terminal, and never with NO_COLOR set), always
    or never; rich makes the decision and renders the codes.
    """
    if color == "never" or (color == "auto" and not _is_terminal(file)):
        return None  # decided without rich, so plain output never loads it
    from rich.text import Text

    console = _console(file, color)
    if console.no_color or console.color_system is None:
        return None
    if color == "auto" and not console.is_terminal:
        return None
    codes = {}
    for name, style in _STYLES.items():
        with console.capture() as captured:
            console.print(Text("\0", style=style), end="")
        codes[name] = tuple(captured.get().split("\0", 1))
    return lambda style, text: codes[style][0] + text + codes[style][1]


def _is_terminal(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def stderr_console(file: TextIO, color: str) -> "Console":
    """The console for diagnostics on stderr."""
    return _console(file, color)


class StatusLine:
    """A one-line live status on a terminal's stderr, redrawn in place.

    ``render()`` returns the rich renderable to show; ``draw()`` shows it, ``clear()``
    erases it (call before writing results to the same terminal), ``write_above(text)``
    prints a line of its own above it.
    """

    def __init__(self, console: "Console", render: Callable[[], object]) -> None:
        self._console = console
        self._render = render
        self._shown = False

    #: Columns left free at the end of the line: one so the line never fills the last
    #: column (some terminals wrap there, leaving a stale copy at the next redraw), and two
    #: for the ``^C`` the terminal echoes after it, which must not wrap either, or the
    #: final clear would erase the wrong line.
    SPARE_COLUMNS = 3

    def draw(self) -> None:
        """Redraw the line with fresh figures, cropped so it never wraps."""
        console = self._console
        width = max(1, console.size.width - self.SPARE_COLUMNS)
        with console.capture() as captured:
            console.print(self._render(), end="", no_wrap=True, overflow="ellipsis", crop=True, width=width)
        line = captured.get().split("\n", 1)[0]
        console.file.write("\r\x1b[2K" + line)
        console.file.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line (if shown)."""
        if self._shown:
            self._console.file.write("\r\x1b[2K")
            self._console.file.flush()
            self._shown = False

    def write_above(self, text: str) -> None:
        """Write ``text`` (whole lines) to the terminal on lines of its own above the status."""
        shown = self._shown
        self.clear()
        self._console.file.write(text)
        if shown:
            self.draw()
        else:
            self._console.file.flush()


class AboveStatus:
    """A text stream for diagnostics that lifts the status line off while it writes.

    Stands in for stderr where warnings are written; ``status`` is set once a status
    line is drawn. Partial lines are held until their newline, so a warning is never
    glued to the status line. Diagnostics are best effort: a stderr that cannot be written
    (``2>/dev/full``) loses them but never stops the results.
    """

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.status: StatusLine | None = None
        self._pending = ""

    def write(self, text: str) -> int:
        try:
            if self.status is None:
                return self.file.write(text)
            self._pending += text
            if "\n" in self._pending:
                complete, _, self._pending = self._pending.rpartition("\n")
                self.status.write_above(complete + "\n")
        except OSError:
            pass  # nowhere left to say so
        return len(text)

    def flush(self) -> None:
        try:
            if self._pending and self.status is None:
                self.file.write(self._pending)
                self._pending = ""
            self.file.flush()
        except OSError:
            pass  # nowhere left to say so

    def isatty(self) -> bool:
        return _is_terminal(self.file)


def status_text(stats: dict, rate: float, wall_ms: int, watermark: int | None, progress: float | None,
                deliveries: dict | None = None):
    """The live status: a progress bar for files, rate, open orders, outcomes, in event
    time the watermark and its lag behind the wall clock, and deliveries when notifying."""
    from rich.text import Text

    text = Text()
    text.append(f"{rate:,.0f} ev/s", style="bold")
    text.append(f" open {stats['pending']:,}")
    text.append(f" ✓{stats['success']:,}", style="green")
    text.append(f" ✗{stats['timeout']:,}", style="red")
    if stats.get("cancelled"):
        text.append(f" cancelled {stats['cancelled']:,}", style="yellow")
    if stats.get("paid_late"):
        text.append(f" paid late {stats['paid_late']:,}", style="yellow")
    if stats.get("reminder"):
        text.append(f" reminded {stats['reminder']:,}", style="cyan")
    text.append(f" late {stats['late']:,} rejected {stats['rejected']:,}", style="dim")
    if watermark is not None:
        text.append(f" wm {format_time(watermark)[11:23]}", style="cyan")
        text.append(f" lag {format_duration(max(0, wall_ms - watermark))}", style="dim")
    if deliveries is not None:
        text.append(delivery_status(deliveries))
    if progress is None:
        return text
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    line = Table.grid(padding=(0, 1))
    line.add_row(ProgressBar(total=1.0, completed=progress, width=12), Text(f"{progress:4.0%}"), text)
    return line


def delivery_status(deliveries: dict):
    """Deliveries on the status line: pending (and the oldest's age), failures in a row, dead."""
    from rich.text import Text

    text = Text(f" ↗{deliveries['delivered']:,}")
    pending = deliveries["pending"]
    text.append(f" pending {pending:,}", style="bold yellow" if pending else None)
    if pending and deliveries["oldest_pending_age_ms"] >= 1000:
        text.append(f" (oldest {format_duration(deliveries['oldest_pending_age_ms'] // 1000 * 1000)})")
    if deliveries["failures_in_row"]:
        text.append(f" failing {deliveries['failures_in_row']:,}x", style="bold red")
    if deliveries["dead_letters"]:
        text.append(f" dead {deliveries['dead_letters']:,}", style="bold red")
    return text


def delivery_summary(deliveries: dict) -> str:
    """The summary's deliveries figures."""
    return (f"{deliveries['delivered']:,} delivered, {deliveries['retried']:,} retried, "
            f"{deliveries['dead']:,} dead, {deliveries['pending']:,} pending")


def latency_figures(latencies: LatencyCounts) -> dict | None:
    """p50/p90/p99/max of pay latency in ms, or None without successes."""
    if not latencies:
        return None
    return {
        "p50_ms": latencies.percentile(0.50),
        "p90_ms": latencies.percentile(0.90),
        "p99_ms": latencies.percentile(0.99),
        "max_ms": latencies.max,
        "mean_ms": round(latencies.sum / latencies.count, 1),
    }


def histogram(latencies: LatencyCounts, within: int, buckets: int = 10, width: int = 30) -> list[tuple[str, int, str]]:
    """Pay latency in ``buckets`` slices of the window: (label, count, bar)."""
    counts = [0] * buckets
    for latency, count in latencies.items():
        counts[min(buckets - 1, latency * buckets // within)] += count
    top = max(counts) or 1
    rows = []
    for index, count in enumerate(counts):
        low, high = within * index // buckets, within * (index + 1) // buckets
        bar = "█" * round(width * count / top) if count else ""
        rows.append((f"{format_duration(low)}–{format_duration(high)}", count, bar))
    return rows


#: Counter names and how one and several of them read in the summary.
_COUNTER_WORDS = {
    "reminder": ("reminder", "reminders"),
    "cancelled": ("cancelled", "cancelled"),
    "paid_late": ("paid late", "paid late"),
    "discarded": ("discarded", "discarded"),
    "unmatched_pays": ("unmatched pay", "unmatched pays"),
    "unmatched_cancels": ("unmatched cancel", "unmatched cancels"),
    "late": ("late", "late"),
    "rejected": ("rejected", "rejected"),
    "pending": ("pending", "pending"),
}


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 event``, ``2 events``, with thousands separators."""
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def _counters_shown(stats: dict) -> list[tuple[str, int]]:
    """The summary's further counters: late, rejected and pending always, others when not 0."""
    return [
        (name, stats[name])
        for name in _COUNTER_WORDS
        if stats.get(name) or name in ("late", "rejected", "pending")
    ]


def _run_facts(stats: dict) -> str:
    """What kind of run it was: time mode (once known), the window, how long it took."""
    facts = [f"{stats['time_mode']} time"] if stats.get("time_mode") else []
    if stats.get("windows"):
        facts.append(f"within {stats['windows']}")
    elif stats.get("within_ms"):
        facts.append(f"within {format_duration(stats['within_ms'])}")
    facts.append(f"{stats['elapsed_s']:.2f}s")
    return ", ".join(facts)


def summary_text(stats: dict, latencies: LatencyCounts, settings: list[tuple[str, str, str]] | None = None) -> str:
    """The exit summary as plain text, for a stderr that is not a terminal.

    ``settings`` (``--verbose``): (option, value, where it came from) of each option.
    """
    parts = [plural(stats["events"], "event"), plural(stats["success"], "success", "successes"),
             plural(stats["timeout"], "timeout")]
    parts += [plural(value, *_COUNTER_WORDS[name]) for name, value in _counters_shown(stats)]
    lines = [f"ordertimeout: {', '.join(parts)} ({_run_facts(stats)})"]
    if stats.get("reminders_by_stage"):
        lines.append(f"ordertimeout: reminders by stage {_stages_text(stats['reminders_by_stage'])}")
    if "deliveries" in stats:
        lines.append(f"ordertimeout: deliveries {delivery_summary(stats['deliveries'])}")
    figures = latency_figures(latencies)
    if figures:
        lines.append(
            f"ordertimeout: pay latency p50 {format_duration(figures['p50_ms'])}, "
            f"p90 {format_duration(figures['p90_ms'])}, p99 {format_duration(figures['p99_ms'])}, "
            f"max {format_duration(figures['max_ms'])}"
        )
    width = max((len(option) + len(value) for option, value, _ in settings or ()), default=0)
    for option, value, source in settings or ():
        lines.append(f"ordertimeout: {option} {value}".ljust(width + 15) + f"  ({source})")
    return "\n".join(lines)


def _stages_text(stages: dict) -> str:
    """``1: 120, 2: 45``: reminders sent per stage."""
    return ", ".join(f"{stage}: {count:,}" for stage, count in stages.items())


def summary_table(stats: dict, latencies: LatencyCounts, within: int, settings: list[tuple[str, str, str]] | None = None):
    """The exit summary as a small rich table, with pay latency and its histogram
    (and with ``settings``, where each option's value came from)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="ordertimeout", title_style="bold", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="dim", justify="right")
    table.add_column()
    table.add_row("events", f"{stats['events']:,} ({_run_facts(stats)})")
    table.add_row("success", Text(f"{stats['success']:,}", style="bold green"))
    table.add_row("timeout", Text(f"{stats['timeout']:,}", style="bold red"))
    for name, value in _counters_shown(stats):
        table.add_row(_COUNTER_WORDS[name][1], f"{value:,}")
    if stats.get("reminders_by_stage"):
        table.add_row("by stage", _stages_text(stats["reminders_by_stage"]))
    if "deliveries" in stats:
        table.add_row("deliveries", delivery_summary(stats["deliveries"]))
    figures = latency_figures(latencies)
    if figures:
        table.add_row(
            "pay latency",
            "  ".join(
                f"{label} {format_duration(figures[key])}"
                for label, key in (("p50", "p50_ms"), ("p90", "p90_ms"), ("p99", "p99_ms"), ("max", "max_ms"))
            ),
        )
        for label, count, bar in histogram(latencies, within):
            table.add_row(label, Text.assemble((bar, "green"), f" {count:,}" if count else ""))
    for option, value, source in settings or ():
        table.add_row(option, Text.assemble(value, (f"  ({source})", "dim")))
    return table


def wants_status(file: TextIO) -> bool:
    """Whether stderr can carry a live status line: a terminal, and TERM is not dumb."""
    return _is_terminal(file) and os.environ.get("TERM") != "dumb"


def wants_progress(choice: bool | None, stderr: TextIO, stdin: TextIO | None, stdout: TextIO | None = None,
                   *, reads_stdin: bool = True) -> bool:
    """Whether to draw the status line (``--progress/--no-progress``, None for auto).

    Auto: on when stderr is a terminal, unless the command was typed at that terminal
    (stdin one too) and either reads its events from it (``reads_stdin``: they are being
    typed) or writes into a pipe (``watch FILE --json | jq``: jq writes to the same
    screen). A redrawn line would garble both; ``watch FILE`` typed at a terminal shows it.
    """
    if choice is not None:
        return choice and wants_status(stderr)
    typed_here = stdin is not None and _is_terminal(stdin)
    return wants_status(stderr) and not (typed_here and (reads_stdin or _is_pipe(stdout)))


def _is_pipe(file: TextIO | None) -> bool:
    import stat

    try:
        mode = os.fstat(file.fileno()).st_mode
    except (AttributeError, ValueError, OSError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)

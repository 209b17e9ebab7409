"""The terminal: colours, the live status line and the exit summary, drawn with rich.

Everything here writes to stderr (or returns escape codes for stdout rows); nothing
touches the results. The status line is one line, redrawn in place, erased before any
result is written to a shared terminal, so it never mixes into the data.
"""

from __future__ import annotations

import os
from array import array
from typing import TYPE_CHECKING, Callable, TextIO

from .durations import format_duration
from .sinks import format_time

# rich is imported inside the functions that draw: a run whose output goes to a pipe or a
# file (--json, -q, no terminal on stderr) never loads it, which is a tenth of start-up.
if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["painter", "StatusLine", "latency_figures", "summary_text", "summary_table", "stderr_console"]

_STYLES = {"success": "bold green", "timeout": "bold red", "cancelled": "yellow", "dim": "dim"}


def _console(file: TextIO, color: str) -> Console:
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
    console = _console(file, color)
    if color == "never" or console.no_color or console.color_system is None:
        return None
    if color == "auto" and not console.is_terminal:
        return None
    from rich.text import Text

    codes = {}
    for name, style in _STYLES.items():
        with console.capture() as captured:
            console.print(Text("\0", style=style), end="")
        codes[name] = tuple(captured.get().split("\0", 1))
    return lambda style, text: codes[style][0] + text + codes[style][1]


def stderr_console(file: TextIO, color: str) -> Console:
    """The console for diagnostics on stderr."""
    return _console(file, color)


class StatusLine:
    """A one-line live status on a terminal's stderr, redrawn in place.

    ``render()`` returns the rich renderable to show; ``draw()`` shows it, ``clear()``
    erases it (call before writing results to the same terminal).
    """

    def __init__(self, console: Console, render: Callable[[], object]) -> None:
        self._console = console
        self._render = render
        self._shown = False

    def draw(self) -> None:
        """Redraw the line with fresh figures."""
        with self._console.capture() as captured:
            self._console.print(self._render(), end="", no_wrap=True, overflow="ellipsis", crop=True)
        line = captured.get().split("\n", 1)[0]
        self._console.file.write("\r\x1b[2K" + line)
        self._console.file.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the line (if shown)."""
        if self._shown:
            self._console.file.write("\r\x1b[2K")
            self._console.file.flush()
            self._shown = False


def status_text(stats: dict, rate: float, wall_ms: int, watermark: int | None, progress: float | None):
    """The live status: a progress bar for files, rate, open orders, outcomes, and in
    event time the watermark and its lag behind the wall clock."""
    from rich.progress_bar import ProgressBar
    from rich.table import Table
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
    text.append(f" late {stats['late']:,} rejected {stats['rejected']:,}", style="dim")
    if watermark is not None:
        text.append(f" wm {format_time(watermark)[11:23]}", style="cyan")
        text.append(f" lag {format_duration(max(0, wall_ms - watermark))}", style="dim")
    if progress is None:
        return text
    line = Table.grid(padding=(0, 1))
    line.add_row(ProgressBar(total=1.0, completed=progress, width=12), Text(f"{progress:4.0%}"), text)
    return line


def latency_figures(latencies: array) -> dict | None:
    """p50/p90/p99/max of pay latency in ms, or None without successes."""
    if not latencies:
        return None
    from statistics import fmean  # statistics loads fractions and decimal: not at start-up

    ordered = sorted(latencies)

    def percentile(share: float) -> int:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return {
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "max_ms": ordered[-1],
        "mean_ms": round(fmean(ordered), 1),
    }


def histogram(latencies: array, within: int, buckets: int = 10, width: int = 30) -> list[tuple[str, int, str]]:
    """Pay latency in ``buckets`` slices of the window: (label, count, bar)."""
    counts = [0] * buckets
    for latency in latencies:
        counts[min(buckets - 1, latency * buckets // within)] += 1
    top = max(counts) or 1
    rows = []
    for index, count in enumerate(counts):
        low, high = within * index // buckets, within * (index + 1) // buckets
        bar = "█" * round(width * count / top) if count else ""
        rows.append((f"{format_duration(low)}–{format_duration(high)}", count, bar))
    return rows


def _counters_shown(stats: dict) -> list[tuple[str, int]]:
    """The summary's further counters: late, rejected and pending always, others when not 0."""
    return [
        (name.replace("_", " "), stats[name])
        for name in ("cancelled", "paid_late", "discarded", "unmatched_pays", "late", "rejected", "pending")
        if stats.get(name) or name in ("late", "rejected", "pending")
    ]


def summary_text(stats: dict, latencies: array) -> str:
    """The exit summary as plain text, for a stderr that is not a terminal."""
    mode = stats["time_mode"] or "no events"
    parts = [f"{stats['events']} events", f"{stats['success']} success", f"{stats['timeout']} timeout"]
    parts += [f"{value} {label}" for label, value in _counters_shown(stats)]
    text = f"ordertimeout: {', '.join(parts)} ({mode} time, {stats['elapsed_s']:.2f}s)"
    figures = latency_figures(latencies)
    if figures:
        text += (
            f"\nordertimeout: pay latency p50 {format_duration(figures['p50_ms'])}, "
            f"p90 {format_duration(figures['p90_ms'])}, p99 {format_duration(figures['p99_ms'])}, "
            f"max {format_duration(figures['max_ms'])}"
        )
    return text


def summary_table(stats: dict, latencies: array, within: int) -> Table:
    """The exit summary as a small rich table, with pay latency and its histogram."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="ordertimeout", title_style="bold", show_header=False, box=None, padding=(0, 2))
    table.add_column(style="dim", justify="right")
    table.add_column()
    mode = stats["time_mode"] or "no events"
    table.add_row("events", f"{stats['events']:,} ({mode} time, {stats['elapsed_s']:.2f}s)")
    table.add_row("success", Text(f"{stats['success']:,}", style="bold green"))
    table.add_row("timeout", Text(f"{stats['timeout']:,}", style="bold red"))
    for label, value in _counters_shown(stats):
        table.add_row(label, f"{value:,}")
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
    return table


def wants_status(file: TextIO) -> bool:
    """Whether to draw a live status line: stderr is a terminal and TERM is not dumb."""
    try:
        return file.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False

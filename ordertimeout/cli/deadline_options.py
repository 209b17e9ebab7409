"""The deadline options of ``watch``, ``kafka`` and ``simulate``: ``--within`` (a plain
window, or ``VALUE=D`` repeated, chosen by ``--within-by``), ``--deadline-field``,
``--remind`` and ``--remind-before``; checked together into :class:`Deadlines`, which
builds the parser's schema fields and the matcher.
"""

from __future__ import annotations

from typing import Any

import click

from ..rules.durations import DurationError, format_duration, parse_duration
from ..rules.matcher import Matcher
from .options import Duration, apply

__all__ = ["Deadlines", "WindowType", "within_option", "deadline_options", "deadlines_from"]


class WindowType(click.ParamType):
    """``15m`` (the plain window) or ``VALUE=15m`` (the window of creates whose
    ``--within-by`` field is VALUE): ``(None, ms)`` or ``(VALUE, ms)``."""

    name = "[VALUE=]duration"

    def convert(self, value: Any, param, ctx) -> tuple[str | None, int]:
        if isinstance(value, tuple):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return None, value
        text = str(value)
        name, equals, duration = text.rpartition("=")
        if not equals:
            name, duration = None, text
        try:
            return name, parse_duration(duration)
        except DurationError as error:
            where = f" in {text!r}" if equals else ""
            self.fail(f"{error}{where}", param, ctx)


def within_option(default: str, help_text: str):
    """``--within``, repeatable: ``default`` when not given at all."""
    return click.option(
        "--within", type=WindowType(), multiple=True, default=(default,), show_default=True, metavar="[VALUE=]D",
        help=help_text + " Repeat as VALUE=D for the window of creates whose --within-by field is VALUE "
        "(--within card=15m --within bank_transfer=3d); a plain D is then the window of any other create, "
        "and without one such creates are rejected.",
    )


deadline_options = apply([
    click.option(
        "--within-by", default=None, metavar="PATH",
        help="Field (dotted path) whose value, as text, picks a create's window among --within VALUE=D.",
    ),
    click.option(
        "--deadline-field", default=None, metavar="PATH",
        help="Field (dotted path) holding a create's own deadline, a time like the time field's; "
        "when present it wins over the windows. Event time only.",
    ),
    click.option(
        "--remind", type=Duration(), multiple=True, metavar="D",
        help="Repeatable: a reminder result D after the create while the order is open.",
    ),
    click.option(
        "--remind-before", type=Duration(), multiple=True, metavar="D",
        help="Repeatable: a reminder result D before the order's deadline while it is open.",
    ),
])


class Deadlines:
    """The windows and reminders of a run, checked: ``within`` the plain window (None:
    creates without a listed value are rejected), ``windows`` the (value, ms) pairs of
    --within VALUE=D in the order given, the fields, and the reminder durations (ms).
    (A plain class: a dataclass would cost every command's start-up half a millisecond.)"""

    __slots__ = ("within", "windows", "within_by", "deadline_field", "remind", "remind_before")

    def __init__(self, within: int | None, windows: tuple[tuple[str, int], ...], within_by: str | None,
                 deadline_field: str | None, remind: tuple[int, ...], remind_before: tuple[int, ...]) -> None:
        self.within, self.windows, self.within_by = within, windows, within_by
        self.deadline_field, self.remind, self.remind_before = deadline_field, remind, remind_before

    @property
    def plain_window(self) -> int:
        """The matcher's ``within``: the plain window, or else the first listed one."""
        if self.within is not None:
            return self.within
        return self.windows[0][1] if self.windows else 1000

    def schema_fields(self) -> dict:
        """The :class:`~ordertimeout.rules.events.EventSchema` fields these set."""
        return {"within": self.within, "within_by": self.within_by, "windows": self.windows,
                "deadline_field": self.deadline_field}

    def matcher(self, mode: str, paid_late: int | None) -> Matcher:
        """The matcher of one pipeline."""
        return Matcher(self.plain_window, mode, paid_late, tuple(ms for _, ms in self.windows),
                       self.remind, self.remind_before)

    def config(self) -> dict:
        """What gives saved state its meaning besides the plain window (none when unused,
        so a state file of a plain run stays usable by the same plain run)."""
        config: dict = {}
        if self.windows or self.deadline_field:
            config["windows"] = [[value, ms] for value, ms in self.windows]
            config["within_by"] = self.within_by
            config["deadline_field"] = self.deadline_field
            config["within_ms"] = self.within
        return config

    def describe(self) -> str:
        """``card=15m, bank_transfer=3d, else 1h``: the windows for a summary."""
        parts = [f"{value}={format_duration(ms)}" for value, ms in self.windows]
        if self.within is not None:
            parts.append(("else " if parts else "") + format_duration(self.within))
        return ", ".join(parts)


def deadlines_from(params: dict, processing_time: bool) -> Deadlines:
    """The run's :class:`Deadlines` from the options (a ``click.UsageError`` when they
    contradict each other)."""
    plain, windows = None, {}
    for value, ms in params["within"]:
        if value is None:
            plain = ms  # the last one given wins, as for any option given twice
        else:
            windows[value] = ms
    within_by, deadline_field = params.get("within_by"), params.get("deadline_field")
    if windows and not within_by:
        listed = ", ".join(f"{value}=..." for value in windows)
        raise click.UsageError(f"--within {listed} needs --within-by PATH: the field holding the value")
    if within_by and not windows:
        raise click.UsageError("--within-by needs at least one --within VALUE=D")
    if deadline_field and processing_time:
        raise click.UsageError("--deadline-field is for event time: a deadline needs the create's event time")
    return Deadlines(plain, tuple(windows.items()), within_by, deadline_field,
                     tuple(params.get("remind") or ()), tuple(params.get("remind_before") or ()))

"""``--verbose``: every option's effective value and where it came from (the command
line, the environment, the ``--config`` file, or the default), for the summary."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from ..rules.durations import format_duration
from .options import Duration, _envvar_used, long_name

__all__ = ["settings_of", "SECRET_OPTIONS"]


def settings_of(ctx: click.Context) -> list[tuple[str, str, str]]:
    """Every option's effective value and its source: (``--within``, ``15m``, ``config
    shop.toml``), (``--key``, ``user_id``, ``ORDERTIMEOUT_KEY``), ..."""
    settings = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name not in ctx.params:
            continue
        source = ctx.get_parameter_source(param.name)
        if source is ParameterSource.COMMANDLINE:
            where = "command line"
        elif source is ParameterSource.ENVIRONMENT:
            where = f"environment {_envvar_used(param)}"
        elif source is ParameterSource.DEFAULT_MAP:
            where = f"config {ctx.meta.get('ordertimeout.config', '')}".rstrip()
        else:
            where = "default"
        settings.append((long_name(param), _value_text(param, ctx.params[param.name]), where))
    return settings


#: Options whose values are never shown (``--verbose``): they hold secrets.
SECRET_OPTIONS = frozenset({"webhook_secret"})


def _value_text(param: click.Option, value: Any) -> str:
    if param.name in SECRET_OPTIONS:
        return "(hidden)" if value else "none"
    if isinstance(param.type, Duration) and isinstance(value, int):
        return format_duration(value) if value else "0"
    if param.multiple and isinstance(value, (tuple, list)):
        texts = [_one_value_text(item) for item in value]
        return ",".join(texts) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "auto" if param.is_flag else getattr(param.type, "none_text", "none")  # --progress/--no-progress left to its rule
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def _one_value_text(item: Any) -> str:
    """One value of a repeatable option: a duration, or a ``(VALUE, duration)`` window."""
    if isinstance(item, tuple) and len(item) == 2:
        name, ms = item
        return format_duration(ms) if name is None else f"{name}={format_duration(ms)}"
    if isinstance(item, int) and not isinstance(item, bool):
        return format_duration(item)
    return str(item)

"""The monitoring options (``--metrics-addr``, ``--unhealthy-after``, ``--log-format``),
shared by every command that runs a pipeline, and the :class:`~..monitor.Monitor` they
configure."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click

from ..observe.health import Health
from ..observe.logs import FORMATS, Log
from ..observe.monitor import Monitor
from .options import Duration, apply

#: Where ``ctx.meta`` keeps the chosen log format, for errors raised outside a run.
LOG_FORMAT_KEY = "ordertimeout.log_format"


class Address(click.ParamType):
    """``HOST:PORT`` to listen on (``[::1]:9108`` for IPv6, ``0.0.0.0:9108`` for every
    interface). The host is required: ``:9108`` is refused rather than read as every interface."""

    name = "host:port"

    def convert(self, value: Any, param, ctx) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        host, colon, port = str(value).rpartition(":")
        if not colon or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(f"{value!r} is not HOST:PORT (for example 127.0.0.1:9108)", param, ctx)
        if not host:
            # Explicit rather than every interface by default: the pages have no
            # authentication, so exposing them beyond this machine must be asked for.
            self.fail(f"{value!r} names no host: 127.0.0.1:{port} serves this machine only, "
                      f"0.0.0.0:{port} every interface", param, ctx)
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host, int(port)


def _remember_log_format(ctx: click.Context, param, value: str) -> str:
    ctx.meta[LOG_FORMAT_KEY] = value
    return value


metrics_options = apply(
    [
        click.option(
            "--metrics-addr", type=Address(), default=None,
            help="Serve Prometheus metrics on GET /metrics and a health check on GET /healthz at "
            "HOST:PORT, e.g. 127.0.0.1:9108 (0.0.0.0:9108: every interface; a host is required).",
        ),
        click.option(
            "--unhealthy-after", type=Duration(), default="5m", show_default=True,
            help="/healthz answers 503 once deliveries have failed without a success this long.",
        ),
        click.option(
            "--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
            callback=_remember_log_format, expose_value=True,
            help="Diagnostics on stderr as text, or as one JSON object per line (time, level, message, "
            "fields) for log collectors.",
        ),
    ]
)


def monitor_from(params: dict, err: TextIO = sys.stderr) -> Monitor:
    """The monitor of a run, from its command's options (defaults when it has none);
    diagnostics go to ``err``."""
    log = Log(err, params.get("log_format") or "text")
    health = Health(params.get("unhealthy_after") or 300_000)
    return Monitor(log, health, params.get("metrics_addr"))


def context_log() -> Log:
    """A log for diagnostics written before a run is built (e.g. while options are checked),
    in the format the current command was given."""
    ctx = click.get_current_context(silent=True)
    return Log(sys.stderr, ctx.meta.get(LOG_FORMAT_KEY, "text") if ctx is not None else "text")

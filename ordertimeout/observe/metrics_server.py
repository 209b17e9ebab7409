"""The HTTP endpoint of ``--metrics-addr``: ``GET /metrics`` and ``GET /healthz``.

Served by aiohttp on the run's own asyncio loop, so a scrape reads the counters between
two chunks of input, never in the middle of one (no locks, no threads). A scrape costs a
few hundred microseconds of that loop; matching does not wait on the network, since
aiohttp answers from its own tasks.

Imported only with ``--metrics-addr``: aiohttp and prometheus-client are not loaded otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Callable

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .health import Health, MonitorError

__all__ = ["MetricsServer"]

#: How often health is checked between requests, so a delivery failure streak is timed
#: from when it began, not from the first request that saw it.
HEALTH_TICK_SECONDS = 1.0


class MetricsServer:
    """Serves one registry and one health on ``host:port`` until :meth:`stop`."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health,
                 now_ms: Callable[[], int]) -> None:
        self.host, self.port = host, port
        self._registry = registry
        self._health = health
        self._now_ms = now_ms
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None

    async def start(self) -> None:
        """Listen; raises :class:`MonitorError` if the address cannot be used."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as error:
            await self._runner.cleanup()
            self._runner = None
            raise MonitorError(
                f"cannot serve metrics on {self.host}:{self.port}: {error.strerror or error}"
            ) from None
        if self._health.deliveries is not None:
            self._ticker = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, body = self._health.check(self._now_ms())
        return web.Response(
            body=orjson.dumps(body) + b"\n", status=200 if healthy else 503, content_type="application/json"
        )

    async def _tick(self) -> None:
        while True:
            self._health.check(self._now_ms())
            await asyncio.sleep(HEALTH_TICK_SECONDS)

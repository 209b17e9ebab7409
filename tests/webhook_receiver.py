"""A real webhook receiver for the tests: an aiohttp server on 127.0.0.1 in its own thread.

It verifies every request with the ``standardwebhooks`` package (what a receiver is told
to use), records what came, and answers as a test script says: a per-request function
returns (status, headers) or a delay first. ``refuse()``/``accept()`` close and reopen the
listening socket, so connections are refused meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from .helpers import free_port

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Received:
    webhook_id: str
    body: dict
    verified: bool
    status: int
    at: float = 0.0  # time.monotonic() when the request came (one clock for all processes)


@dataclass
class Receiver:
    """The server and what it saw. ``answer(request_number, body) -> (status, headers, delay)``."""

    secret: str | None = SECRET
    answer: object = None
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = None
        self._site = None
        self._verifier = Webhook(self.secret) if self.secret else None

    def _call(self, coroutine, timeout=10):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def accept(self) -> "Receiver":
        """Start listening."""
        async def start():
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            await self._site.start()
        self._call(start())
        return self

    def refuse(self) -> None:
        """Stop listening: connections are refused until ``accept()``."""
        if self._runner is not None:
            self._call(self._runner.cleanup())
            self._runner = None

    def close(self) -> None:
        self.refuse()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        body = await request.read()
        headers = dict(request.headers)
        verified = False
        if self._verifier is not None:
            try:
                self._verifier.verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        decoded = orjson.loads(body)
        with self._lock:
            number = len(self.received)
        status, extra, delay = 200, {}, 0.0
        if self.answer is not None:
            status, extra, delay = self.answer(number, decoded)
        if delay:
            await asyncio.sleep(delay)
        with self._lock:
            self.received.append(Received(request.headers.get("webhook-id", ""), decoded, verified, status, at))
        return web.Response(status=status, headers=extra)

    # -- what the tests read -----------------------------------------------------------

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def delivered_ids(self) -> set[str]:
        return {r.webhook_id for r in self.snapshot() if 200 <= r.status < 300}

    def attempts_per_id(self) -> Counter:
        return Counter(r.webhook_id for r in self.snapshot())

    def wait_until(self, condition, timeout=30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition(self):
                return True
            time.sleep(0.02)
        return condition(self)

"""The webhook sink: POST each result's JSON object to a URL, signed per Standard Webhooks.

In: outbox entries (a result's ``--json`` object and its stable id). Out: one HTTP POST
per attempt and an :class:`~.delivery.Outcome` telling the relay what happened.

Headers (standardwebhooks.com): ``webhook-id`` (the result id: the same on every retry
and after a restart, so receivers drop repeats), ``webhook-timestamp`` (seconds, of this
attempt) and, with a secret, ``webhook-signature``: ``v1,`` + base64 of the HMAC-SHA256
of ``id.timestamp.body`` keyed with the secret's bytes (``whsec_`` + base64). Signing uses
the standard library; aiohttp is imported only when a webhook sender opens.

2xx is delivered; a status in ``dead_on`` (``--dead-on``, 410 Gone by default, as
Standard Webhooks senders treat it) is permanent: that result goes to the dead letters.
Every other answer (3xx, 4xx, 5xx), a timeout or a connection error is a failed attempt,
retried (with the answer's ``Retry-After``, seconds or an HTTP date, when given): a
receiver in the middle of a deploy answers 404 or 401 for a minute. Error texts name the
status or the kind of failure, never the URL's credentials or the secret.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from .. import __version__
from ..rules.clocks import Clock
from .delivery import DELIVERED, Outcome
from .outbox import Entry

__all__ = ["WebhookSender", "parse_secret", "signature", "parse_retry_after", "check_url", "SecretError",
           "DEAD_ON"]

SECRET_PREFIX = "whsec_"
#: Answers that make a result dead at once by default (``--dead-on``): 410 Gone.
DEAD_ON = frozenset({410})


class SecretError(ValueError):
    """The webhook secret is not in the ``whsec_<base64>`` form (the message never holds it)."""


def parse_secret(text: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret."""
    if not text.startswith(SECRET_PREFIX):
        raise SecretError("the webhook secret must look like whsec_<base64> (as Standard Webhooks secrets do)")
    try:
        key = base64.b64decode(text[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("the webhook secret after whsec_ is not valid base64") from None
    if not key:
        raise SecretError("the webhook secret is empty after whsec_")
    return key


def signature(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    signed = b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def parse_retry_after(value: str | None, now_ms: int) -> int | None:
    """Milliseconds to wait from a ``Retry-After`` value (delay seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None or moment.tzinfo is None:
        return None
    return max(0, int(moment.timestamp() * 1000) - now_ms)


def check_url(url: str) -> str | None:
    """Raise ValueError for a URL that cannot be a webhook; return a warning, or None.

    Plain http:// is fine on this machine; to any other host it sends customers' data
    and the signature in clear text, so it earns a warning.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the webhook URL must be http:// or https:// with a host")
    try:
        port = parts.port  # checked only when read: 99999 or :abc fail here, not at every attempt
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"the webhook URL's port must be a number from 1 to 65535 (got {parts.netloc})")
    if parts.scheme == "http" and not _is_local(parts.hostname):
        return f"the webhook to {parts.hostname} is plain http://: results and signatures travel unencrypted"
    return None


def _is_local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookSender:
    """Posts entries to ``url`` through one aiohttp session with keep-alive connections."""

    def __init__(self, url: str, key: bytes | None, clock: Clock, concurrency: int = 8, name: str = "webhook",
                 dead_on: frozenset[int] = DEAD_ON) -> None:
        self.name = name
        self._dead_on = frozenset(dead_on)
        self._url = url
        self._key = key
        self._clock = clock
        self._concurrency = concurrency
        self._session = None
        self._client_error: type[Exception] = OSError

    async def open(self) -> None:
        """Start the HTTP client (the first use of aiohttp in the process)."""
        import aiohttp  # only here: runs without --webhook never load it

        self._client_error = aiohttp.ClientError
        connector = aiohttp.TCPConnector(limit=self._concurrency, limit_per_host=self._concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),  # the relay bounds each attempt
            headers={"User-Agent": f"ordertimeout/{__version__}", "Content-Type": "application/json"},
            auto_decompress=False,
        )

    async def send(self, entry: Entry) -> Outcome:
        """One attempt: POST the entry's body with fresh Standard Webhooks headers."""
        timestamp = self._clock.now_ms() // 1000
        headers = {"webhook-id": entry.id, "webhook-timestamp": str(timestamp)}
        if self._key is not None:
            headers["webhook-signature"] = signature(self._key, entry.id, timestamp, entry.body)
        try:
            async with self._session.post(self._url, data=entry.body, headers=headers, allow_redirects=False) as answer:
                await answer.read()  # read to the end so the connection is kept alive
                status = answer.status
                retry_after = answer.headers.get("Retry-After")
        except self._client_error as error:
            return Outcome(False, _describe(error))
        except OSError as error:
            return Outcome(False, f"connection failed ({error.strerror or type(error).__name__})")
        if 200 <= status < 300:
            return DELIVERED
        text = f"HTTP {status}"
        if 300 <= status < 400:
            text += " (redirects are not followed: give the final URL)"
        if status in self._dead_on:
            return Outcome(False, text, permanent=True)
        return Outcome(False, text, retry_after_ms=parse_retry_after(retry_after, self._clock.now_ms()))

    async def close(self) -> None:
        """Close the client and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(error: Exception) -> str:
    """A failure's kind without the URL (it may carry credentials) or anything sent."""
    import aiohttp

    if isinstance(error, aiohttp.ClientConnectorError):
        reason = error.os_error.strerror if error.os_error is not None else None
        return f"connection failed ({reason or 'cannot connect'})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "connection closed by the server before an answer"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "answer cut short"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"bad answer (HTTP {error.status})"
    return f"request failed ({type(error).__name__})"

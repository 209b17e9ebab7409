"""The delivery options of `watch` and `simulate` (``--webhook``, ``--exec`` and their
settings) and the building of a :class:`~ordertimeout.notify.Notifier` from them.

In: the command's parameters. Out: a notifier (or None without a sink) and warnings on
stderr (plain http:// to another host, a secret given on the command line). The secret
itself is never printed, nor kept anywhere but in the webhook sender.
"""

from __future__ import annotations

import os

import click
from click.core import ParameterSource

from .metrics_options import context_log
from .options import Duration, apply

#: The parameter names these options add to a command.
NAMES = ("webhook", "webhook_secret", "exec_command", "deliver_timeout", "deliver_concurrency", "deliver_max_age",
         "outbox_limit", "drain_timeout", "probe_max", "dead_on")


class StatusList(click.ParamType):
    """``--dead-on``: HTTP statuses separated by commas (``410``, ``410,422``), or ``none``."""

    name = "statuses"

    def convert(self, value, param, ctx) -> frozenset[int]:
        if isinstance(value, frozenset):
            return value
        text = str(value).strip()
        if text.lower() in ("", "none"):
            return frozenset()
        statuses = set()
        for part in text.split(","):
            part = part.strip()
            if not part.isdigit() or not 300 <= int(part) <= 599:
                self.fail(f"{part!r} is not an HTTP status from 300 to 599 (give e.g. 410 or 410,422, "
                          "or none)", param, ctx)
            statuses.add(int(part))
        return frozenset(statuses)


notify_options = apply(
    [
        click.option(
            "--webhook", metavar="URL",
            help="POST each result's JSON object to URL (Standard Webhooks headers; webhook-id is the "
            "result id), retried until delivered.",
        ),
        click.option(
            "--webhook-secret", metavar="whsec_...", envvar="ORDERTIMEOUT_WEBHOOK_SECRET", show_envvar=True,
            help="Sign webhooks (webhook-signature v1, HMAC-SHA256) with this whsec_<base64> secret; prefer the "
            "environment variable, which other users cannot see in ps.",
        ),
        click.option(
            "--exec", "exec_command", metavar="CMD",
            help="Run CMD through the shell for each result: its JSON object on stdin, ORDERTIMEOUT_ID, "
            "ORDERTIMEOUT_RESULT and ORDERTIMEOUT_KEY in the environment; exit 0 means delivered.",
        ),
        click.option("--deliver-timeout", type=Duration(), default="10s", show_default=True,
                     help="Longest wait for one delivery attempt."),
        click.option("--deliver-concurrency", type=click.IntRange(min=1), default=8, show_default=True,
                     help="Delivery attempts in flight at once."),
        click.option("--deliver-max-age", type=Duration(), default="24h", show_default=True,
                     help="Retry a result this long after it was decided, then keep it as a dead letter."),
        click.option("--outbox-limit", type=click.IntRange(min=1), default=1_000_000, show_default=True,
                     help="Pause reading input (never drop) while more results than this await delivery."),
        click.option("--drain-timeout", type=Duration(allow_zero=True), default="30s", show_default=True,
                     help="At the end (or Ctrl-C, SIGTERM), wait this long for pending deliveries."),
        click.option("--probe-max", type=Duration(), default="5s", show_default=True,
                     help="A sink that fails is probed with one attempt per backoff step (full jitter, doubling "
                     "from 0.5s up to this), so its recovery is seen within this long; results wait meanwhile."),
        click.option("--dead-on", type=StatusList(), default="410", show_default=True,
                     help="Webhook answers (HTTP statuses, comma-separated, or none) that make a result a dead "
                     "letter at once; every other failure is retried until --deliver-max-age."),
    ]
)


def build_notifier(params: dict):
    """A notifier for the sinks in ``params`` (popping the delivery options), or None."""
    values = {name: params.pop(name, None) for name in NAMES}
    url, command = values["webhook"], values["exec_command"]
    secret_text = values["webhook_secret"]
    # Set by cli.entry when it moved a typed secret out of the process title.
    moved_from_command_line = os.environ.pop(MOVED_MARKER, None) == "1"
    if url is None and command is None:
        if secret_text is not None and (moved_from_command_line or _given_on_command_line("webhook_secret")):
            raise click.UsageError("--webhook-secret needs --webhook")
        return None
    from ..rules.clocks import LoopClock
    from ..notify.notifier import Notifier

    clock = LoopClock()
    senders = []
    if url is not None:
        from ..notify.webhook import SecretError, WebhookSender, check_url, parse_secret

        try:
            warning = check_url(url)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="'--webhook'") from None
        if warning:
            context_log().warning(f"warning: {warning}")
        key = None
        if secret_text:
            try:
                key = parse_secret(secret_text)
            except SecretError as error:
                raise click.BadParameter(str(error), param_hint="'--webhook-secret'") from None
            if _given_on_command_line("webhook_secret"):
                context_log().warning("warning: a --webhook-secret on the command line is visible to other "
                                      "users (ps); set ORDERTIMEOUT_WEBHOOK_SECRET instead")
        senders.append(WebhookSender(url, key, clock, values["deliver_concurrency"], dead_on=values["dead_on"]))
    if command is not None:
        from ..notify.exec_sink import ExecSender

        senders.append(ExecSender(command))
    notifier = Notifier(
        senders, only=params.get("only"), clock=clock, concurrency=values["deliver_concurrency"],
        timeout_ms=values["deliver_timeout"], max_age_ms=values["deliver_max_age"], limit=values["outbox_limit"],
        probe_max_ms=values["probe_max"],
    )
    notifier.drain_timeout = values["drain_timeout"] / 1000
    return notifier


SECRET_OPTION = "--webhook-secret"
SECRET_ENVIRONMENT = "ORDERTIMEOUT_WEBHOOK_SECRET"
MOVED_MARKER = "ORDERTIMEOUT_SECRET_FROM_COMMAND_LINE"


def secret_out_of_argv(argv: list[str]) -> tuple[list[str], str] | None:
    """``(argv without --webhook-secret, the secret)``, or None when no secret is given.

    Both ``--webhook-secret S`` and ``--webhook-secret=S`` are taken out; nothing after a
    ``--`` is an option, so it stays.
    """
    rest, secret = [], None
    words = iter(argv)
    for word in words:
        if word == "--":
            rest.append(word)
            rest.extend(words)
            break
        if word == SECRET_OPTION:
            secret = next(words, None)
            if secret is None:
                return None  # a missing value: let click say so
        elif word.startswith(SECRET_OPTION + "="):
            secret = word[len(SECRET_OPTION) + 1 :]
        else:
            rest.append(word)
    return None if secret is None else (rest, secret)


def _given_on_command_line(name: str) -> bool:
    context = click.get_current_context(silent=True)
    return context is not None and context.get_parameter_source(name) is ParameterSource.COMMANDLINE

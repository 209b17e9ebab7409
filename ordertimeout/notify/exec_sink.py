"""The exec sink: run a shell command per result, the result's JSON object on its stdin.

In: outbox entries. Out: one child process per attempt (``sh -c CMD``, as ``xargs`` and
``find -exec`` users expect) with ``ORDERTIMEOUT_ID``, ``ORDERTIMEOUT_RESULT`` and
``ORDERTIMEOUT_KEY`` (and for a reminder ``ORDERTIMEOUT_STAGE``) in its environment, and an :class:`~.delivery.Outcome`: exit status
0 is delivered, anything else (or no exit within the attempt's time) is a failed attempt,
retried like a webhook's 5xx.

The command's stdout goes to our stderr: our stdout carries results only. The webhook
secret is removed from its environment. An attempt that runs out of time kills the
command's whole process group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from .delivery import DELIVERED, Outcome
from .outbox import Entry

__all__ = ["ExecSender"]

#: Environment variables a command never inherits.
HIDDEN_ENVIRONMENT = ("ORDERTIMEOUT_WEBHOOK_SECRET",)


class ExecSender:
    """Runs ``command`` through the shell once per attempt."""

    def __init__(self, command: str, name: str = "exec") -> None:
        self.name = name
        self._command = command
        self._environment = {name: value for name, value in os.environ.items() if name not in HIDDEN_ENVIRONMENT}
        try:
            self._output = sys.stderr.fileno()
        except (AttributeError, ValueError, OSError):
            self._output = subprocess.DEVNULL  # no real stderr (a test runner): drop it

    async def open(self) -> None:
        """Nothing to prepare."""

    async def send(self, entry: Entry) -> Outcome:
        """One attempt: run the command with the entry's body on stdin."""
        environment = dict(self._environment, ORDERTIMEOUT_ID=entry.id, ORDERTIMEOUT_RESULT=entry.kind,
                           ORDERTIMEOUT_KEY=entry.key)
        if entry.stage is not None:
            environment["ORDERTIMEOUT_STAGE"] = entry.stage
        try:
            child = await asyncio.create_subprocess_shell(
                self._command, stdin=subprocess.PIPE, stdout=self._output, env=environment,
                start_new_session=True,  # its own process group, so a timeout ends all of it
            )
        except OSError as error:
            return Outcome(False, f"cannot start the command ({error.strerror or error})")
        try:
            await child.communicate(entry.body + b"\n")
        except BaseException:  # cancelled (the attempt's time ran out) or stopped
            _kill_group(child.pid)
            await asyncio.shield(child.wait())
            raise
        status = child.returncode
        if status == 0:
            return DELIVERED
        if status < 0:
            return Outcome(False, f"command killed by signal {-status}")
        return Outcome(False, f"command exited with status {status}")

    async def close(self) -> None:
        """Nothing to release."""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

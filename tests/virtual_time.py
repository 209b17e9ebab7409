"""An asyncio event loop on virtual time, for tests of timing that take no real time.

When nothing is ready to run, the loop does not block in ``select``: it jumps its clock
straight to the next scheduled timer (the same idea as trio's ``MockClock`` with
``autojump_threshold=0`` and the ``looptime`` package). ``asyncio.sleep(3600)`` returns
at once, with ``loop.time()`` one hour later.
"""

from __future__ import annotations

import asyncio
import selectors


class _JumpingSelector(selectors.DefaultSelector):
    def __init__(self, loop: "VirtualTimeLoop") -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout=None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("virtual time: nothing scheduled and nothing to read (deadlock)")
        self._loop.virtual_now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector loop whose ``time()`` is virtual and jumps to the next timer when idle."""

    def __init__(self, start: float = 1000.0) -> None:
        self.virtual_now = start
        super().__init__(_JumpingSelector(self))

    def time(self) -> float:
        return self.virtual_now


def run_virtual(coroutine):
    """Run ``coroutine`` to completion on a fresh :class:`VirtualTimeLoop`."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()

"""The library's exceptions that more than one room catches.

Each is raised by one room (``inputs`` raises :class:`SourceError`, ``state`` the
state errors) and caught higher up (``observe.monitor``, the hosts, the CLI). They live
here, below every room, so that catching one never makes a lower room import a higher
one. The library raises them and never prints or exits; the CLI turns them into messages.
"""

__all__ = ["SourceError", "StateError", "StateWriteError"]


class SourceError(Exception):
    """An input could not be opened or read; the message names it."""


class StateError(Exception):
    """The state file cannot be used; the message says why and names the file."""


class StateWriteError(StateError):
    """A checkpoint could not be written (a full disk, an I/O error): the file keeps its
    last checkpoint, and a later save may succeed (it writes everything again)."""

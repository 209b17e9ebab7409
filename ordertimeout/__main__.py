"""``python -m ordertimeout`` runs the command line."""

from .cli import entry

entry()

"""``python -m ordertimeout`` runs the command line."""

from .cli import main

main()

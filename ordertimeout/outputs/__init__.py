"""Outputs for people and pipes: results to stdout, rejects to their file.

In: results from the rules. Out: JSON lines (``sinks``) or rows for people (``rows``),
written by ``sinks.ResultWriter`` with backpressure; ``terminal`` draws the status line
and the summary on stderr. Imports ``rules`` and ``observe`` only.
"""

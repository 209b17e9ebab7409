"""Notify: results delivered to a webhook or a command, durably, at least once.

In: results (``notifier.Notifier`` is the seam the hosts call). They go into an
``outbox`` (in memory, or SQLite rows written in the same transaction as the state
checkpoint) and a ``delivery`` relay takes them out to a sender: ``webhook`` (Standard
Webhooks over aiohttp, imported only when used) or ``exec_sink`` (a command per result).
"""

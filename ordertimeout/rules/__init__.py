"""The rules: pure and synchronous, no I/O and no clock of their own.

In: lines (``events`` parses them into ``(key, kind, time, raw)``) and the time the host
says it is. Out: results (``orders``: success, timeout, cancelled, paid_late) and counters.
``matcher`` holds the per-key rules of SEMANTICS.md (with ``paid_late`` and ``snapshot``,
its checkpointable state); ``pipeline`` wraps it in the time handling (processing or event
time, watermark, ``reorder`` buffer, lateness; ``wallclock``: --idle and --max-future).
``durations`` and ``clocks`` are the units and the injected "now". Nothing here imports
another room.
"""

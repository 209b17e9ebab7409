"""State: checkpoints of a local run in one SQLite file (``store.StateStore``).

In: the pipeline's state (open orders, watermark, reorder buffer), file positions and
the outbox. Out: the same, restored at the next start.
"""

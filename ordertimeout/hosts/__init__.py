"""Hosts run the rules: they own input, timers and state.

``runtime`` is the local asyncio host (``watch`` and ``simulate``): it reads chunks,
feeds the pipeline, sleeps to the next timer, writes results and checkpoints.
``kafka/`` is the second host (``ordertimeout kafka``): a worker per group member, a
task per assigned partition with its own pipeline, state in a changelog topic.
Neither restates a rule.
"""

"""Observing a run: counters, health, diagnostics.

In: the counters of the pipeline, the sinks and the hosts. Out: ``logs`` (diagnostics as
text or JSON lines on stderr), ``monitor`` (the counters of all of it, for ``--stats``),
``metrics`` and ``metrics_server`` (``/metrics`` and ``/healthz``, prometheus-client and
aiohttp imported only when asked for), ``health`` and ``histogram`` (latency buckets).
Imports only ``rules`` and ``errors``.
"""

# ordertimeout: find orders created and not paid within a time limit.
#
#   sources ──chunks──▶ runtime ──lines──▶ pipeline ──events──▶ matcher ──results──▶ sinks
#   (files, stdin,      (asyncio: reads,   (parse, time mode,   (pure rules:         (JSON lines,
#    follow, simulator)  sleeps to the      watermark, reorder,  open orders,          rows, rejects)
#                        next deadline,     late + rejected)     deadlines)
#                        checkpoints)
#                            │                                                    terminal: status
#                            └──▶ state (SQLite: open orders, watermark, offsets)   line, summary
#
# monitor gathers the counters of all of it (--stats at exit; metrics + metrics_server
# serve them and health on /metrics and /healthz); logs writes diagnostics as text or JSON.
# clocks inject "now" into the runtime; durations parse --within and friends; cli only
# validates options, builds this pipeline and runs it.
"""ordertimeout: Flink CEP's create-then-pay timeout job as a Unix tool."""

__version__ = "0.1.0"

from .events import EventParser, EventSchema, RejectedLine  # noqa: E402
from .matcher import Cancelled, Matcher, Mode, OpenOrder, PaidLate, Success, Timeout  # noqa: E402
from .pipeline import Pipeline, TimeMode  # noqa: E402

__all__ = [
    "__version__",
    "Matcher",
    "Mode",
    "OpenOrder",
    "Success",
    "Timeout",
    "Cancelled",
    "PaidLate",
    "Pipeline",
    "TimeMode",
    "EventParser",
    "EventSchema",
    "RejectedLine",
]

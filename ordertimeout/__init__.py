# ordertimeout: find orders created and not paid within a time limit.
#
#   sources ──chunks──▶ runtime ──lines──▶ pipeline ──events──▶ matcher ──results──▶ sinks
#   (files, stdin,      (asyncio: cuts     (parse, time mode,   (pure rules:         (rows or JSON
#    follow, simulator;  lines (framing),   watermark, reorder,  open orders,          lines to stdout;
#    a reader thread     works each chunk   late + rejected)     deadlines)            rejects)
#    (arrivals) stamps   at its arrival,                                                   │ --webhook,
#    each pipe chunk)    sleeps to the next                                                ▼ --exec
#       │                timer, checkpoints)                                 notify ──▶ outbox ──▶ delivery
#    files (identity,        │                                               (memory, or SQLite    (relay: webhook,
#    resume points)          └──▶ state (SQLite: open orders, watermark,      rows in the           exec_sink;
#                                 reorder buffer, file offsets, outbox)       checkpoint)           retries)
#
# orders holds the data the matcher hands out: open orders, the four result kinds, their
# stable ids. kafka/ is a second host for the same pipeline: a worker per group member, a
# task per assigned partition (its own pipeline and watermark), state in a changelog topic.
# monitor gathers the counters of all of it (--stats at exit; metrics + metrics_server
# serve them and health on /metrics and /healthz); logs writes diagnostics as text or JSON.
# clocks inject "now" into the runtime; durations parse --within and friends; terminal
# draws the status line and the summary; cli only validates options, builds this
# pipeline and runs it.
"""ordertimeout: Flink CEP's create-then-pay timeout job as a Unix tool."""

import os as _os
import signal as _signal
import sys as _sys

__version__ = "0.1.0"


def _started_as_the_command() -> bool:
    """Whether this process is the ``ordertimeout`` command: its installed script, or
    ``python -m ordertimeout`` (while the package is imported, argv[0] is ``-m``). A
    program importing the library keeps its own signal handling."""
    program = _os.path.basename(_sys.argv[0]) if _sys.argv else ""
    if program == "-m":
        argv = getattr(_sys, "orig_argv", [])
        return "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["ordertimeout"]
    return _os.path.splitext(program)[0] in ("ordertimeout", "ordertimeout-script")


def _stopped_before_the_run(signum: int, frame) -> None:
    # Ctrl-C before a run's own handlers are in place (while the command starts, or in a
    # command without a run, like generate): nothing was decided that must still be
    # written, so end at once, quietly, with the status a stopped run has.
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            # Inside an import: an exception raised here may have to unwind through a
            # compiled module's initialization, and orjson's then crashes the process
            # (a segfault). Imports come before any output: nothing to flush, leave now.
            _os._exit(128 + signum)
        frame = frame.f_back
    raise SystemExit(128 + signum)


# The first thing the command does, before the imports that take most of its start-up:
# without it, a Ctrl-C in that time prints a KeyboardInterrupt traceback. (An ignored
# SIGINT, as in a background job of a script, stays ignored.)
if _started_as_the_command():
    if _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
        _signal.signal(_signal.SIGINT, _stopped_before_the_run)
    # Then stdin, if the command will read it: a producer's lines keep the moments they
    # come at while the rest starts (see arrivals).
    from .inputs.arrivals import prefetch_stdin as _prefetch_stdin

    _prefetch_stdin(_sys.argv[1:])

from .rules.events import EventParser, EventSchema, RejectedLine  # noqa: E402
from .rules.matcher import Cancelled, Matcher, Mode, OpenOrder, PaidLate, Success, Timeout  # noqa: E402
from .rules.pipeline import Pipeline, TimeMode  # noqa: E402

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

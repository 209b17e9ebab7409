# ordertimeout: find orders created and not paid within a time limit. The rooms, lowest first
# (a room imports only the rooms above it in this list; see docs/architecture.md):
#
#   errors    the exceptions several rooms share
#   rules     pure and synchronous: events (parsing), orders (results, ids), matcher (+ paid_late,
#             snapshot), reorder, pipeline (time modes, watermark, lateness, idleness)
#   observe   logs, histogram, health, metrics (+ metrics_server), monitor (all the counters)
#   inputs    framing, arrivals (the reader thread), files (identity, resume), sources, simulator,
#             unusable and hints (a new user's mistakes, named with their fix)
#   outputs   sinks (JSON lines, writer, rejects), rows (for people), terminal (status, summary)
#   notify    notifier ──▶ outbox (memory or SQLite) ──▶ delivery (relay) ──▶ webhook, exec_sink
#   state     store: SQLite checkpoints (open orders, watermark, reorder buffer, offsets, outbox)
#   hosts     runtime (the local asyncio host), kafka/ (a worker, a task per partition)
#   cli       thin: options, one module per command
#
#   inputs ──chunks──▶ host ──lines──▶ pipeline ──events──▶ matcher ──results──▶ outputs
#                       │                                                  └──▶ notify
#                       └──▶ state (local) or changelog topic (kafka)
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

#: The public API, each name imported from its module when first used: the command's
#: start-up (``--version``, or ``watch`` importing only what it runs) does not pay for it.
_API = {
    "EventParser": "rules.events", "EventSchema": "rules.events", "RejectedLine": "rules.events",
    "Cancelled": "rules.matcher", "Matcher": "rules.matcher", "Mode": "rules.matcher", "OpenOrder": "rules.matcher",
    "PaidLate": "rules.matcher", "Success": "rules.matcher", "Timeout": "rules.matcher",
    "Pipeline": "rules.pipeline", "TimeMode": "rules.pipeline",
}


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # __import__, not importlib.import_module: `python -X importtime` sees only the former.
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value  # once: later lookups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


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

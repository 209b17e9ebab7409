"""Test-session set-up."""

import signal

# The suite stops real processes with SIGINT and SIGHUP, which keep a signal they were
# started with ignored (as nohup expects). A suite run as a background job of a script,
# or under nohup, has those ignored and would pass that on: give its children the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)

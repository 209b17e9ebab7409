"""Arrivals: the reader thread of pipes, and stdin read from the process's first moments."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time

import click
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertimeout.inputs.arrivals import (
    READ_AHEAD_CHUNKS,
    ROTATED,
    WATCH_FLAG_OPTIONS,
    WATCH_VALUE_OPTIONS,
    StampedReader,
    _stdin_is_the_input,
)
from ordertimeout.cli import main

from .helpers import COMMAND


def test_the_option_tables_are_the_watch_commands_own():
    """The prefetch tells files from option values by these tables: they must not drift
    from the command (an option added to watch and not here would make a value look like
    a file, and stdin would be left unread early: safe, but slower timers)."""
    values, flags = set(), set()
    command = main.get_command(click.Context(main), "watch")  # as the group gives it (with --config)
    for param in command.params:
        if isinstance(param, click.Option):
            assert not param._flag_needs_value, f"{param.name}: an optional value cannot be told from a file"
            (flags if param.is_flag or param.count else values).update(param.opts + param.secondary_opts)
    assert (values, flags) == (set(WATCH_VALUE_OPTIONS), set(WATCH_FLAG_OPTIONS))


@pytest.mark.parametrize(
    "args,reads_stdin",
    [
        ([], True),
        (["--json", "--within", "1s", "-q"], True),
        (["--within=1s", "--processing-time"], True),
        (["-"], True),
        (["events.jsonl", "-"], True),
        (["--", "-"], True),
        (["events.jsonl"], False),
        (["--within", "1s", "events.jsonl"], False),
        (["--state", "s.db", "--", "--json"], False),  # a file named --json
        (["--help"], False),
        (["-h"], False),
        (["--webhook-secret", "s3cret"], False),  # the command starts itself again: nothing may be read
        (["--webhook-secret=s3cret"], False),
        (["--no-such-option"], False),  # anything unclear: left to click
        (["-qv"], False),
    ],
)
def test_stdin_is_read_early_only_when_watch_reads_it(args, reads_stdin):
    assert _stdin_is_the_input(args) is reads_stdin


def _collect(reader: StampedReader, now_ms=None, from_monotonic=None, after=None):
    async def scenario():
        items = []
        async for chunk, stamp in reader.chunks(now_ms, from_monotonic):
            items.append((chunk, stamp))
            if after is not None:
                after(len(items))
        return items

    return asyncio.run(asyncio.wait_for(scenario(), 20))


def test_chunks_read_before_the_run_keep_their_moments_on_its_clock():
    read_fd, write_fd = os.pipe()
    reader = StampedReader(read_fd, ahead=8)
    reader.start()
    os.write(write_fd, b"early\n")
    deadline = time.monotonic() + 10
    while not reader._items and time.monotonic() < deadline:
        time.sleep(0.01)
    read_at = reader._items[0][1]  # monotonic seconds, when the thread read it

    def more(count):
        if count == 1:
            os.write(write_fd, b"late\n")
            os.close(write_fd)

    items = _collect(reader, lambda: 7, lambda moment: round((moment - read_at) * 1000), more)
    os.close(read_fd)
    assert items == [(b"early\n", 0), (b"late\n", 7), (b"", 7)]


def test_the_thread_stops_reading_ahead_of_the_run():
    """Backpressure: the thread reads at most READ_AHEAD_CHUNKS chunks the run has not taken."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    reader = StampedReader(read_fd, read_bytes=10)
    seen = []

    def check(count):
        if count == 1:
            for _ in range(100):  # more than fits ahead: the writer must find the pipe full
                try:
                    os.write(write_fd, b"x" * 10)
                except BlockingIOError:
                    break
            time.sleep(0.1)
            seen.append(len(reader._items))
            os.close(write_fd)

    os.write(write_fd, b"first\n")
    items = _collect(reader, after=check)
    os.close(read_fd)
    assert seen[0] <= READ_AHEAD_CHUNKS
    assert b"".join(chunk for chunk, _ in items).startswith(b"first\n") and items[-1] == (b"", None)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20), st.integers(1, 64))
def test_whatever_is_written_comes_out_whole_and_in_order(writes, read_bytes):
    """Any writes, any read size, a slow or fast writer: the chunks are the bytes written,
    in order, then the empty chunk that ends the input."""
    read_fd, write_fd = os.pipe()
    reader = StampedReader(read_fd, read_bytes=read_bytes)

    def write_all():
        for data in writes:
            os.write(write_fd, data)
        os.close(write_fd)

    writer = threading.Thread(target=write_all)
    writer.start()
    items = _collect(reader)
    writer.join()
    os.close(read_fd)
    assert b"".join(chunk for chunk, _ in items) == b"".join(writes)
    assert items[-1] == (b"", None) and all(chunk and len(chunk) <= read_bytes for chunk, _ in items[:-1])


def test_a_followed_named_pipe_marks_each_writers_end(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = StampedReader(None, path=str(fifo), reopen=True)

    def write_twice():
        for text in (b"one\n", b"two\n"):
            with open(fifo, "wb") as writer:
                writer.write(text)
            time.sleep(0.05)

    threading.Thread(target=write_twice, daemon=True).start()

    async def scenario():
        items = []
        async for chunk, _ in reader.chunks():
            items.append(chunk)
            if items.count(ROTATED) == 2:
                reader.stop()
                return items
        return items

    items = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert [item for item in items if item is not ROTATED] == [b"one\n", b"two\n"]
    assert items.count(ROTATED) == 2


def test_a_read_error_reaches_the_run():
    reader = StampedReader(None, path="/nonexistent/fifo")
    with pytest.raises(FileNotFoundError):
        _collect(reader)


# -- the command ------------------------------------------------------------------------

SLOW_START = """
import sys, time
if {prefetch}:
    from ordertimeout.inputs.arrivals import prefetch_stdin
    prefetch_stdin(["watch"])  # as the package does when it is the command
time.sleep(0.4)  # a start-up slower than any machine's
from ordertimeout.cli import main
main(["watch", "--processing-time", "--within", "50ms", "--json", "-q"])
"""


@pytest.mark.parametrize("prefetch", [True, False])
def test_lines_written_while_the_command_starts_keep_the_moment_they_came(prefetch):
    """A line written at once, while the command is still starting, is stamped when it
    came, not when the run began (which clamping to the run's start would give)."""
    started = time.time() * 1000
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SLOW_START.format(prefetch=prefetch))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b'{"userId":"a","type":"create"}\n')
    process.stdin.flush()
    time.sleep(0.6)
    process.stdin.write(b'{"userId":"b","type":"create"}\n')
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    created = {result["key"]: result["created"] for result in map(orjson.loads, out.splitlines())}
    assert set(created) == {"a", "b"}
    if prefetch:
        assert created["a"] - started < 300  # read within the sleep, by the prefetch
        assert created["b"] - created["a"] >= 300  # and the next line when it came
    else:
        assert created["a"] - started >= 400  # read once the run began


def test_watch_of_a_file_leaves_a_piped_stdin_unread(tmp_path):
    """stdin that is not an input stays where it is: `while read x; do ordertimeout watch
    f; done < list` must not lose the list's lines to an early reader."""
    events = tmp_path / "events.jsonl"
    events.write_bytes(b'{"userId":"a","type":"create","ts":1}\n')
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"not for watch\n")
    try:
        done = subprocess.run([*COMMAND, "watch", str(events), "--json", "-q"], stdin=read_fd,
                              capture_output=True, timeout=60)
        os.close(write_fd)
        assert done.returncode == 0, done.stderr
        assert b'"key":"a"' in done.stdout
        assert os.read(read_fd, 100) == b"not for watch\n"
    finally:
        os.close(read_fd)

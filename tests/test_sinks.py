"""The stdout sink: the result writer keeps the kinds asked for and their pay latencies,
and the output buffer writes once per flush (the JSON lines are held to the per-line path
in test_batches.py)."""

import io

import pytest

from ordertimeout.rules.matcher import Cancelled, Success, Timeout
from ordertimeout.outputs.rows import HumanFormatter
from ordertimeout.outputs.sinks import JsonFormatter, OutputBuffer, ResultWriter, json_line

CREATE = b'{"userId":"u1","type":"create","ts":0,"orderId":"o-1"}'
PAY = b'{"userId":"u1","type":"pay","ts":500,"amount":12.5}'


@pytest.mark.parametrize("only", [None, "timeout"])
def test_a_result_writer_writes_the_rows_of_format_for_the_kinds_it_keeps(only):
    formatter = HumanFormatter(1000)
    results = [Success("u1", 0, 500, 1000, CREATE, PAY), Timeout("u2", 100, 1100, CREATE),
               Cancelled("u3", 200, 300, 1200, CREATE, b"{}")]
    stream = io.BytesIO()
    writer = ResultWriter(OutputBuffer(stream), formatter, only)
    writer.write([])
    writer.write(results)
    writer.flush()
    kept = [result for result in results if only is None or type(result) is Timeout]
    assert stream.getvalue() == b"".join(map(formatter.format, kept))


def test_a_result_writer_counts_the_pay_latency_of_every_success_printed_or_not():
    stream = io.BytesIO()
    writer = ResultWriter(OutputBuffer(stream), JsonFormatter(), "timeout")
    writer.write([Success("u1", 0, 500, 1000, CREATE, PAY), Timeout("u2", 100, 1100, CREATE),
                  Success("u3", 10, 20, 1010, CREATE, PAY)])
    writer.flush()
    assert stream.getvalue() == json_line(Timeout("u2", 100, 1100, CREATE))
    assert (len(writer.latencies), writer.latencies.percentile(1.0), writer.latencies.sum) == (2, 500, 510)


class _Counting(io.BytesIO):
    writes = 0

    def write(self, data):
        self.writes += 1
        return super().write(data)


def test_the_output_buffer_writes_once_per_flush_and_early_when_large():
    stream = _Counting()
    out = OutputBuffer(stream, flush_bytes=100)
    out.write_lines([b"a" * 10] * 5)
    assert stream.writes == 0
    out.flush()
    assert (stream.writes, stream.getvalue()) == (1, b"a" * 50)
    out.write_lines([b"b" * 60, b"c" * 60])  # past flush_bytes: written without waiting
    assert stream.writes == 2
    out.flush()  # nothing queued: no empty write
    assert stream.writes == 2


def test_write_all_delivers_every_byte_in_order_through_a_storm_of_signals():
    """A small pipe, a reader that takes it slowly, and SIGALRM every millisecond with a
    handler that returns (as the run's stop handler does): every write(2) is cut short or
    interrupted many times, and every byte still arrives, once, in order. (Python's
    buffered stdout loses the rest of such a write.)"""
    import fcntl
    import os
    import signal
    import threading
    import time

    from ordertimeout.outputs.sinks import write_all

    data = b"".join(b"%09d\n" % n for n in range(60_000))
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, 1031, 4096)  # F_SETPIPE_SZ: one page
    got = bytearray()

    def read_slowly():
        while chunk := os.read(read_end, 3000):
            got.extend(chunk)
            time.sleep(0.0002)

    signals = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: signals.append(signum))
    reader = threading.Thread(target=read_slowly)
    reader.start()
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        write_all(write_end, data)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
        os.close(write_end)
        reader.join(30)
        os.close(read_end)
    assert len(signals) > 10  # the storm came while writing
    assert bytes(got) == data


def test_before_flush_runs_before_any_byte_is_written_and_a_failure_keeps_the_lines():
    stream = io.BytesIO()
    out = OutputBuffer(stream, flush_bytes=100)
    seen = []

    def before_flush():
        seen.append(stream.getvalue())
        if len(seen) == 1:
            raise OSError("the outbox cannot be written")

    out.before_flush = before_flush
    with pytest.raises(OSError):
        out.write_lines([b"x" * 60, b"y" * 60])  # full: the flush it forces asks first
    assert stream.getvalue() == b""  # refused: nothing shown
    out.flush()
    assert seen == [b"", b""] and stream.getvalue() == b"x" * 60 + b"y" * 60

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

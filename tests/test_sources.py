"""Line framing on its own: chunks in, lines out, offsets exact, long lines never held."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordertimeout.sources import ChunkReader, Input, LineSplitter, Overlong


def split_all(chunks, limit=100, offset=0):
    splitter = LineSplitter(limit, offset)
    lines, offsets = [], []
    for chunk in chunks:
        lines += splitter.push(chunk)
        offsets.append(splitter.offset)
    lines += splitter.finish()
    return lines, offsets, splitter


def test_lines_across_chunks_and_a_last_line_without_newline():
    lines, offsets, splitter = split_all([b"ab", b"c\nde", b"f\n\ng", b"h"])
    assert lines == [b"abc", b"def", b"", b"gh"]
    assert offsets == [0, 4, 9, 9]
    assert splitter.offset == 11


def test_offset_starts_where_it_is_told():
    _, offsets, _ = split_all([b"x\n"], offset=1000)
    assert offsets == [1002]


def test_an_over_long_line_is_skipped_to_its_newline_and_reported():
    chunks = [b"ok\n" + b"a" * 60, b"a" * 60, b"a" * 500, b"aa\nnext\n"]
    lines, offsets, _ = split_all(chunks, limit=100)
    assert lines[0] == b"ok" and lines[2] == b"next"
    overlong = lines[1]
    assert type(overlong) is Overlong and overlong.size == 622 and overlong == b"a" * 120  # what was held
    assert offsets[-1] == sum(map(len, chunks))


def test_an_over_long_last_line_without_newline():
    lines, _, _ = split_all([b"z" * 150], limit=100)
    assert type(lines[0]) is Overlong and lines[0].size == 150


@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(min_value=1, max_value=30))
def test_splitting_agrees_with_split_for_any_chunking(chunks, limit):
    data = b"".join(chunks)
    lines, _, splitter = split_all(chunks, limit=limit)
    expected = data.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert len(lines) == len(expected)
    for got, want in zip(lines, expected, strict=True):
        if len(want) > limit and type(got) is Overlong:
            assert got.size == len(want) and want.startswith(got)
        else:
            assert got == want
    assert splitter.offset == len(data)


@pytest.mark.parametrize("limit", [1, 5])
def test_memory_held_never_exceeds_the_limit(limit):
    splitter = LineSplitter(limit)
    for _ in range(100):
        splitter.push(b"y" * 7)
        assert len(splitter._carry) <= limit


def test_no_progress_fraction_for_gzip_inputs(tmp_path):
    import gzip

    plain, packed = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    plain.write_bytes(b'{"userId":1}\n' * 100)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert ChunkReader([Input(str(plain), path=str(plain))]).progress() == 0.0
    # Its reads count decompressed bytes, which the compressed size cannot measure.
    assert ChunkReader([Input(str(packed), path=str(packed))]).progress() is None

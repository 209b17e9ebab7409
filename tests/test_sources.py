"""Line framing on its own: chunks in, lines out, offsets exact, long lines never held."""

import asyncio
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ordertimeout.inputs.sources import (
    END, FINGERPRINT_BYTES, ChunkReader, FileIdentity, Input, LineSplitter, Overlong, SavedPosition, resume_position,
)


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


def test_a_line_across_chunks_is_kept_up_to_the_limit_and_not_one_byte_more():
    exact, _, _ = split_all([b"e" * 60, b"e" * 40, b"\n"], limit=100)
    assert exact == [b"e" * 100] and type(exact[0]) is bytes
    over, _, _ = split_all([b"o" * 60, b"o" * 41, b"\n"], limit=100)
    assert type(over[0]) is Overlong and over[0].size == 101


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


# -- the reader: arrival stamps, devices, file identity ----------------------------------------


class CountingClock:
    """A clock whose every reading is the next integer: shows which reads were stamped."""

    def __init__(self):
        self.readings = 0

    def now_ms(self):
        self.readings += 1
        return 1000 + self.readings


async def read_everything(reader, clock=None):
    reader.start(clock)
    items = []
    try:
        while (item := await reader.get(10)) is not END:
            items.append(item)
    finally:
        reader.stop()
    return items


def test_a_pipe_is_read_by_a_thread_that_stamps_each_chunk_on_arrival():
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"one\n")
    clock = CountingClock()
    with os.fdopen(read_fd, "rb", buffering=0) as stream:
        async def scenario():
            reader = ChunkReader([Input("<stdin>", stream=stream)])
            reader.start(clock)
            first = await reader.get(10)
            os.write(write_fd, b"two\n")
            os.close(write_fd)
            second = await reader.get(10)
            end_of_input = await reader.get(10)
            reader.stop()
            return first, second, end_of_input, await reader.get(10)

        first, second, end_of_input, end = asyncio.run(scenario())
    assert first == ("<stdin>", b"one\n", 1001) and second == ("<stdin>", b"two\n", 1002)
    assert end_of_input == ("<stdin>", b"", None) and end is END


def test_dev_null_and_a_named_pipe_end_instead_of_hanging(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as writer:
            writer.write(b"from the fifo\n")

    import threading

    threading.Thread(target=feed).start()
    with open(os.devnull, "rb") as devnull:
        inputs = [Input("<stdin>", stream=devnull), Input(str(fifo), path=str(fifo))]
        items = asyncio.run(asyncio.wait_for(read_everything(ChunkReader(inputs), CountingClock()), 20))
    assert [(name, chunk) for name, chunk, _ in items] == [
        ("<stdin>", b""), (str(fifo), b"from the fifo\n"), (str(fifo), b"")]


def test_regular_files_are_read_directly_and_known_by_identity(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"x" * 3000)
    reader = ChunkReader([Input("events", path=str(path))], chunk_bytes=1000)
    items = asyncio.run(read_everything(reader, CountingClock()))
    assert [len(chunk) for _, chunk, _ in items] == [1000, 1000, 1000, 0]
    assert all(arrival is None for _, _, arrival in items)  # read when used: no stamp needed
    identity = reader.identity("events")
    info = os.stat(path)
    assert identity == (str(path.resolve()), info.st_dev, info.st_ino, b"x" * FINGERPRINT_BYTES)
    assert reader.identity("<stdin>") is None


def test_resume_position_by_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"line one\nline two\n")
    info = os.stat(path)
    size, digest = FileIdentity(str(path), info.st_dev, info.st_ino, b"line one\nline two\n").fingerprint(9)
    saved = {str(path): SavedPosition(info.st_dev, info.st_ino, size, digest, 9, 1)}
    assert resume_position(saved, "./events.jsonl") == (9, 1, None)
    os.rename(path, tmp_path / "moved.jsonl")  # found by device and inode under its new name
    assert resume_position(saved, "moved.jsonl") == (9, 1, None)
    assert resume_position(saved, "events.jsonl") == (0, 0, None)  # gone: nothing to resume


def test_no_progress_fraction_for_gzip_inputs(tmp_path):
    import gzip

    plain, packed = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    plain.write_bytes(b'{"userId":1}\n' * 100)
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert ChunkReader([Input(str(plain), path=str(plain))]).progress() == 0.0
    # Its reads count decompressed bytes, which the compressed size cannot measure.
    assert ChunkReader([Input(str(packed), path=str(packed))]).progress() is None


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4), st.integers(1, 40), st.booleans())
def test_a_gzip_stream_is_read_as_its_bytes_whatever_the_chunks(members, chunk_bytes, compress):
    """stdin or a pipe starting with gzip's magic is decompressed as it comes: members one
    after another, the magic split across reads; anything else passes through unchanged."""
    import gzip
    import io

    plain = b"".join(members)
    data = b"".join(gzip.compress(member) for member in members) if compress else b"{" + plain
    items = asyncio.run(read_everything(ChunkReader([Input("<stdin>", stream=io.BytesIO(data))], chunk_bytes=chunk_bytes)))
    assert b"".join(chunk for _, chunk, _ in items) == (plain if compress else data)


@pytest.mark.parametrize("data", [b"\x1f\x8b", b"\x1f\x8b bad first line\n" + b'{"userId":"a"}\n' * 3])
def test_a_stream_that_only_starts_like_gzip_passes_as_it_came(data):
    """A bad first line that happens to start with gzip's magic is a bad line, rejected on
    its own: the input is not a failed gzip stream, and the lines after it still count."""
    import io

    items = asyncio.run(read_everything(ChunkReader([Input("<stdin>", stream=io.BytesIO(data))], chunk_bytes=5)))
    assert b"".join(chunk for _, chunk, _ in items) == data


def test_a_cut_gzip_stream_is_an_error_of_its_input():
    import gzip
    import io

    from ordertimeout.inputs.sources import SourceError

    data = gzip.compress(b'{"userId":"a"}\n' * 100)[:-12]
    with pytest.raises(SourceError, match="cannot read <stdin>: not a complete gzip stream"):
        asyncio.run(read_everything(ChunkReader([Input("<stdin>", stream=io.BytesIO(data))], chunk_bytes=64)))


@given(st.lists(st.integers(0, 40), min_size=1, max_size=3), st.integers(1, 40))
def test_zero_padding_after_a_gzip_member_is_skipped_as_in_a_gz_file(paddings, chunk_bytes):
    """A gzip stream padded with zero bytes (tar, dd) reads as ``gzip -d`` and a .gz file
    by path read it (Python's gzip skips the padding): on stdin too, padding between
    members and at the end, split across reads any way."""
    import gzip
    import io

    members = [b'{"userId":"%d"}\n' % index for index in range(len(paddings))]
    data = b"".join(gzip.compress(member) + b"\0" * padding for member, padding in zip(members, paddings))
    items = asyncio.run(read_everything(ChunkReader([Input("<stdin>", stream=io.BytesIO(data))], chunk_bytes=chunk_bytes)))
    assert b"".join(chunk for _, chunk, _ in items) == b"".join(members)


def test_caught_up_only_when_a_read_waits_for_data_not_written_yet(tmp_path):
    """What --idle waits for after a restart: a followed file read to its end, or a pipe
    with nothing to read, and no input after it still unread; a regular file never (its
    end is END)."""
    followed, plain = tmp_path / "followed.jsonl", tmp_path / "plain.jsonl"
    followed.write_bytes(b"a\n" * 10)
    plain.write_bytes(b"b\n")
    read_fd, write_fd = os.pipe()
    quiet_pipe = os.fdopen(read_fd, "rb", buffering=0)
    lone_read_fd, lone_write_fd = os.pipe()
    lone_pipe = os.fdopen(lone_read_fd, "rb", buffering=0)

    async def scenario():
        answers = []
        for inputs in ([Input("f", path=str(followed), follow=True)],
                       [Input("<stdin>", stream=quiet_pipe), Input("p", path=str(plain))],
                       [Input("<stdin>", stream=lone_pipe)]):
            reader = ChunkReader(inputs, chunk_bytes=4)
            reader.start()
            try:
                chunks = 0
                while True:
                    try:
                        name, chunk, _ = await reader.get(0.2)
                        chunks += bool(chunk)
                    except TimeoutError:
                        break
                answers.append((chunks, reader.caught_up()))
            finally:
                reader.stop()
        return answers

    (followed_chunks, followed_caught_up), (_, pipe_before_plain), (_, lone) = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert (followed_chunks, followed_caught_up) == (5, True)
    assert pipe_before_plain is False  # the quiet pipe has the plain file after it
    assert lone is True  # a quiet pipe alone: nothing left unread
    for fd in (write_fd, lone_write_fd):
        os.close(fd)
    quiet_pipe.close()
    lone_pipe.close()

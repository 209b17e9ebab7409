"""gzip on the way in: a ``.gz`` file by path, or a stream that starts with gzip's magic.

In: a path, or the (chunk, arrival) pairs of a stream. Out: the decompressed bytes in
chunks, with the arrival of the compressed chunk they came from.
"""

from __future__ import annotations

import asyncio

from .files import GZIP_MAGIC

__all__ = ["gzip_file_chunks", "gunzip_if_compressed"]


async def gzip_file_chunks(path: str, start_offset: int, chunk_bytes: int):
    """The decompressed bytes of a gzip file in chunks, from ``start_offset`` (counted in
    decompressed bytes, as line offsets are). A damaged file is an ``OSError`` (the reader
    reports it as the input's failure)."""
    import gzip
    import zlib

    try:
        with gzip.open(path, "rb") as stream:
            if start_offset:
                stream.seek(start_offset)
            while chunk := stream.read1(chunk_bytes):
                yield chunk
                await asyncio.sleep(0)  # let timers and signals in between chunks
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise OSError(f"not a complete gzip file ({error})") from None


async def gunzip_if_compressed(chunks, piece_bytes: int):
    """An input read as a stream (stdin, a pipe, a device), decompressed as it comes when
    it starts with gzip's magic bytes (``curl .../events.jsonl.gz | ordertimeout watch``);
    anything else passes through unchanged (no JSON text starts with those bytes).
    Members written one after another are read in turn, as ``gzip -d`` reads them (zero
    padding after one skipped); no piece of output is larger than a chunk, whatever the
    compression ratio (at most ``piece_bytes``). A stream that only starts like gzip (a bad first line, say) and
    fails before its first decompressed byte is passed on as it came, so its lines are
    rejected one by one like any bad line and the good ones still count."""
    head, arrival = b"", None
    async for chunk, arrival in chunks:
        head += chunk
        if len(head) >= len(GZIP_MAGIC):
            break
    if not head.startswith(GZIP_MAGIC):
        if head:
            yield head, arrival
        async for item in chunks:
            yield item
        return
    import zlib

    inflate = zlib.decompressobj(31)  # 31: the gzip format

    def expand(data: bytes):
        nonlocal inflate
        while data:
            if inflate.eof:
                # Zero bytes after a member are padding (tar, dd), skipped as gzip -d and
                # Python's gzip (a .gz file by path) skip them; a member starts with the magic.
                data = data.lstrip(b"\0")
                if not data:
                    return
                inflate = zlib.decompressobj(31)  # the next member
            piece = inflate.decompress(data, piece_bytes)
            if piece:
                yield piece
            data = inflate.unconsumed_tail or (inflate.unused_data if inflate.eof else b"")

    # What came before the first decompressed byte, until a chunk's worth: while it is
    # kept, the stream may still turn out not to be gzip.
    undecided: list[tuple[bytes, int | None]] | None = []
    failure = None
    chunk = head
    try:
        while True:
            if undecided is not None:
                undecided.append((chunk, arrival))
            pieces = list(expand(chunk))
            if pieces or (undecided is not None and sum(len(held) for held, _ in undecided) > piece_bytes):
                undecided = None
            for piece in pieces:
                yield piece, arrival
            try:
                chunk, arrival = await anext(chunks)
            except StopAsyncIteration:
                break
        if not inflate.eof:
            failure = "it ends in the middle"
    except zlib.error as error:
        failure = str(error)
    if failure is None:
        return
    if undecided is None:
        raise OSError(f"not a complete gzip stream ({failure})")
    for item in undecided:  # no gzip after all: the bytes as they came
        yield item
    async for item in chunks:
        yield item

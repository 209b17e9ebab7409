"""Line framing: chunks in, lines out, byte offsets exact, an over-long line never held whole."""

from __future__ import annotations

__all__ = ["LineSplitter", "Overlong"]


class Overlong(bytes):
    """A line longer than the limit, in place of the line: its first bytes, and ``size``."""

    size: int

    def __new__(cls, prefix: bytes, size: int) -> "Overlong":
        line = super().__new__(cls, prefix)
        line.size = size
        return line


class LineSplitter:
    """Cuts chunks into lines, never holding more than ``max_line_bytes`` of one line.

    ``push`` returns the complete lines of a chunk (without newlines), ``finish`` the last
    one of an input that ends without a newline. A line that outgrows the limit is
    skipped up to its newline without being kept, and comes out as an :class:`Overlong`
    carrying only its first bytes. ``offset`` is the byte position just after the last
    complete line handed out, counted from ``offset`` given at the start.
    """

    PREFIX_BYTES = 256

    def __init__(self, max_line_bytes: int, offset: int = 0) -> None:
        self.max_line_bytes = max_line_bytes
        self._received = offset
        self._carry = b""
        self._skipping = 0  # bytes of an over-long line skipped so far (0: not skipping)
        self._prefix = b""

    @property
    def offset(self) -> int:
        """Byte position just after the last complete line."""
        return self._received - len(self._carry) - self._skipping

    def push(self, chunk: bytes) -> list[bytes]:
        """The lines completed by ``chunk``."""
        self._received += len(chunk)
        head = []
        if self._skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                self._skipping += len(chunk)
                return []
            head.append(Overlong(self._prefix, self._skipping + newline))
            self._skipping = 0
            chunk = chunk[newline + 1 :]
        lines = (self._carry + chunk if self._carry else chunk).split(b"\n")
        self._carry = lines.pop()
        if len(self._carry) > self.max_line_bytes:
            self._skipping, self._prefix = len(self._carry), self._carry[: self.PREFIX_BYTES]
            self._carry = b""
        return head + lines if head else lines

    def finish(self) -> list[bytes]:
        """End of input: the last line if it had no newline."""
        if self._skipping:
            line, self._skipping = Overlong(self._prefix, self._skipping), 0
            return [line]
        line, self._carry = self._carry, b""
        return [line] if line else []

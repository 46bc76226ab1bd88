"""Incremental reply parser: bytes in, ``Reply`` values out, no I/O.

Bodies are framed by the length the reply line declares, never by looking for CRLF,
because a job body may hold any bytes, CRLF included. The CRLF after a body is required.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import ProtocolError
from ._limits import MAX_BODY, MAX_LINE


class Reply(NamedTuple):
    """One reply from the server.

    Attributes:
        status: The reply word, such as ``"INSERTED"`` or ``"NOT_FOUND"``.
        args: The words after the status, as sent.
        body: The data chunk of ``OK``, ``FOUND`` and ``RESERVED`` replies, else ``None``.
    """

    status: str
    args: tuple[str, ...]
    body: bytes | None = None


# Reply word -> (smallest, largest) number of arguments, and whether a body follows
# whose length is the last argument. Every word beanstalkd 1.12/1.13 sends is here.
_SHAPES: dict[bytes, tuple[int, int, bool]] = {
    b"INSERTED": (1, 1, False),
    b"BURIED": (0, 1, False),
    b"EXPECTED_CRLF": (0, 0, False),
    b"JOB_TOO_BIG": (0, 0, False),
    b"DRAINING": (0, 0, False),
    b"USING": (1, 1, False),
    b"RESERVED": (2, 2, True),
    b"DEADLINE_SOON": (0, 0, False),
    b"TIMED_OUT": (0, 0, False),
    b"DELETED": (0, 0, False),
    b"NOT_FOUND": (0, 0, False),
    b"RELEASED": (0, 0, False),
    b"TOUCHED": (0, 0, False),
    b"WATCHING": (1, 1, False),
    b"NOT_IGNORED": (0, 0, False),
    b"FOUND": (2, 2, True),
    b"KICKED": (0, 1, False),
    b"OK": (1, 1, True),
    b"PAUSED": (0, 0, False),
    b"OUT_OF_MEMORY": (0, 0, False),
    b"INTERNAL_ERROR": (0, 0, False),
    b"BAD_FORMAT": (0, 0, False),
    b"UNKNOWN_COMMAND": (0, 0, False),
}
# Words whose arguments are all decimal numbers (USING carries a tube name).
_NUMERIC = frozenset({b"INSERTED", b"BURIED", b"RESERVED", b"WATCHING", b"FOUND", b"KICKED", b"OK"})
_STATUS = {word: word.decode("ascii") for word in _SHAPES}
# A non-numeric argument (USING's tube name): printable ASCII, no control byte or LF.
_TEXT_ARG = re.compile(rb"[\x21-\x7e]+")
# Beyond this many bytes the parser drops what it already handed out.
_COMPACT_AT = 1 << 16


class ReplyParser:
    """Turns the bytes a server sends into ``Reply`` values.

    Feed it whatever arrived with ``feed``, then call ``next_reply`` until it returns
    ``None`` (more bytes needed). Any split of the same bytes gives the same replies.
    After a ``ProtocolError`` the stream cannot be trusted: discard the parser and the
    connection.

    Args:
        max_line: Longest reply line accepted, CRLF included.
        max_body: Largest body accepted.
    """

    __slots__ = ("_buf", "_max_body", "_max_line", "_pos", "_want")

    def __init__(self, *, max_line: int = MAX_LINE, max_body: int = MAX_BODY) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max_line = max_line
        self._max_body = max_body
        # (status, args, body length) of a reply line whose body has not fully arrived.
        self._want: tuple[str, tuple[str, ...], int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a reply."""
        return len(self._buf) - self._pos

    @property
    def in_reply(self) -> bool:
        """Whether the bytes buffered so far stop in the middle of a reply."""
        return self._want is not None or self.buffered > 0

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server.

        Args:
            data: The bytes, in the order they arrived.
        """
        if self._pos >= _COMPACT_AT and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_reply(self) -> Reply | None:
        """Return the next complete reply, or ``None`` if more bytes are needed.

        Returns:
            The reply, or ``None``.

        Raises:
            ProtocolError: the bytes are not a valid reply (unknown word, wrong arguments,
                a line over ``max_line``, a body over ``max_body``, or a body not
                followed by CRLF).
        """
        if self._want is not None:
            return self._take_body(*self._want)
        buf = self._buf
        pos = self._pos
        end = buf.find(b"\r\n", pos, pos + self._max_line)
        if end < 0:
            if len(buf) - pos >= self._max_line:
                start = bytes(buf[pos : pos + 40])
                raise ProtocolError(f"reply line longer than {self._max_line} bytes: {start!r}...")
            return None
        words = bytes(buf[pos:end]).split(b" ")
        self._pos = end + 2
        word = words[0]
        shape = _SHAPES.get(word)
        if shape is None:
            raise ProtocolError(f"unknown reply {bytes(buf[pos:end])[:60]!r}")
        low, high, has_body = shape
        nargs = len(words) - 1
        if (
            not low <= nargs <= high
            or b"" in words
            or (word in _NUMERIC and not all(w.isdigit() for w in words[1:]))
        ):
            raise ProtocolError(f"malformed {_STATUS[word]} reply {bytes(buf[pos:end])[:60]!r}")
        if word not in _NUMERIC and not all(_TEXT_ARG.fullmatch(w) for w in words[1:]):
            raise ProtocolError(f"non-ASCII or control byte in reply {bytes(buf[pos:end])[:60]!r}")
        args = tuple(w.decode("ascii") for w in words[1:])
        if not has_body:
            return Reply(_STATUS[word], args)
        size = int(args[-1])
        if size > self._max_body:
            raise ProtocolError(
                f"{_STATUS[word]} body of {size} bytes is over the {self._max_body}-byte cap"
            )
        return self._take_body(_STATUS[word], args, size)

    def _take_body(self, status: str, args: tuple[str, ...], size: int) -> Reply | None:
        start = self._pos
        if len(self._buf) - start < size + 2:
            self._want = (status, args, size)
            return None
        self._want = None
        end = start + size
        if self._buf[end : end + 2] != b"\r\n":
            raise ProtocolError(f"{status} body of {size} bytes is not followed by CRLF")
        body = bytes(self._buf[start:end])
        self._pos = end + 2
        return Reply(status, args, body)

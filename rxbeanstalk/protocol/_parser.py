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
# The common reply line: a word and at most two decimal arguments, matched in one C call.
# A line it matches is valid once its word and argument count fit ``_SHAPES``; anything
# else (USING with a name, a malformed line, a line not complete yet) takes the general
# path, which gives the precise error.
_SIMPLE_LINE = re.compile(rb"([A-Z_]+)(?: ([0-9]+))?(?: ([0-9]+))?\r\n")
# A run of consecutive lines whose word has no body and at most one argument, that
# argument decimal (most of what a busy connection reads: INSERTED <id>, DELETED, ...):
# ``replies`` takes a whole run with one regex call and splits it at C speed. A word with
# a body (RESERVED, FOUND, OK) ends a run, as what follows it is a body, which may hold
# anything. Each line is still checked against its word's argument count and the line
# cap, and the first one that fails is left to ``next_reply``, which raises.
_PLAIN: dict[bytes, tuple[str, int, int]] = {
    word: (_STATUS[word], low, high) for word, (low, high, body) in _SHAPES.items() if not body
}
_PLAIN_RUN = re.compile(rb"(?:(?:" + b"|".join(_PLAIN) + rb")(?: [0-9]+)?\r\n)+")
# Builds a Reply without the Python-level ``__new__`` a NamedTuple call goes through
# (what ``Reply._make`` does, less its length check): half the cost, once per reply.
_new_tuple = tuple.__new__
# Beyond this many bytes the parser drops what it already handed out.
_COMPACT_AT = 1 << 16


class ReplyParser:
    """Turns the bytes a server sends into ``Reply`` values.

    Feed it whatever arrived with ``feed``, then call ``next_reply`` until it returns
    ``None`` (more bytes needed), or ``replies`` for all of them at once. Any split of the
    same bytes gives the same replies.
    After a ``ProtocolError`` the stream cannot be trusted: discard the parser and the
    connection.

    Args:
        max_line: Longest reply line accepted, CRLF included.
        max_body: Largest body accepted.
    """

    __slots__ = ("_buf", "_max_body", "_max_line", "_pos", "_want")

    def __init__(self, *, max_line: int = MAX_LINE, max_body: int = MAX_BODY) -> None:
        # The bytes not handed out yet start at ``_pos``. While every reply arrives whole,
        # ``_buf`` is simply the last chunk fed (no copy); only a reply split across
        # chunks makes it a bytearray that gathers them. Idle, it is the shared b"".
        self._buf: bytes | bytearray = b""
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
        buf = self._buf
        if self._pos == len(buf):
            # Everything before was handed out: parse the new bytes where they are.
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return
        if isinstance(buf, bytes):
            # A reply stops part-way: gather from here on in a bytearray (appending to
            # bytes would copy all of it on every feed, quadratic for a large body).
            buf = bytearray(memoryview(buf)[self._pos :])
            self._buf = buf
            self._pos = 0
        elif self._pos >= _COMPACT_AT and self._pos >= len(buf) // 2:
            del buf[: self._pos]
            self._pos = 0
        buf += data

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
        if pos == len(buf):
            if pos:
                # All handed out: let go of the last chunk (an idle connection would
                # otherwise keep it, up to a whole read, until the next reply).
                self._buf = b""
                self._pos = 0
            return None
        match = _SIMPLE_LINE.match(buf, pos, pos + self._max_line)
        if match is not None:
            word, first, second = match.groups()
            shape = _SHAPES.get(word)
            if shape is not None:
                args: tuple[str, ...]
                if first is None:
                    nargs, args = 0, ()
                elif second is None:
                    nargs, args = 1, (first.decode("ascii"),)
                else:
                    nargs, args = 2, (first.decode("ascii"), second.decode("ascii"))
                low, high, has_body = shape
                if low <= nargs <= high:
                    start = match.end()
                    self._pos = start
                    if not has_body:
                        return _new_tuple(Reply, (_STATUS[word], args, None))
                    # A body that is here whole, in the chunk as it came (a job from a
                    # reserve, most often): taken at once, without _body_of/_take_body
                    # (two calls per job). Anything else goes there, for the same result
                    # or the precise error.
                    end = start + int(args[nargs - 1])  # its size: a body word's last argument
                    if (
                        type(buf) is bytes
                        and end - start <= self._max_body
                        and buf.startswith(b"\r\n", end)
                    ):
                        self._pos = end + 2
                        return _new_tuple(Reply, (_STATUS[word], args, buf[start:end]))
                    return self._body_of(_STATUS[word], args)
        return self._general_line(buf, pos)

    def replies(self) -> list[Reply]:
        """Return every complete reply buffered now, oldest first (``[]``: need more bytes).

        The batch form of ``next_reply``, cheaper per reply. When bad bytes follow good
        replies, the good ones are returned first and the next call raises (the bad
        bytes stay buffered, so ``buffered`` is not 0).

        Returns:
            The replies.

        Raises:
            ProtocolError: as ``next_reply``, when the bad bytes come first.
        """
        out: list[Reply] = []
        while True:
            if self._want is None:
                pos = self._pos
                buf = self._buf
                if pos == len(buf):
                    if pos:
                        self._buf = b""  # all handed out: let go of the chunk
                        self._pos = 0
                    return out
                # The first reply goes through next_reply, the cheapest way to one; past
                # it, runs of plain lines are taken whole. (A run whose first line is
                # malformed takes nothing: next_reply then says how.)
                if out and (run := _PLAIN_RUN.match(buf, pos)) is not None:
                    self._plain_run(run.group(), out)
                    if self._pos != pos:
                        continue
            pos, want = self._pos, self._want
            try:
                reply = self.next_reply()
            except ProtocolError:
                if not out:
                    raise
                # Hand out what came before; the next call reads the bad bytes again.
                self._pos, self._want = pos, want
                return out
            if reply is None:
                return out
            out.append(reply)

    def _plain_run(self, run: bytes, out: list[Reply]) -> None:
        pos = self._pos
        max_line = self._max_line
        lines = run.split(b"\r\n")
        lines.pop()  # the empty piece after the last CRLF
        for line in lines:
            size = len(line) + 2
            if size > max_line:
                break
            word, _, arg = line.partition(b" ")
            status, low, high = _PLAIN[word]
            if arg:
                if high == 0:
                    break
                out.append(_new_tuple(Reply, (status, (arg.decode("ascii"),), None)))
            else:
                if low:
                    break
                out.append(_new_tuple(Reply, (status, (), None)))
            pos += size
        self._pos = pos

    def _general_line(self, buf: bytes | bytearray, pos: int) -> Reply | None:
        # Every line the fast path did not take: lines with a tube name, lines not
        # complete yet, and every malformed line, each with its own error.
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
        return self._body_of(_STATUS[word], args)

    def _body_of(self, status: str, args: tuple[str, ...]) -> Reply | None:
        size = int(args[-1])
        if size > self._max_body:
            raise ProtocolError(
                f"{status} body of {size} bytes is over the {self._max_body}-byte cap"
            )
        return self._take_body(status, args, size)

    def _take_body(self, status: str, args: tuple[str, ...], size: int) -> Reply | None:
        buf = self._buf
        start = self._pos
        if len(buf) - start < size + 2:
            self._want = (status, args, size)
            return None
        self._want = None
        end = start + size
        if not buf.startswith(b"\r\n", end):
            raise ProtocolError(f"{status} body of {size} bytes is not followed by CRLF")
        if type(buf) is bytes:
            body = buf[start:end]
        else:
            with memoryview(buf) as view:  # one copy, where bytes(buf[a:b]) makes two
                body = view[start:end].tobytes()
        self._pos = end + 2
        return _new_tuple(Reply, (status, args, body))

"""Property tests of the sans-IO layer: split invariance, bounded buffering, safe builders."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from itertools import pairwise
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxbeanstalk.errors import InvalidArgumentError, ProtocolError
from rxbeanstalk.protocol import (
    MAX_LINE,
    Bury,
    Command,
    Delete,
    Ignore,
    Kick,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    Quit,
    RawCommand,
    Release,
    Reply,
    ReplyParser,
    Reserve,
    ReserveJob,
    ReserveWithTimeout,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    Use,
    Watch,
)

SHORT = settings(max_examples=200, deadline=None)

TUBE_REGEX = r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}"
tube_names = st.from_regex(TUBE_REGEX, fullmatch=True)
u64 = st.integers(0, 2**64 - 1)
bodies = st.binary(max_size=300)

BARE_WORDS = [
    "BURIED",
    "EXPECTED_CRLF",
    "JOB_TOO_BIG",
    "DRAINING",
    "DEADLINE_SOON",
    "TIMED_OUT",
    "DELETED",
    "NOT_FOUND",
    "RELEASED",
    "TOUCHED",
    "NOT_IGNORED",
    "KICKED",
    "PAUSED",
    "OUT_OF_MEMORY",
    "INTERNAL_ERROR",
    "BAD_FORMAT",
    "UNKNOWN_COMMAND",
]


class Wire(NamedTuple):
    """One reply: its bytes, what it parses to, and the length of its line (CRLF included)."""

    data: bytes
    reply: Reply
    line: int


def wire(status: str, args: tuple[str, ...] = (), body: bytes | None = None) -> Wire:
    line = " ".join((status, *args)).encode() + b"\r\n"
    data = line if body is None else line + body + b"\r\n"
    return Wire(data, Reply(status, args, body), len(line))


@st.composite
def valid_replies(draw: st.DrawFn) -> Wire:
    kind = draw(st.sampled_from(["bare", "number", "using", "job", "ok"]))
    if kind == "bare":
        return wire(draw(st.sampled_from(BARE_WORDS)))
    if kind == "number":
        word = draw(st.sampled_from(["INSERTED", "BURIED", "WATCHING", "KICKED"]))
        return wire(word, (str(draw(u64)),))
    if kind == "using":
        return wire("USING", (draw(tube_names),))
    body = draw(bodies)
    if kind == "job":
        word = draw(st.sampled_from(["RESERVED", "FOUND"]))
        return wire(word, (str(draw(u64)), str(len(body))), body)
    return wire("OK", (str(len(body)),), body)


def drain(parser: ReplyParser) -> list[Reply]:
    replies = []
    while (reply := parser.next_reply()) is not None:
        replies.append(reply)
    return replies


def cuts_of(data: st.DataObject, length: int) -> list[int]:
    """Sorted split points of a stream of ``length`` bytes, ending at ``length``."""
    points = data.draw(st.lists(st.integers(0, length), max_size=40))
    return sorted({*points, length})


# ----------------------------------------------------------------------- split invariance


@SHORT
@given(data=st.data())
def test_any_split_of_a_valid_stream_gives_the_same_replies(data: st.DataObject) -> None:
    wires = data.draw(st.lists(valid_replies(), min_size=1, max_size=12))
    stream = b"".join(w.data for w in wires)
    starts = [0]
    for w in wires:
        starts.append(starts[-1] + len(w.data))

    parser = ReplyParser()
    replies: list[Reply] = []
    previous = 0
    for cut in cuts_of(data, len(stream)):
        parser.feed(stream[previous:cut])
        previous = cut
        replies += drain(parser)
        done = sum(1 for end in starts[1:] if end <= cut)
        assert replies == [w.reply for w in wires[:done]]
        # What is left is exactly the unfinished reply, less its line once that was read.
        if done == len(wires) or cut == starts[done]:
            assert (parser.in_reply, parser.buffered) == (False, 0)
        elif cut < starts[done] + wires[done].line:
            assert (parser.in_reply, parser.buffered) == (True, cut - starts[done])
        else:
            expected = cut - starts[done] - wires[done].line
            assert (parser.in_reply, parser.buffered) == (True, expected)
    assert replies == [w.reply for w in wires]


def run(parser: ReplyParser, chunks: list[bytes]) -> tuple[list[Reply], bool]:
    """Feed ``chunks``; the replies before any ProtocolError, and whether one came."""
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while (reply := parser.next_reply()) is not None:
                replies.append(reply)
        except ProtocolError:
            return replies, True
    return replies, False


# Arbitrary bytes, mixed with pieces of real replies so the parser gets past the first line.
noise = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=600),
    valid_replies().map(lambda w: w.data),
    st.builds(lambda n: b"OK %d\r\n" % n, st.integers(0, 2**40)),
    st.builds(lambda n: b"FOUND 1 %d\r\n" % n, st.integers(0, 700)),
    st.sampled_from([b"\r\n", b"\r", b"\n", b" ", b"\x00", b"USING ", b"RESERVED 1 "]),
)


@SHORT
@given(
    chunks=st.lists(noise, max_size=25),
    max_line=st.sampled_from([MAX_LINE, 64, 12]),
    max_body=st.integers(0, 512),
)
def test_arbitrary_bytes_only_raise_protocol_error_and_buffering_is_bounded(
    chunks: list[bytes], max_line: int, max_body: int
) -> None:
    parser = ReplyParser(max_line=max_line, max_body=max_body)
    bound = max(max_line, max_body + 2)
    for chunk in chunks:
        parser.feed(chunk)
        try:
            replies = drain(parser)
        except ProtocolError:
            return
        for reply in replies:
            assert reply.body is None or len(reply.body) <= max_body
        # Whatever is held back is one unfinished line or one unfinished body.
        assert parser.buffered < bound
        assert parser.in_reply or parser.buffered == 0


@SHORT
@given(data=st.data(), chunks=st.lists(noise, max_size=15))
def test_arbitrary_bytes_parse_the_same_however_split(
    data: st.DataObject, chunks: list[bytes]
) -> None:
    stream = b"".join(chunks)
    whole = run(ReplyParser(max_body=1000), [stream])
    cuts = cuts_of(data, len(stream))
    pieces = [stream[a:b] for a, b in pairwise([0, *cuts])]
    assert run(ReplyParser(max_body=1000), pieces) == whole
    assert run(ReplyParser(max_body=1000), [bytes([b]) for b in stream]) == whole


# ----------------------------------------------------------------------- command builders

values = st.one_of(
    st.integers(),
    st.integers(-3, 2**64 + 3),
    st.integers(2**31 - 3, 2**32 + 3),
    st.floats(),
    st.text(max_size=250),
    tube_names,
    st.binary(max_size=40),
    st.none(),
    st.booleans(),
    st.sampled_from(["\ud800", "a b", "a\r\nb", "-x", "", "café", "0.5", "\x00"]),
)

# (name, builder, number of positional values it takes)
BUILDERS: list[tuple[str, Callable[..., Command[Any]], int]] = [
    ("put", Put, 4),
    ("use", Use, 1),
    ("reserve", Reserve, 0),
    ("reserve-with-timeout", ReserveWithTimeout, 1),
    ("reserve-job", ReserveJob, 1),
    ("delete", Delete, 1),
    ("release", Release, 3),
    ("bury", Bury, 2),
    ("touch", Touch, 1),
    ("watch", Watch, 1),
    ("ignore", Ignore, 1),
    ("peek", Peek, 1),
    ("peek-ready", PeekReady, 0),
    ("peek-delayed", PeekDelayed, 0),
    ("peek-buried", PeekBuried, 0),
    ("kick", Kick, 1),
    ("kick-job", KickJob, 1),
    ("stats-job", StatsJob, 1),
    ("stats-tube", StatsTube, 1),
    ("stats", Stats, 0),
    ("list-tubes", ListTubes, 0),
    ("list-tube-used", ListTubeUsed, 0),
    ("list-tubes-watched", ListTubesWatched, 0),
    ("pause-tube", PauseTube, 2),
    ("quit", Quit, 0),
]

LINE = re.compile(rb"[\x21-\x7e]+(?: [\x21-\x7e]+)*")


def assert_sendable(command: Command[Any], body: bytes | None) -> None:
    """``encode()`` is one valid command line, plus the body chunk when there is one."""
    line = command.line()
    assert LINE.fullmatch(line), line
    assert len(line) + 2 <= MAX_LINE
    encoded = command.encode()
    if body is None:
        assert encoded == line + b"\r\n"
    else:
        assert line.endswith(b" %d" % len(body))
        assert encoded == line + b"\r\n" + body + b"\r\n"


@pytest.mark.parametrize(("word", "build", "arity"), BUILDERS, ids=[b[0] for b in BUILDERS])
@SHORT
@given(data=st.data())
def test_builders_make_a_valid_line_or_raise_invalid_argument(
    data: st.DataObject, word: str, build: Callable[..., Command[Any]], arity: int
) -> None:
    args = [data.draw(values) for _ in range(arity)]
    if word == "put":  # give the body a fair chance of being a body
        args[0] = data.draw(st.one_of(st.binary(max_size=100), st.text(max_size=30), values))
    try:
        command = build(*args)
    except InvalidArgumentError as exc:
        assert isinstance(exc, ValueError)
        assert str(exc)
        return
    assert command.line().split(b" ")[0] == word.encode()
    assert_sendable(command, getattr(command, "body", None) if word == "put" else None)


@SHORT
@given(
    name=st.one_of(st.sampled_from(["stats", "put", "use", "stats-job"]), values),
    args=st.lists(values, max_size=4),
    body=st.one_of(st.none(), st.binary(max_size=100), st.text(max_size=30)),
)
def test_raw_command_makes_a_valid_line_or_raises_invalid_argument(
    name: object, args: list[object], body: object
) -> None:
    try:
        command = RawCommand(name, tuple(args), body)  # type: ignore[arg-type]
    except InvalidArgumentError as exc:
        assert str(exc)
        return
    assert command.body is None or type(command.body) is bytes
    assert_sendable(command, command.body)


# ------------------------------------------------------------------- validation oracles

TUBE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()")


def is_tube_name(value: object) -> bool:
    """The server's rule, written out independently of the library's regex."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= 200
        and set(value) <= TUBE_CHARS
        and not value.startswith("-")
    )


@SHORT
@given(
    name=st.one_of(
        tube_names,
        st.text(alphabet="ab-+/;.$_()*# \r\n\x00é", max_size=205),
        st.text(min_size=195, max_size=205, alphabet="xy"),
        values,
    )
)
def test_tube_names_accepted_exactly_when_the_server_would(name: object) -> None:
    try:
        command = Watch(name)  # type: ignore[arg-type]
    except InvalidArgumentError:
        assert not is_tube_name(name)
    else:
        assert is_tube_name(name)
        assert command.tube == name
        assert command.encode() == b"watch " + command.tube.encode() + b"\r\n"


@SHORT
@given(value=values)
def test_u32_accepted_exactly_in_range(value: object) -> None:
    ok = type(value) is int and 0 <= value <= 2**32 - 1
    try:
        command = Kick(value)  # type: ignore[arg-type]
    except InvalidArgumentError:
        assert not ok
    else:
        assert ok
        assert command.encode() == b"kick %d\r\n" % command.bound


@SHORT
@given(value=values)
def test_job_ids_accepted_exactly_in_range(value: object) -> None:
    ok = type(value) is int and 1 <= value <= 2**64 - 1
    try:
        command = Delete(value)  # type: ignore[arg-type]
    except InvalidArgumentError:
        assert not ok
    else:
        assert ok
        assert command.encode() == b"delete %d\r\n" % command.job_id


@SHORT
@given(value=st.one_of(values, st.floats(0, 2**31), st.floats(2**31 - 2, 2**31 + 2)))
def test_reserve_timeout_rounds_up_and_stays_in_range(value: object) -> None:
    try:
        command = ReserveWithTimeout(value)  # type: ignore[arg-type]
    except InvalidArgumentError:
        assert (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= 2**31 - 1
        )
    else:
        assert isinstance(value, int | float) and not isinstance(value, bool)
        assert type(command.seconds) is int
        assert 0 <= command.seconds <= 2**31 - 1
        assert command.seconds == math.ceil(value)

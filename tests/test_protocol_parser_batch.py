"""``ReplyParser.replies`` (the batch form the connection reads with) against ``next_reply``.

The byte tables and the properties of test_protocol_parser.py and test_protocol_fuzz.py
pin ``next_reply`` down; here every one of their streams, split every way they split
it, must give the same replies through ``replies``, and a ``ProtocolError`` at the same
point (after every good reply before the bad bytes was handed out).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rxbeanstalk.errors import ProtocolError
from rxbeanstalk.protocol import MAX_LINE, Reply, ReplyParser
from tests.test_protocol_fuzz import SHORT, cuts_of, noise, valid_replies
from tests.test_protocol_parser import INVALID, INVALID_IDS, NEXT, PARTIAL, VALID, VALID_IDS


def by_one(chunks: list[bytes], **limits: int) -> tuple[list[Reply], bool, int]:
    """Feed ``chunks`` reading with ``next_reply``: replies, whether it raised, buffered."""
    parser = ReplyParser(**limits)
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while (reply := parser.next_reply()) is not None:
                replies.append(reply)
        except ProtocolError:
            return replies, True, parser.buffered
    return replies, False, parser.buffered


def batched(chunks: list[bytes], **limits: int) -> tuple[list[Reply], bool, int]:
    """The same through ``replies``, called until it returns nothing (or raises)."""
    parser = ReplyParser(**limits)
    replies: list[Reply] = []
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while batch := parser.replies():
                replies += batch
        except ProtocolError:
            return replies, True, parser.buffered
    return replies, False, parser.buffered


def same(chunks: list[bytes], **limits: int) -> None:
    one, raised, buffered = by_one(chunks, **limits)
    many, raised_too, buffered_too = batched(chunks, **limits)
    assert many == one
    assert raised_too == raised
    if not raised:
        assert buffered_too == buffered


STREAM = b"".join(case[1] for case in VALID)


@pytest.mark.parametrize("data", [case[1] for case in VALID], ids=VALID_IDS)
def test_valid_whole_and_byte_by_byte(data: bytes) -> None:
    same([data + NEXT + PARTIAL])
    same([data[i : i + 1] for i in range(len(data))] + [NEXT])


@pytest.mark.parametrize("data", [case[1] for case in INVALID], ids=INVALID_IDS)
def test_invalid_after_good_replies(data: bytes) -> None:
    same([data])
    same([NEXT + data + NEXT])
    same([NEXT * 3 + data, NEXT])
    same([data[i : i + 1] for i in range(len(data))])


def test_the_error_comes_after_the_good_replies() -> None:
    parser = ReplyParser()
    parser.feed(NEXT + NEXT + b"DELETED 1\r\n" + NEXT)
    assert len(parser.replies()) == 2
    with pytest.raises(ProtocolError):
        parser.replies()


def test_a_bad_body_trailer_after_good_replies_raises_again() -> None:
    # The body's header was read by an earlier call: the next one must still see it.
    parser = ReplyParser()
    parser.feed(NEXT + b"FOUND 1 3\r\nab")
    assert parser.replies() == [Reply("WATCHING", ("17",))]
    parser.feed(b"cXY" + NEXT)
    with pytest.raises(ProtocolError):
        parser.replies()


def test_every_pair_of_cases() -> None:
    for _, data, _ in VALID:
        for _, other, _ in VALID:
            same([data + other + data])


@pytest.mark.parametrize("size", [1, 2, 3, 7, 13, 64, 255, 1000])
def test_all_cases_in_chunks(size: int) -> None:
    same([STREAM[i : i + size] for i in range(0, len(STREAM), size)])


def test_plain_lines_over_the_cap_are_refused() -> None:
    same([b"INSERTED " + b"1" * (MAX_LINE - 11) + b"\r\n"])  # exactly the cap
    same([b"INSERTED " + b"1" * (MAX_LINE - 10) + b"\r\n"])  # one over
    same([b"DELETED\r\n" * 3 + b"WATCHING " + b"2" * 300 + b"\r\n"])
    same([b"WATCHING 10\r\n"], max_line=12)
    same([b"WATCHING 1\r\n" * 4], max_line=12)


@SHORT
@given(data=st.data())
def test_any_split_of_a_valid_stream(data: st.DataObject) -> None:
    wires = data.draw(st.lists(valid_replies(), min_size=1, max_size=20))
    stream = b"".join(w.data for w in wires)
    cuts = cuts_of(data, len(stream))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], cuts, strict=False)]
    same(chunks)


@SHORT
@given(
    chunks=st.lists(noise, max_size=25),
    max_line=st.sampled_from([MAX_LINE, 64, 12]),
    max_body=st.integers(0, 512),
)
def test_arbitrary_bytes(chunks: list[bytes], max_line: int, max_body: int) -> None:
    same(chunks, max_line=max_line, max_body=max_body)

"""Byte tables for ``ReplyParser``: every reply word, fed whole, byte by byte and in a stream.

Modelled on h11's tests: each valid case is fed whole, one byte at a time, followed by the
bytes of the next reply, and together with every other case in one feed; each invalid
case must raise ``ProtocolError`` however it is split.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from rxbeanstalk.errors import ProtocolError
from rxbeanstalk.protocol import MAX_BODY, MAX_LINE, Reply, ReplyParser
from tests.conftest import REPLY_WORDS

ALL_BYTES = bytes(range(256))
LONGEST_TUBE = "a-+/;.$_()" * 20  # 200 bytes, every punctuation mark a tube name may hold
STATS_YAML = b'---\ncurrent-jobs-urgent: 0\nversion: "1.12"\nos: #1 SMP: x\n'

# (id, bytes on the wire, the reply they stand for)
VALID: list[tuple[str, bytes, Reply]] = [
    ("inserted", b"INSERTED 5\r\n", Reply("INSERTED", ("5",))),
    (
        "inserted-max-id",
        b"INSERTED 18446744073709551615\r\n",
        Reply("INSERTED", ("18446744073709551615",)),
    ),
    ("buried-put", b"BURIED 7\r\n", Reply("BURIED", ("7",))),
    ("buried-release", b"BURIED\r\n", Reply("BURIED", ())),
    ("expected-crlf", b"EXPECTED_CRLF\r\n", Reply("EXPECTED_CRLF", ())),
    ("job-too-big", b"JOB_TOO_BIG\r\n", Reply("JOB_TOO_BIG", ())),
    ("draining", b"DRAINING\r\n", Reply("DRAINING", ())),
    ("using", b"USING default\r\n", Reply("USING", ("default",))),
    ("using-numeric-name", b"USING 123\r\n", Reply("USING", ("123",))),
    (
        "using-longest",
        b"USING " + LONGEST_TUBE.encode() + b"\r\n",
        Reply("USING", (LONGEST_TUBE,)),
    ),
    ("reserved", b"RESERVED 1 5\r\nhello\r\n", Reply("RESERVED", ("1", "5"), b"hello")),
    ("reserved-empty", b"RESERVED 2 0\r\n\r\n", Reply("RESERVED", ("2", "0"), b"")),
    (
        "reserved-crlf-body",
        b"RESERVED 3 8\r\n\r\nab\r\n\r\n\r\n",
        Reply("RESERVED", ("3", "8"), b"\r\nab\r\n\r\n"),
    ),
    (
        "reserved-all-bytes",
        b"RESERVED 18446744073709551615 256\r\n" + ALL_BYTES + b"\r\n",
        Reply("RESERVED", ("18446744073709551615", "256"), ALL_BYTES),
    ),
    (
        "reserved-body-looks-like-replies",
        b"RESERVED 4 24\r\nINSERTED 1\r\nBAD_FORMAT\r\n\r\n",
        Reply("RESERVED", ("4", "24"), b"INSERTED 1\r\nBAD_FORMAT\r\n"),
    ),
    ("deadline-soon", b"DEADLINE_SOON\r\n", Reply("DEADLINE_SOON", ())),
    ("timed-out", b"TIMED_OUT\r\n", Reply("TIMED_OUT", ())),
    ("deleted", b"DELETED\r\n", Reply("DELETED", ())),
    ("not-found", b"NOT_FOUND\r\n", Reply("NOT_FOUND", ())),
    ("released", b"RELEASED\r\n", Reply("RELEASED", ())),
    ("touched", b"TOUCHED\r\n", Reply("TOUCHED", ())),
    ("watching", b"WATCHING 2\r\n", Reply("WATCHING", ("2",))),
    ("not-ignored", b"NOT_IGNORED\r\n", Reply("NOT_IGNORED", ())),
    ("found", b"FOUND 9 3\r\nabc\r\n", Reply("FOUND", ("9", "3"), b"abc")),
    ("found-empty", b"FOUND 10 0\r\n\r\n", Reply("FOUND", ("10", "0"), b"")),
    (
        "found-all-bytes-twice",
        b"FOUND 11 512\r\n" + ALL_BYTES * 2 + b"\r\n",
        Reply("FOUND", ("11", "512"), ALL_BYTES * 2),
    ),
    ("found-crlf-only-body", b"FOUND 12 2\r\n\r\n\r\n", Reply("FOUND", ("12", "2"), b"\r\n")),
    ("kicked-job", b"KICKED\r\n", Reply("KICKED", ())),
    ("kicked-count", b"KICKED 3\r\n", Reply("KICKED", ("3",))),
    (
        "ok-yaml",
        b"OK %d\r\n" % len(STATS_YAML) + STATS_YAML + b"\r\n",
        Reply("OK", (str(len(STATS_YAML)),), STATS_YAML),
    ),
    ("ok-empty", b"OK 0\r\n\r\n", Reply("OK", ("0",), b"")),
    ("ok-crlf-body", b"OK 4\r\n\r\n\r\n\r\n", Reply("OK", ("4",), b"\r\n\r\n")),
    ("paused", b"PAUSED\r\n", Reply("PAUSED", ())),
    ("out-of-memory", b"OUT_OF_MEMORY\r\n", Reply("OUT_OF_MEMORY", ())),
    ("internal-error", b"INTERNAL_ERROR\r\n", Reply("INTERNAL_ERROR", ())),
    ("bad-format", b"BAD_FORMAT\r\n", Reply("BAD_FORMAT", ())),
    ("unknown-command", b"UNKNOWN_COMMAND\r\n", Reply("UNKNOWN_COMMAND", ())),
]
VALID_IDS = [case[0] for case in VALID]

# A reply after each case, then the start of another one that has not fully arrived.
NEXT = b"WATCHING 17\r\n"
NEXT_REPLY = Reply("WATCHING", ("17",))
PARTIAL = b"FOUND 8 4\r\nda"


def drain(parser: ReplyParser) -> list[Reply]:
    """Every reply the parser can give from what it has been fed."""
    replies = []
    while (reply := parser.next_reply()) is not None:
        replies.append(reply)
    return replies


def feed_chunks(parser: ReplyParser, chunks: Iterable[bytes]) -> list[Reply]:
    """Feed each chunk and collect the replies that became complete."""
    replies = []
    for chunk in chunks:
        parser.feed(chunk)
        replies += drain(parser)
    return replies


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def parse_whole(data: bytes) -> list[Reply]:
    return feed_chunks(ReplyParser(), [data])


# ---------------------------------------------------------------------- valid: the table


def test_table_has_every_reply_word() -> None:
    assert {reply.status for _, _, reply in VALID} == REPLY_WORDS
    assert len(REPLY_WORDS) == 23


def test_table_has_every_body_kind() -> None:
    bodies: dict[str, list[bytes]] = {reply.status: [] for _, _, reply in VALID}
    for _, _, reply in VALID:
        if reply.body is not None:
            bodies[reply.status].append(reply.body)
    for word in ("OK", "FOUND", "RESERVED"):
        assert b"" in bodies[word]
        assert any(b"\r\n" in body for body in bodies[word])
    assert any(ALL_BYTES in body for word in ("FOUND", "RESERVED") for body in bodies[word])


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in VALID], ids=VALID_IDS)
def test_valid_whole(data: bytes, expected: Reply) -> None:
    parser = ReplyParser()
    assert not parser.in_reply
    parser.feed(data)
    assert parser.next_reply() == expected
    assert parser.next_reply() is None
    assert parser.buffered == 0
    assert not parser.in_reply


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in VALID], ids=VALID_IDS)
def test_valid_one_byte_at_a_time(data: bytes, expected: Reply) -> None:
    parser = ReplyParser()
    for i, byte in enumerate(data[:-1]):
        parser.feed(bytes([byte]))
        assert parser.next_reply() is None, f"reply complete after {i + 1} of {len(data)} bytes"
        assert parser.in_reply
    parser.feed(data[-1:])
    assert parser.next_reply() == expected
    assert parser.next_reply() is None
    assert not parser.in_reply
    assert parser.buffered == 0


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in VALID], ids=VALID_IDS)
def test_valid_with_trailing_bytes(data: bytes, expected: Reply) -> None:
    parser = ReplyParser()
    parser.feed(data + NEXT + PARTIAL)
    assert parser.next_reply() == expected
    assert parser.next_reply() == NEXT_REPLY
    assert parser.next_reply() is None
    assert parser.in_reply
    # The header of the partial FOUND was read; its body has 2 of 4 bytes (+ CRLF).
    assert parser.buffered == 2
    parser.feed(b"ta\r\n")
    assert drain(parser) == [Reply("FOUND", ("8", "4"), b"data")]
    assert not parser.in_reply


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in VALID], ids=VALID_IDS)
def test_valid_followed_by_every_other_case(data: bytes, expected: Reply) -> None:
    for _, other, other_reply in VALID:
        assert parse_whole(data + other) == [expected, other_reply]
        assert parse_whole(other + data) == [other_reply, expected]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in VALID], ids=VALID_IDS)
def test_valid_split_at_every_point(data: bytes, expected: Reply) -> None:
    for cut in range(len(data) + 1):
        parser = ReplyParser()
        replies = feed_chunks(parser, [data[:cut], data[cut:] + NEXT])
        assert replies == [expected, NEXT_REPLY], f"split at {cut}"


# --------------------------------------------------------------- valid: several per feed

STREAM = b"".join(case[1] for case in VALID)
STREAM_REPLIES = [case[2] for case in VALID]


def test_all_cases_in_one_feed() -> None:
    parser = ReplyParser()
    parser.feed(STREAM)
    assert drain(parser) == STREAM_REPLIES
    assert parser.buffered == 0
    assert not parser.in_reply


def test_all_cases_one_byte_at_a_time() -> None:
    assert feed_chunks(ReplyParser(), one_byte_at_a_time(STREAM)) == STREAM_REPLIES


@pytest.mark.parametrize("size", [2, 3, 7, 13, 64, 255, 1000])
def test_all_cases_in_fixed_size_chunks(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_chunks(ReplyParser(), chunks) == STREAM_REPLIES


def test_feeding_without_reading_keeps_everything() -> None:
    parser = ReplyParser()
    for chunk in one_byte_at_a_time(STREAM):
        parser.feed(chunk)
    assert parser.buffered == len(STREAM)
    assert drain(parser) == STREAM_REPLIES


def test_empty_feeds_change_nothing() -> None:
    parser = ReplyParser()
    parser.feed(b"")
    assert parser.next_reply() is None
    assert not parser.in_reply
    parser.feed(b"DELETED\r")
    parser.feed(b"")
    assert parser.next_reply() is None
    parser.feed(b"\n")
    assert parser.next_reply() == Reply("DELETED", ())


# --------------------------------------------------------------------- large bodies


def test_large_body_split_across_many_feeds() -> None:
    body = ALL_BYTES * 4096 + b"\r\n" * 1000  # 1 MiB and a bit, with CRLFs inside
    data = b"RESERVED 77 %d\r\n" % len(body) + body + b"\r\n" + NEXT
    parser = ReplyParser()
    replies: list[Reply] = []
    for start in range(0, len(data), 999):
        parser.feed(data[start : start + 999])
        replies += drain(parser)
        if not replies:
            assert parser.in_reply
            assert parser.buffered <= len(body) + 2
    assert replies == [Reply("RESERVED", ("77", str(len(body))), body), NEXT_REPLY]
    assert not parser.in_reply


def test_body_arrives_after_many_consumed_replies() -> None:
    # Enough small replies to make the parser drop consumed bytes while a body is pending.
    small = b"".join(b"INSERTED %d\r\n" % i for i in range(10_000))
    body = ALL_BYTES * 512
    header = b"FOUND 1 %d\r\n" % len(body)
    parser = ReplyParser()
    parser.feed(small + header + body[:100])
    replies = drain(parser)
    assert len(replies) == 10_000
    assert replies[-1] == Reply("INSERTED", ("9999",))
    for start in range(100, len(body), 4096):
        parser.feed(body[start : start + 4096])
        assert parser.next_reply() is None
    parser.feed(b"\r\n" + small)
    replies = drain(parser)
    assert replies[0] == Reply("FOUND", ("1", str(len(body))), body)
    assert len(replies) == 10_001


def test_body_of_exactly_max_body_is_accepted() -> None:
    parser = ReplyParser(max_body=10)
    parser.feed(b"OK 10\r\n0123456789\r\n")
    assert parser.next_reply() == Reply("OK", ("10",), b"0123456789")


# ------------------------------------------------------------------ properties


def test_fresh_parser_is_idle() -> None:
    parser = ReplyParser()
    assert parser.buffered == 0
    assert not parser.in_reply
    assert parser.next_reply() is None


def test_in_reply_and_buffered_through_a_reply_with_body() -> None:
    parser = ReplyParser()
    parser.feed(b"RESERVED 1 ")
    assert parser.next_reply() is None
    assert (parser.in_reply, parser.buffered) == (True, 11)
    parser.feed(b"5\r\n")
    assert parser.next_reply() is None
    # The header was taken; nothing of the body is buffered, yet a reply is under way.
    assert (parser.in_reply, parser.buffered) == (True, 0)
    parser.feed(b"hel")
    assert parser.next_reply() is None
    assert (parser.in_reply, parser.buffered) == (True, 3)
    parser.feed(b"lo\r")
    assert parser.next_reply() is None
    assert (parser.in_reply, parser.buffered) == (True, 6)
    parser.feed(b"\nDEL")
    assert parser.next_reply() == Reply("RESERVED", ("1", "5"), b"hello")
    assert (parser.in_reply, parser.buffered) == (True, 3)
    assert parser.next_reply() is None
    parser.feed(b"ETED\r\n")
    assert parser.next_reply() == Reply("DELETED", ())
    assert (parser.in_reply, parser.buffered) == (False, 0)


def test_buffered_counts_unread_replies() -> None:
    parser = ReplyParser()
    parser.feed(b"DELETED\r\nTOUCHED\r\n")
    assert parser.buffered == 18
    assert parser.in_reply
    assert parser.next_reply() == Reply("DELETED", ())
    assert parser.buffered == 9
    assert parser.next_reply() == Reply("TOUCHED", ())
    assert parser.buffered == 0
    assert not parser.in_reply


def test_bare_lf_is_not_a_terminator() -> None:
    parser = ReplyParser()
    parser.feed(b"DELETED\n")
    assert parser.next_reply() is None
    assert parser.in_reply
    assert parser.buffered == 8
    parser.feed(b"INSERTED 5\n")
    assert parser.next_reply() is None
    # The CRLF that finally comes ends one line holding both: that is no valid reply.
    parser.feed(b"\r\n")
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_bare_cr_is_not_a_terminator() -> None:
    parser = ReplyParser()
    parser.feed(b"DELETED\r")
    assert parser.next_reply() is None
    parser.feed(b"\r\n")
    with pytest.raises(ProtocolError):
        parser.next_reply()


# ------------------------------------------------------------------------- invalid

INVALID: list[tuple[str, bytes]] = [
    # unknown and wrongly cased words
    ("unknown-word", b"HELLO\r\n"),
    ("unknown-word-with-arg", b"INSERT 5\r\n"),
    ("lowercase", b"inserted 5\r\n"),
    ("lowercase-no-args", b"deleted\r\n"),
    ("mixed-case", b"Deleted\r\n"),
    ("empty-line", b"\r\n"),
    ("word-prefix", b"DELETE\r\n"),
    ("word-suffix", b"DELETEDX\r\n"),
    ("tab-separator", b"INSERTED\t5\r\n"),
    ("command-echo", b"put 0 0 60 1\r\n"),
    # wrong argument counts
    ("inserted-no-id", b"INSERTED\r\n"),
    ("inserted-two-ids", b"INSERTED 1 2\r\n"),
    ("buried-two-args", b"BURIED 1 2\r\n"),
    ("using-no-tube", b"USING\r\n"),
    ("using-two-tubes", b"USING a b\r\n"),
    ("reserved-no-length", b"RESERVED 1\r\n"),
    ("reserved-no-args", b"RESERVED\r\n"),
    ("reserved-three-args", b"RESERVED 1 1 1\r\nx\r\n"),
    ("found-no-length", b"FOUND 1\r\n"),
    ("found-three-args", b"FOUND 1 1 1\r\nx\r\n"),
    ("ok-no-length", b"OK\r\n"),
    ("ok-two-args", b"OK 1 1\r\nx\r\n"),
    ("watching-no-count", b"WATCHING\r\n"),
    ("watching-two-counts", b"WATCHING 1 2\r\n"),
    ("kicked-two-counts", b"KICKED 1 2\r\n"),
    ("deleted-with-arg", b"DELETED 1\r\n"),
    ("not-found-with-arg", b"NOT_FOUND 1\r\n"),
    ("timed-out-with-arg", b"TIMED_OUT 0\r\n"),
    ("paused-with-arg", b"PAUSED tube\r\n"),
    ("bad-format-with-text", b"BAD_FORMAT oops\r\n"),
    # non-numeric ids and lengths
    ("inserted-word", b"INSERTED abc\r\n"),
    ("inserted-hex", b"INSERTED 0x10\r\n"),
    ("inserted-trailing-letter", b"INSERTED 1a\r\n"),
    ("inserted-float", b"INSERTED 1.5\r\n"),
    ("inserted-plus", b"INSERTED +1\r\n"),
    ("inserted-underscore", b"INSERTED 1_0\r\n"),
    ("inserted-arabic-digit", b"INSERTED \xd9\xa3\r\n"),
    ("inserted-fullwidth-digit", "INSERTED \uff11\r\n".encode()),
    ("reserved-word-id", b"RESERVED x 1\r\nx\r\n"),
    ("reserved-word-length", b"RESERVED 1 x\r\nx\r\n"),
    ("found-hex-length", b"FOUND 1 0x1\r\nx\r\n"),
    ("ok-float-length", b"OK 1.0\r\nx\r\n"),
    ("watching-word", b"WATCHING one\r\n"),
    ("kicked-word", b"KICKED all\r\n"),
    ("buried-word", b"BURIED x\r\n"),
    # negative numbers
    ("inserted-negative", b"INSERTED -1\r\n"),
    ("buried-negative", b"BURIED -7\r\n"),
    ("reserved-negative-id", b"RESERVED -1 1\r\nx\r\n"),
    ("reserved-negative-length", b"RESERVED 1 -1\r\n"),
    ("found-negative-length", b"FOUND 1 -3\r\nabc\r\n"),
    ("ok-negative-length", b"OK -5\r\n"),
    ("watching-negative", b"WATCHING -1\r\n"),
    ("kicked-negative", b"KICKED -2\r\n"),
    # double spaces and empty words
    ("double-space", b"INSERTED  1\r\n"),
    ("trailing-space", b"INSERTED 1 \r\n"),
    ("leading-space", b" INSERTED 1\r\n"),
    ("trailing-space-no-args", b"DELETED \r\n"),
    ("reserved-double-space", b"RESERVED 1  3\r\nabc\r\n"),
    ("using-double-space", b"USING  default\r\n"),
    ("using-trailing-space", b"USING default \r\n"),
    ("only-spaces", b"   \r\n"),
    # body not followed by CRLF
    ("reserved-body-then-junk", b"RESERVED 1 3\r\nabcXY"),
    ("reserved-body-then-lf-cr", b"RESERVED 1 3\r\nabc\n\r"),
    ("reserved-body-then-cr-only", b"RESERVED 1 3\r\nabc\rX"),
    ("reserved-body-longer-than-declared", b"RESERVED 1 3\r\nabcd\r\n"),
    ("reserved-body-shorter-than-declared", b"RESERVED 1 5\r\nabc\r\nDELETED\r\n"),
    ("found-empty-body-then-junk", b"FOUND 1 0\r\nXY"),
    ("ok-body-then-junk", b"OK 2\r\nab\n\n"),
    # non-ASCII, control bytes and bare terminators inside a line
    ("using-utf8", b"USING caf\xc3\xa9\r\n"),
    ("using-latin1", b"USING caf\xe9\r\n"),
    ("using-high-byte", b"USING \xff\r\n"),
    ("using-nul", b"USING a\x00b\r\n"),
    ("using-bare-lf", b"USING a\nb\r\n"),
    ("using-bare-cr", b"USING a\rb\r\n"),
    ("using-del", b"USING \x7f\r\n"),
    ("utf8-word", "INSERTÉD 1\r\n".encode()),
    ("high-byte-word", b"\xff\r\n"),
    ("lf-inside-args", b"INSERTED 1\nINSERTED 2\r\n"),
    ("lf-between-words", b"DELETED\nDELETED\r\n"),
    # line over the cap
    ("line-over-cap", b"USING " + b"a" * 300 + b"\r\n"),
    ("line-over-cap-no-crlf", b"X" * (MAX_LINE + 50)),
    ("line-one-over-cap", b"USING " + b"a" * (MAX_LINE - 7) + b"\r\n"),
    # body over the cap
    ("ok-length-over-max-body", b"OK %d\r\n" % (MAX_BODY + 1)),
    ("found-huge-length", b"FOUND 1 99999999999999999999999999999\r\n"),
]
INVALID_IDS = [case[0] for case in INVALID]


@pytest.mark.parametrize("data", [case[1] for case in INVALID], ids=INVALID_IDS)
def test_invalid_whole(data: bytes) -> None:
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(ProtocolError):
        parser.next_reply()


@pytest.mark.parametrize("data", [case[1] for case in INVALID], ids=INVALID_IDS)
def test_invalid_one_byte_at_a_time(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        feed_chunks(ReplyParser(), one_byte_at_a_time(data))


@pytest.mark.parametrize("data", [case[1] for case in INVALID], ids=INVALID_IDS)
def test_invalid_after_a_valid_reply(data: bytes) -> None:
    parser = ReplyParser()
    parser.feed(NEXT + data + NEXT)
    assert parser.next_reply() == NEXT_REPLY
    with pytest.raises(ProtocolError):
        drain(parser)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"HELLO\r\n", ["unknown", "HELLO"]),
        (b"INSERTED x\r\n", ["INSERTED", "x"]),
        (b"RESERVED 1 3\r\nabcXY", ["RESERVED", "3 bytes", "CRLF"]),
        (b"OK %d\r\n" % (MAX_BODY + 1), ["OK", str(MAX_BODY + 1), str(MAX_BODY)]),
        (b"X" * MAX_LINE, ["longer than", str(MAX_LINE)]),
        (b"USING caf\xc3\xa9\r\n", ["USING", "caf"]),
    ],
)
def test_protocol_error_message_says_what_was_wrong(data: bytes, words: list[str]) -> None:
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        parser.next_reply()
    for word in words:
        assert word in str(info.value)


def test_every_word_rejects_one_argument_too_many() -> None:
    optional = ("BURIED", "KICKED")  # their one argument may be left out
    for _, data, reply in VALID:
        line = data.split(b"\r\n", 1)[0]
        parser = ReplyParser()
        parser.feed(line + b" 1\r\n")
        if reply.status in optional and not reply.args:
            assert parser.next_reply() == Reply(reply.status, ("1",))
        else:
            with pytest.raises(ProtocolError):
                parser.next_reply()
        if reply.args:
            parser = ReplyParser()
            parser.feed(reply.status.encode() + b"\r\n")
            if reply.status in optional:
                assert parser.next_reply() == Reply(reply.status, ())
            else:
                with pytest.raises(ProtocolError):
                    parser.next_reply()


# ------------------------------------------------------------------ memory bounds


def test_overlong_line_detected_once_cap_is_buffered() -> None:
    parser = ReplyParser()
    line = b"USING " + b"a" * 400
    for i in range(MAX_LINE - 1):
        parser.feed(line[i : i + 1])
        assert parser.next_reply() is None
    assert parser.buffered == MAX_LINE - 1
    parser.feed(line[MAX_LINE - 1 : MAX_LINE])
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_overlong_line_detected_in_one_big_feed() -> None:
    parser = ReplyParser()
    parser.feed(b"a" * 1_000_000)
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_cap_minus_one_bytes_ending_in_cr_waits_for_lf() -> None:
    parser = ReplyParser()
    parser.feed(b"USING " + b"a" * (MAX_LINE - 8) + b"\r")
    assert parser.buffered == MAX_LINE - 1
    assert parser.next_reply() is None
    parser.feed(b"\n")
    assert parser.next_reply() == Reply("USING", ("a" * (MAX_LINE - 8),))


def test_line_of_exactly_cap_bytes_is_accepted() -> None:
    tube = "a" * (MAX_LINE - len("USING ") - 2)
    data = f"USING {tube}\r\n".encode()
    assert len(data) == MAX_LINE
    assert parse_whole(data) == [Reply("USING", (tube,))]
    assert feed_chunks(ReplyParser(), one_byte_at_a_time(data)) == [Reply("USING", (tube,))]


def test_cap_byte_being_cr_is_rejected() -> None:
    # A CR as the cap's last byte can only end a line one byte over the cap.
    parser = ReplyParser()
    parser.feed(b"USING " + b"a" * (MAX_LINE - 7) + b"\r")
    assert parser.buffered == MAX_LINE
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_cap_applies_to_each_line_not_to_the_stream() -> None:
    lines = b"".join(b"USING " + b"t" * 200 + b"\r\n" for _ in range(10))
    assert len(parse_whole(lines)) == 10
    parser = ReplyParser()
    parser.feed(b"DELETED\r\n" + b"x" * MAX_LINE)
    assert parser.next_reply() == Reply("DELETED", ())
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_custom_line_cap() -> None:
    parser = ReplyParser(max_line=12)
    parser.feed(b"WATCHING 1\r\n")  # 12 bytes
    assert parser.next_reply() == Reply("WATCHING", ("1",))
    parser.feed(b"WATCHING 10")  # 11 bytes, no CRLF yet: may still become valid
    assert parser.next_reply() is None
    parser.feed(b"\r")
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_body_over_max_body_detected_from_header_alone() -> None:
    parser = ReplyParser(max_body=10)
    parser.feed(b"RESERVED 1 11\r\n")
    with pytest.raises(ProtocolError):
        parser.next_reply()


@pytest.mark.parametrize("word", [b"OK 11", b"FOUND 1 11", b"RESERVED 1 11"])
def test_body_over_max_body_detected_byte_by_byte(word: bytes) -> None:
    parser = ReplyParser(max_body=10)
    header = word + b"\r\n"
    for byte in one_byte_at_a_time(header[:-1]):
        parser.feed(byte)
        assert parser.next_reply() is None
    parser.feed(b"\n")
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_default_max_body_is_the_servers_largest_job() -> None:
    parser = ReplyParser()
    parser.feed(b"FOUND 1 %d\r\n" % MAX_BODY)
    assert parser.next_reply() is None  # waiting for a 1 GiB body, not refusing it
    assert parser.in_reply
    parser = ReplyParser()
    parser.feed(b"FOUND 1 %d\r\n" % (MAX_BODY + 1))
    with pytest.raises(ProtocolError):
        parser.next_reply()


def test_header_with_huge_length_does_not_allocate() -> None:
    parser = ReplyParser()
    parser.feed(b"OK %d\r\nab" % MAX_BODY)
    assert parser.next_reply() is None
    assert parser.buffered == 2

"""Typed commands: exact bytes, the meaning of every reply, and argument validation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import rxbeanstalk.protocol as protocol
from rxbeanstalk.errors import (
    BadFormatError,
    BuriedError,
    CommandError,
    DeadlineSoonError,
    DrainingError,
    ExpectedCrlfError,
    InternalError,
    InvalidArgumentError,
    JobTooBigError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    ProtocolError,
    TimedOutError,
    UnknownCommandError,
)
from rxbeanstalk.protocol import (
    Bury,
    Command,
    Delete,
    Ignore,
    JobData,
    JobState,
    JobStats,
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
    ServerStats,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    TubeStats,
    Use,
    Watch,
)

MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
HUGE = 10**5000  # str() of it raises ValueError: messages must not try


def untyped(value: object) -> Any:
    """Pass a value of the wrong type past the type checker."""
    return value


def parse(data: bytes) -> Reply:
    """The one reply ``data`` holds, as the client's parser reads it."""
    parser = ReplyParser()
    parser.feed(data)
    reply = parser.next_reply()
    assert reply is not None
    assert parser.buffered == 0
    return reply


def ok(body: bytes) -> bytes:
    return b"OK %d\r\n%b\r\n" % (len(body), body)


# --------------------------------------------------------------------------- encode()

ENCODED: list[tuple[Command[Any], bytes]] = [
    (Put(b"hello", 10, 0, 60), b"put 10 0 60 5\r\nhello\r\n"),
    (Use("emails"), b"use emails\r\n"),
    (Reserve(), b"reserve\r\n"),
    (ReserveWithTimeout(30), b"reserve-with-timeout 30\r\n"),
    (ReserveJob(7), b"reserve-job 7\r\n"),
    (Delete(5), b"delete 5\r\n"),
    (Release(5, 100, 3), b"release 5 100 3\r\n"),
    (Bury(5, 100), b"bury 5 100\r\n"),
    (Touch(5), b"touch 5\r\n"),
    (Watch("emails"), b"watch emails\r\n"),
    (Ignore("default"), b"ignore default\r\n"),
    (Peek(9), b"peek 9\r\n"),
    (PeekReady(), b"peek-ready\r\n"),
    (PeekDelayed(), b"peek-delayed\r\n"),
    (PeekBuried(), b"peek-buried\r\n"),
    (Kick(10), b"kick 10\r\n"),
    (KickJob(5), b"kick-job 5\r\n"),
    (StatsJob(5), b"stats-job 5\r\n"),
    (StatsTube("emails"), b"stats-tube emails\r\n"),
    (Stats(), b"stats\r\n"),
    (ListTubes(), b"list-tubes\r\n"),
    (ListTubeUsed(), b"list-tube-used\r\n"),
    (ListTubesWatched(), b"list-tubes-watched\r\n"),
    (PauseTube("emails", 30), b"pause-tube emails 30\r\n"),
    (Quit(), b"quit\r\n"),
]


def test_table_covers_all_25_commands() -> None:
    exported = {
        obj
        for name in protocol.__all__
        if isinstance(obj := getattr(protocol, name), type)
        and issubclass(obj, Command)
        and obj not in (Command, RawCommand)
    }
    assert len(exported) == 25
    assert {type(command) for command, _ in ENCODED} == exported


@pytest.mark.parametrize(
    ("command", "expected"), ENCODED, ids=[type(c).__name__ for c, _ in ENCODED]
)
def test_encode(command: Command[Any], expected: bytes) -> None:
    assert command.encode() == expected
    assert command.line() + b"\r\n" == expected.split(b"\r\n", 1)[0] + b"\r\n"
    assert command.describe() == expected.split(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (Put(b"", 0, 0, 0), b"put 0 0 0 0\r\n\r\n"),
        (Put(b"a\r\nb", 1, 2, 3), b"put 1 2 3 4\r\na\r\nb\r\n"),
        (Put(bytes(range(256)), 0, 0, 1), b"put 0 0 1 256\r\n" + bytes(range(256)) + b"\r\n"),
        (Put(untyped("héllo"), 0, 0, 1), b"put 0 0 1 6\r\nh\xc3\xa9llo\r\n"),
        (Put(b"x", MAX_U32, MAX_U32, MAX_U32), b"put 4294967295 4294967295 4294967295 1\r\nx\r\n"),
        (Release(MAX_U64, 0), b"release 18446744073709551615 0 0\r\n"),
        (ReserveWithTimeout(0), b"reserve-with-timeout 0\r\n"),
        (PauseTube("a-+/;.$_()", 0), b"pause-tube a-+/;.$_() 0\r\n"),
        (Kick(0), b"kick 0\r\n"),
    ],
)
def test_encode_edge_values(command: Command[Any], expected: bytes) -> None:
    assert command.encode() == expected


def test_put_describe_leaves_the_body_out() -> None:
    command = Put(b"secret body", 1, 2, 3)
    assert command.describe() == "put 1 2 3 11"
    assert command.line() == b"put 1 2 3 11"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (RawCommand("stats"), b"stats\r\n"),
        (RawCommand("stats-job", (5,)), b"stats-job 5\r\n"),
        (RawCommand("kick", ("10",)), b"kick 10\r\n"),
        (RawCommand("pause-tube", ("emails", 0)), b"pause-tube emails 0\r\n"),
        (RawCommand("use", ("a" * 218,)), b"use " + b"a" * 218 + b"\r\n"),  # 224 bytes
        (RawCommand("put", (0, 0, 60), body=b"hello"), b"put 0 0 60 5\r\nhello\r\n"),
        (RawCommand("put", (0, 0, 60), body=b""), b"put 0 0 60 0\r\n\r\n"),
        (RawCommand("put", (0, 0, 60), body=b"a\r\nb"), b"put 0 0 60 4\r\na\r\nb\r\n"),
        (RawCommand("put", (1, 2, 3), body=untyped("héllo")), b"put 1 2 3 6\r\nh\xc3\xa9llo\r\n"),
        (RawCommand("put", (1, 2, 3), body=untyped(bytearray(b"ab"))), b"put 1 2 3 2\r\nab\r\n"),
        (RawCommand("future-cmd", ("x", 1)), b"future-cmd x 1\r\n"),
    ],
)
def test_raw_command_encode(command: RawCommand, expected: bytes) -> None:
    assert command.encode() == expected
    assert command.describe() == expected.split(b"\r\n", 1)[0].decode()
    assert command.body is None or type(command.body) is bytes


# ------------------------------------------------------------------------ flags


def test_desyncs_on_bad_format() -> None:
    for command, _ in ENCODED:
        assert command.desyncs_on_bad_format is isinstance(command, Put), command
    assert RawCommand("put", (0, 0, 1), body=b"x").desyncs_on_bad_format is True
    assert RawCommand("put", (0, 0, 1), body=b"").desyncs_on_bad_format is True
    assert RawCommand("stats").desyncs_on_bad_format is False
    assert RawCommand("delete", (1,)).desyncs_on_bad_format is False


def test_expects_reply_and_may_block() -> None:
    for command, _ in ENCODED:
        assert command.expects_reply is not isinstance(command, Quit), command
        assert command.may_block is isinstance(command, Reserve | ReserveWithTimeout), command
    assert RawCommand("stats").expects_reply
    assert not RawCommand("stats").may_block


# ------------------------------------------------------------------- interpret(): success

JOB_YAML = (
    b"---\nid: 5\ntube: 123\nstate: reserved\npri: 10\nage: 3\ndelay: 0\nttr: 60\n"
    b"time-left: 59\nfile: 0\nreserves: 1\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n"
)
JOB_STATS = JobStats(
    id=5, tube="123", state=JobState.RESERVED, pri=10, age=3, ttr=60, time_left=59, reserves=1
)
TUBE_YAML = (
    b"---\nname: 0.5\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 2\ncurrent-jobs-reserved: 3\n"
    b"current-jobs-delayed: 4\ncurrent-jobs-buried: 5\ntotal-jobs: 6\ncurrent-using: 7\n"
    b"current-watching: 8\ncurrent-waiting: 9\ncmd-delete: 10\ncmd-pause-tube: 11\n"
    b"pause: 12\npause-time-left: -1\n"
)
TUBE_STATS = TubeStats(
    name="0.5",
    current_jobs_urgent=1,
    current_jobs_ready=2,
    current_jobs_reserved=3,
    current_jobs_delayed=4,
    current_jobs_buried=5,
    total_jobs=6,
    current_using=7,
    current_watching=8,
    current_waiting=9,
    cmd_delete=10,
    cmd_pause_tube=11,
    pause=12,
    pause_time_left=-1,
)
SERVER_YAML = (
    b'---\ncurrent-jobs-ready: 3\npid: 4340\nversion: "1.12"\nrusage-utime: 0.004848\n'
    b"draining: false\nid: 8f105fc259fbbc0d\nhostname: true\nos: #1 SMP: Debian\n"
)
SERVER_STATS = ServerStats(
    current_jobs_ready=3,
    pid=4340,
    version="1.12",
    rusage_utime=0.004848,
    draining=False,
    id="8f105fc259fbbc0d",
    hostname="true",
    os="#1 SMP: Debian",
)
TUBES_YAML = b"---\n- default\n- 123\n- true\n- 0.5\n- null\n"
TUBES = ["default", "123", "true", "0.5", "null"]

SUCCESS: list[tuple[Command[Any], bytes, object]] = [
    (Put(b"x", 0, 0, 1), b"INSERTED 42\r\n", 42),
    (Put(b"x", 0, 0, 1), b"INSERTED 18446744073709551615\r\n", MAX_U64),
    (Use("emails"), b"USING emails\r\n", "emails"),
    (Use("123"), b"USING 123\r\n", "123"),
    (Reserve(), b"RESERVED 7 5\r\nhello\r\n", JobData(7, b"hello")),
    (ReserveWithTimeout(5), b"RESERVED 8 0\r\n\r\n", JobData(8, b"")),
    (ReserveJob(7), b"RESERVED 7 4\r\na\r\nb\r\n", JobData(7, b"a\r\nb")),
    (Delete(5), b"DELETED\r\n", 5),
    (Release(5, 10), b"RELEASED\r\n", 5),
    (Bury(5, 10), b"BURIED\r\n", 5),
    (Touch(5), b"TOUCHED\r\n", 5),
    (KickJob(5), b"KICKED\r\n", 5),
    (Watch("emails"), b"WATCHING 2\r\n", 2),
    (Ignore("default"), b"WATCHING 1\r\n", 1),
    (Peek(9), b"FOUND 9 3\r\nabc\r\n", JobData(9, b"abc")),
    (PeekReady(), b"FOUND 1 1\r\nx\r\n", JobData(1, b"x")),
    (PeekDelayed(), b"FOUND 2 1\r\ny\r\n", JobData(2, b"y")),
    (PeekBuried(), b"FOUND 3 0\r\n\r\n", JobData(3, b"")),
    (Kick(10), b"KICKED 4\r\n", 4),
    (Kick(10), b"KICKED 0\r\n", 0),
    (StatsJob(5), ok(JOB_YAML), JOB_STATS),
    (StatsTube("0.5"), ok(TUBE_YAML), TUBE_STATS),
    (Stats(), ok(SERVER_YAML), SERVER_STATS),
    (ListTubes(), ok(TUBES_YAML), TUBES),
    (ListTubesWatched(), ok(b"---\n- default\n"), ["default"]),
    (ListTubeUsed(), b"USING true\r\n", "true"),
    (PauseTube("emails", 30), b"PAUSED\r\n", "emails"),
]


@pytest.mark.parametrize(
    ("command", "data", "expected"),
    SUCCESS,
    ids=[f"{type(c).__name__}-{i}" for i, (c, _, _) in enumerate(SUCCESS)],
)
def test_interpret_success(command: Command[Any], data: bytes, expected: object) -> None:
    value = command.interpret(parse(data))
    assert value == expected
    assert type(value) is type(expected)


def test_interpret_success_types() -> None:
    assert type(Peek(9).interpret(parse(b"FOUND 9 3\r\nabc\r\n")).id) is int
    tubes = ListTubes().interpret(parse(ok(TUBES_YAML)))
    assert all(type(tube) is str for tube in tubes)
    job = StatsJob(5).interpret(parse(ok(JOB_YAML)))
    assert type(job.tube) is str
    assert job.state is JobState.RESERVED
    assert type(StatsTube("0.5").interpret(parse(ok(TUBE_YAML))).name) is str
    server = Stats().interpret(parse(ok(SERVER_YAML)))
    assert type(server.hostname) is str
    assert type(server.rusage_utime) is float
    assert server.draining is False


def test_kick_without_count_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="KICKED"):
        Kick(10).interpret(parse(b"KICKED\r\n"))


# -------------------------------------------------------------------- interpret(): errors

SAMPLES: dict[str, bytes] = {
    "INSERTED": b"INSERTED 42\r\n",
    "BURIED": b"BURIED\r\n",
    "EXPECTED_CRLF": b"EXPECTED_CRLF\r\n",
    "JOB_TOO_BIG": b"JOB_TOO_BIG\r\n",
    "DRAINING": b"DRAINING\r\n",
    "USING": b"USING emails\r\n",
    "RESERVED": b"RESERVED 7 5\r\nhello\r\n",
    "DEADLINE_SOON": b"DEADLINE_SOON\r\n",
    "TIMED_OUT": b"TIMED_OUT\r\n",
    "DELETED": b"DELETED\r\n",
    "NOT_FOUND": b"NOT_FOUND\r\n",
    "RELEASED": b"RELEASED\r\n",
    "TOUCHED": b"TOUCHED\r\n",
    "WATCHING": b"WATCHING 2\r\n",
    "NOT_IGNORED": b"NOT_IGNORED\r\n",
    "FOUND": b"FOUND 9 3\r\nabc\r\n",
    "KICKED": b"KICKED\r\n",
    "OK": ok(TUBES_YAML),
    "PAUSED": b"PAUSED\r\n",
    "OUT_OF_MEMORY": b"OUT_OF_MEMORY\r\n",
    "INTERNAL_ERROR": b"INTERNAL_ERROR\r\n",
    "BAD_FORMAT": b"BAD_FORMAT\r\n",
    "UNKNOWN_COMMAND": b"UNKNOWN_COMMAND\r\n",
}

ERROR_CLASSES: dict[str, type[CommandError]] = {
    "NOT_FOUND": NotFoundError,
    "TIMED_OUT": TimedOutError,
    "DEADLINE_SOON": DeadlineSoonError,
    "NOT_IGNORED": NotIgnoredError,
    "BURIED": BuriedError,
    "DRAINING": DrainingError,
    "JOB_TOO_BIG": JobTooBigError,
    "EXPECTED_CRLF": ExpectedCrlfError,
    "OUT_OF_MEMORY": OutOfMemoryError,
    "INTERNAL_ERROR": InternalError,
    "BAD_FORMAT": BadFormatError,
    "UNKNOWN_COMMAND": UnknownCommandError,
}

ANY = {"OUT_OF_MEMORY", "INTERNAL_ERROR", "BAD_FORMAT", "UNKNOWN_COMMAND"}
NF = ANY | {"NOT_FOUND"}

# command -> (success word, the error words protocol.md 1.5 lists for it)
REPLIES: list[tuple[Command[Any], str, set[str]]] = [
    (Put(b"x", 0, 0, 1), "INSERTED", ANY | {"BURIED", "EXPECTED_CRLF", "JOB_TOO_BIG", "DRAINING"}),
    (Use("emails"), "USING", ANY),
    (Reserve(), "RESERVED", ANY | {"DEADLINE_SOON", "TIMED_OUT"}),
    (ReserveWithTimeout(5), "RESERVED", ANY | {"DEADLINE_SOON", "TIMED_OUT"}),
    (ReserveJob(7), "RESERVED", NF),
    (Delete(5), "DELETED", NF),
    (Release(5, 10), "RELEASED", NF | {"BURIED"}),
    (Bury(5, 10), "BURIED", NF),
    (Touch(5), "TOUCHED", NF),
    (Watch("emails"), "WATCHING", ANY),
    (Ignore("default"), "WATCHING", ANY | {"NOT_IGNORED"}),
    (Peek(9), "FOUND", NF),
    (PeekReady(), "FOUND", NF),
    (PeekDelayed(), "FOUND", NF),
    (PeekBuried(), "FOUND", NF),
    (Kick(10), "KICKED", ANY),
    (KickJob(5), "KICKED", NF),
    (StatsJob(5), "OK", NF),
    (StatsTube("emails"), "OK", NF),
    (Stats(), "OK", ANY),
    (ListTubes(), "OK", ANY),
    (ListTubeUsed(), "USING", ANY),
    (ListTubesWatched(), "OK", ANY),
    (PauseTube("emails", 30), "PAUSED", NF),
]
REPLY_IDS = [type(c).__name__ for c, _, _ in REPLIES]


def test_samples_and_error_table() -> None:
    assert len(SAMPLES) == 23
    assert set(ERROR_CLASSES) <= set(SAMPLES)
    assert len(ERROR_CLASSES) == 12
    assert {type(c) for c, _, _ in REPLIES} | {Quit} == {type(c) for c, _ in ENCODED}


@pytest.mark.parametrize(("command", "success", "errors"), REPLIES, ids=REPLY_IDS)
def test_declared_words(command: Command[Any], success: str, errors: set[str]) -> None:
    assert command.success == success
    assert command.errors == errors


@pytest.mark.parametrize(("command", "success", "errors"), REPLIES, ids=REPLY_IDS)
def test_interpret_each_error_word(command: Command[Any], success: str, errors: set[str]) -> None:
    for word in sorted(errors):
        with pytest.raises(CommandError) as info:
            command.interpret(parse(SAMPLES[word]))
        error = info.value
        assert type(error) is ERROR_CLASSES[word], word
        assert error.status == word
        assert error.command == command.describe()
        assert word in str(error)
        assert command.describe() in str(error)


@pytest.mark.parametrize(("command", "success", "errors"), REPLIES, ids=REPLY_IDS)
def test_interpret_unexpected_word(command: Command[Any], success: str, errors: set[str]) -> None:
    unexpected = set(SAMPLES) - errors - {success}
    assert unexpected
    for word in sorted(unexpected):
        with pytest.raises(ProtocolError) as info:
            command.interpret(parse(SAMPLES[word]))
        assert word in str(info.value)
        assert command.describe() in str(info.value)


def test_interpret_unknown_status_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        Delete(5).interpret(Reply("GONE", ()))


def test_put_buried_carries_the_job_id() -> None:
    with pytest.raises(BuriedError) as info:
        Put(b"x", 0, 0, 1).interpret(parse(b"BURIED 7\r\n"))
    assert info.value.job_id == 7
    assert "7" in str(info.value)
    assert info.value.command == "put 0 0 1 1"


def test_put_buried_without_id() -> None:
    with pytest.raises(BuriedError) as info:
        Put(b"x", 0, 0, 1).interpret(parse(b"BURIED\r\n"))
    assert info.value.job_id is None


def test_release_buried_has_no_job_id() -> None:
    with pytest.raises(BuriedError) as info:
        Release(5, 10).interpret(parse(b"BURIED\r\n"))
    assert info.value.job_id is None
    assert info.value.command == "release 5 10 0"


def test_error_message_says_what_was_sent_and_what_came_back() -> None:
    with pytest.raises(NotFoundError) as info:
        Delete(5).interpret(parse(b"NOT_FOUND\r\n"))
    assert str(info.value) == "'delete 5' -> NOT_FOUND"


def test_raw_command_interpret() -> None:
    command = RawCommand("stats")
    for word, data in SAMPLES.items():
        reply = parse(data)
        if word in ERROR_CLASSES and word != "BURIED":
            with pytest.raises(ERROR_CLASSES[word]) as info:
                command.interpret(reply)
            assert type(info.value) is ERROR_CLASSES[word]
            assert info.value.command == "stats"
        else:
            assert command.interpret(reply) is reply
    future = Reply("SOMETHING_NEW", ("1",))
    assert command.interpret(future) is future


# ------------------------------------------------------------------------ validation


def rejected(build: Callable[[], object], *words: str) -> InvalidArgumentError:
    """Assert ``build()`` raises InvalidArgumentError whose message holds ``words``."""
    with pytest.raises(InvalidArgumentError) as info:
        build()
    error = info.value
    assert isinstance(error, ValueError)
    for word in words:
        assert word in str(error), (word, str(error))
    return error


TUBE_BUILDERS: list[Callable[[Any], Command[Any]]] = [
    Use,
    Watch,
    Ignore,
    StatsTube,
    lambda tube: PauseTube(tube, 1),
]
TUBE_IDS = ["Use", "Watch", "Ignore", "StatsTube", "PauseTube"]
VALID_TUBES = [
    "a" * 200,
    "a-+/;.$_()",
    "A",
    "9",
    "123",
    "true",
    "0.5",
    "null",
    "(x)",
    "$",
    "+plus",
    "trailing-",
]


@pytest.mark.parametrize("build", TUBE_BUILDERS, ids=TUBE_IDS)
@pytest.mark.parametrize("name", VALID_TUBES)
def test_tube_name_accepted(build: Callable[[Any], Command[Any]], name: str) -> None:
    command = build(name)
    assert getattr(command, "tube") == name  # noqa: B009 - every builder has a tube
    assert type(getattr(command, "tube")) is str  # noqa: B009
    assert f" {name}".encode() in command.encode()


@pytest.mark.parametrize("build", TUBE_BUILDERS, ids=TUBE_IDS)
@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("a" * 201, ["1 to 200", "201"]),
        ("", ["1 to 200", "0"]),
        ("-foo", ["may not start with '-'", "-foo"]),
        ("-", ["may not start with '-'"]),
        ("a b", ["may only use", "'a b'"]),
        ("a*b", ["may only use", "a*b"]),
        ("café", ["may only use", "café"]),
        ("a\r\nb", ["may only use"]),
        ("a\x00b", ["may only use"]),
        ("tab\t", ["may only use"]),
        ("a#b", ["may only use"]),
        ("\ud800", ["may only use"]),
        (5, ["must be a str", "int"]),
        (None, ["must be a str", "NoneType"]),
        (b"emails", ["must be a str", "bytes"]),
    ],
)
def test_tube_name_rejected(
    build: Callable[[Any], Command[Any]], name: object, words: list[str]
) -> None:
    rejected(lambda: build(name), "tube name", *words)


# (what the message calls it, builder taking the value)
U32_BUILDERS: list[tuple[str, Callable[[Any], Command[Any]]]] = [
    ("priority", lambda v: Put(b"x", v, 0, 1)),
    ("delay", lambda v: Put(b"x", 0, v, 1)),
    ("ttr", lambda v: Put(b"x", 0, 0, v)),
    ("priority", lambda v: Release(1, v)),
    ("delay", lambda v: Release(1, 0, v)),
    ("priority", lambda v: Bury(1, v)),
    ("kick bound", Kick),
    ("pause delay", lambda v: PauseTube("t", v)),
]
U32_IDS = [
    "put-pri",
    "put-delay",
    "put-ttr",
    "release-pri",
    "release-delay",
    "bury-pri",
    "kick",
    "pause",
]


@pytest.mark.parametrize(("what", "build"), U32_BUILDERS, ids=U32_IDS)
@pytest.mark.parametrize("value", [0, 1, 1023, 2**31, MAX_U32])
def test_u32_accepted(what: str, build: Callable[[Any], Command[Any]], value: int) -> None:
    assert b" %d" % value in build(value).line()


@pytest.mark.parametrize(("what", "build"), U32_BUILDERS, ids=U32_IDS)
@pytest.mark.parametrize(
    ("value", "words"),
    [
        (-1, ["0..4294967295", "got -1"]),
        (2**32, ["0..4294967295", "got 4294967296"]),
        pytest.param(HUGE, ["0..4294967295", "bits"], id="huge"),
        pytest.param(-HUGE, ["0..4294967295", "bits"], id="-huge"),
        (True, ["must be an int", "bool"]),
        (False, ["must be an int", "bool"]),
        (1.0, ["must be an int", "float"]),
        ("5", ["must be an int", "str"]),
        (None, ["must be an int", "NoneType"]),
    ],
)
def test_u32_rejected(
    what: str, build: Callable[[Any], Command[Any]], value: object, words: list[str]
) -> None:
    rejected(lambda: build(value), what, *words)


ID_BUILDERS: list[Callable[[Any], Command[Any]]] = [
    ReserveJob,
    Delete,
    lambda v: Release(v, 0),
    lambda v: Bury(v, 0),
    Touch,
    KickJob,
    Peek,
    StatsJob,
]
ID_IDS = ["reserve-job", "delete", "release", "bury", "touch", "kick-job", "peek", "stats-job"]


@pytest.mark.parametrize("build", ID_BUILDERS, ids=ID_IDS)
@pytest.mark.parametrize("value", [1, 2**32, MAX_U64])
def test_job_id_accepted(build: Callable[[Any], Command[Any]], value: int) -> None:
    assert b" %d" % value in build(value).line()


@pytest.mark.parametrize("build", ID_BUILDERS, ids=ID_IDS)
@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, ["1..18446744073709551615", "got 0"]),
        (2**64, ["1..18446744073709551615", "got 18446744073709551616"]),
        (-1, ["got -1"]),
        pytest.param(HUGE, ["bits"], id="huge"),
        (True, ["must be an int", "bool"]),
        (1.0, ["must be an int", "float"]),
        ("1", ["must be an int", "str"]),
        (None, ["must be an int", "NoneType"]),
    ],
)
def test_job_id_rejected(
    build: Callable[[Any], Command[Any]], value: object, words: list[str]
) -> None:
    rejected(lambda: build(value), "job id", *words)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0),
        (0.0, 0),
        (1, 1),
        (0.001, 1),
        (1.2, 2),
        (2.0, 2),
        (59.5, 60),
        (2**31 - 1, 2**31 - 1),
        (float(2**31 - 1), 2**31 - 1),
        (2**31 - 1.5, 2**31 - 1),
    ],
)
def test_reserve_timeout_accepted(value: float, seconds: int) -> None:
    command = ReserveWithTimeout(untyped(value))
    assert command.seconds == seconds
    assert type(command.seconds) is int
    assert command.encode() == b"reserve-with-timeout %d\r\n" % seconds


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (-1, [">= 0", "-1"]),
        (-0.5, [">= 0", "-0.5"]),
        (2**31, ["at most 2147483647", "2147483648"]),
        (2**31 - 0.5, ["at most 2147483647", "2147483647.5"]),  # rounds up past the cap
        pytest.param(HUGE, ["at most 2147483647", "bits"], id="huge"),
        pytest.param(-HUGE, [">= 0", "bits"], id="-huge"),
        (math.nan, [">= 0", "nan"]),
        (math.inf, [">= 0", "inf"]),
        (-math.inf, [">= 0", "-inf"]),
        (True, ["number of seconds", "bool"]),
        ("5", ["number of seconds", "str"]),
        (None, ["number of seconds", "NoneType"]),
    ],
)
def test_reserve_timeout_rejected(value: object, words: list[str]) -> None:
    rejected(lambda: ReserveWithTimeout(untyped(value)), "reserve timeout", *words)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"abc", b"abc"),
        (bytearray(b"abc"), b"abc"),
        (memoryview(b"abc"), b"abc"),
        (memoryview(b"xabcx")[1:4], b"abc"),
        ("abc", b"abc"),
        ("héllo ✓", "héllo ✓".encode()),
        ("", b""),
        (b"", b""),
    ],
)
def test_put_body_accepted(body: object, expected: bytes) -> None:
    command = Put(untyped(body), 0, 0, 1)
    assert command.body == expected
    assert type(command.body) is bytes
    assert command.encode() == b"put 0 0 1 %d\r\n%b\r\n" % (len(expected), expected)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (5, ["job body", "bytes or str", "int"]),
        (None, ["job body", "bytes or str", "NoneType"]),
        ([b"a"], ["job body", "bytes or str", "list"]),
        ("\ud800", ["job body", "not valid Unicode"]),
    ],
)
def test_put_body_rejected(body: object, words: list[str]) -> None:
    rejected(lambda: Put(untyped(body), 0, 0, 1), *words)


@pytest.mark.parametrize(
    ("name", "args", "words"),
    [
        ("stats job", (), ["command name", "printable ASCII"]),
        ("stats\r", (), ["command name", "CR"]),
        ("stats\n", (), ["command name", "LF"]),
        ("st\x00ats", (), ["command name", "NUL"]),
        ("", (), ["command name", "non-empty"]),
        ("café", (), ["command name", "ASCII"]),
        ("\ud800", (), ["command name", "Unicode"]),
        (None, (), ["command name", "str or int", "NoneType"]),
        ("use", ("a b",), ["argument 0 of use", "spaces"]),
        ("use", ("a\rb",), ["argument 0 of use", "CR"]),
        ("use", ("a\nb",), ["argument 0 of use", "LF"]),
        ("use", ("a\x00b",), ["argument 0 of use", "NUL"]),
        ("use", ("",), ["argument 0 of use", "non-empty"]),
        ("use", ("\t",), ["argument 0 of use"]),
        ("pause-tube", ("t", -1), ["argument 1 of pause-tube", "negative"]),
        ("kick", (True,), ["argument 0 of kick", "bool"]),
        ("kick", (1.5,), ["argument 0 of kick", "float"]),
        ("kick", (None,), ["argument 0 of kick", "NoneType"]),
        ("kick", (b"1",), ["argument 0 of kick", "bytes"]),
        pytest.param("kick", (HUGE,), ["argument 0 of kick", "too long"], id="huge"),
        pytest.param("kick", (-HUGE,), ["argument 0 of kick", "negative"], id="-huge"),
    ],
)
def test_raw_token_rejected(name: object, args: tuple[object, ...], words: list[str]) -> None:
    rejected(lambda: RawCommand(untyped(name), untyped(args)), *words)


@pytest.mark.parametrize(
    ("name", "method"),
    [
        ("reserve", "reserve()"),
        ("reserve-with-timeout", "reserve(timeout)"),
        ("reserve-job", "reserve_job()"),
        ("quit", "quit()"),
    ],
)
def test_raw_refuses_commands_with_a_method_of_their_own(name: str, method: str) -> None:
    rejected(lambda: RawCommand(name), repr(name), method)
    rejected(lambda: RawCommand(name, (5,)), method)


def test_raw_line_over_224_bytes_rejected() -> None:
    RawCommand("use", ("a" * 218,))  # 224 bytes with CRLF: fine
    rejected(lambda: RawCommand("use", ("a" * 219,)), "225 bytes", "224")
    rejected(lambda: RawCommand("x" * 300), "302 bytes")
    # The body length appended to the line counts too.
    RawCommand("x", ("a" * 219,), body=None)
    rejected(lambda: RawCommand("x", ("a" * 219,), body=b""), "225 bytes")


def test_raw_body_rejected() -> None:
    rejected(lambda: RawCommand("put", (0, 0, 1), body=untyped(5)), "job body", "int")


def test_rejections_are_value_errors() -> None:
    error = rejected(lambda: Use("-x"))
    assert isinstance(error, ValueError)
    with pytest.raises(ValueError):
        Delete(0)

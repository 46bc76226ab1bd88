"""Typed commands: validated when built, encoded to bytes, and the meaning of their replies.

Each command is a frozen dataclass. Building one checks every argument, so a command that
exists can always be sent; ``encode()`` gives its exact bytes and ``interpret(reply)``
turns the server's reply into a value or raises the error the reply word stands for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Generic, NamedTuple, TypeVar

from ..errors import (
    BuriedError,
    InvalidArgumentError,
    ProtocolError,
    error_for_status,
)
from . import _validate as check
from ._limits import MAX_JOB_ID, MAX_LINE, MAX_U32
from ._parser import Reply
from ._stats import (
    JobStats,
    ServerStats,
    TubeStats,
    parse_job_stats,
    parse_server_stats,
    parse_tube_stats,
    parse_yaml_list,
)

T = TypeVar("T")

# Any command may get these (protocol.md 1.4).
_ANY = frozenset({"OUT_OF_MEMORY", "INTERNAL_ERROR", "BAD_FORMAT", "UNKNOWN_COMMAND"})
_NOT_FOUND = _ANY | {"NOT_FOUND"}


class JobData(NamedTuple):
    """A job as a ``RESERVED`` or ``FOUND`` reply carries it.

    Attributes:
        id: The job id.
        body: The job body.
    """

    id: int
    body: bytes


class Command(Generic[T]):
    """Base of every command: encoding and reply interpretation.

    Subclasses set ``success`` (the reply word that means it worked), ``errors`` (the
    error words the server may send for it) and implement ``line()`` and ``value()``.
    """

    __slots__ = ()

    success: ClassVar[str] = ""
    errors: ClassVar[frozenset[str]] = _ANY
    expects_reply: ClassVar[bool] = True
    """``False`` only for ``quit``, which the server answers by closing."""
    desyncs_on_bad_format: ClassVar[bool] = False
    """Whether a ``BAD_FORMAT`` reply means the server will read the body as a command."""
    may_block: ClassVar[bool] = False
    """Whether the server may hold the reply back (reserve): the client never pipelines
    other commands behind it on the same connection."""
    may_change_tubes: ClassVar[bool] = False
    """Whether it may change the connection's used tube or watch list (``use``, ``watch``,
    ``ignore``, and a raw command, which could be one of them): the connection looks
    closer only at these."""

    def line(self) -> bytes:
        """The command line, without CRLF."""
        raise NotImplementedError

    def encode(self) -> bytes:
        """The exact bytes to send."""
        return self.line() + b"\r\n"

    def describe(self) -> str:
        """The command line as text, for messages."""
        return self.line().decode("ascii", "replace")

    def value(self, reply: Reply) -> T:
        """Turn the success reply into the command's value."""
        raise NotImplementedError

    def interpret(self, reply: Reply) -> T:
        """Turn a reply into this command's value, or raise its error.

        Args:
            reply: The reply the server sent to this command.

        Returns:
            The command's value.

        Raises:
            CommandError: the server answered with an error word (its subclass).
            ProtocolError: the reply word is not one this command can get.
        """
        if reply.status == self.success:
            return self.value(reply)
        if reply.status in self.errors:
            self.raise_error(reply)
        raise ProtocolError(f"{self.describe()!r} got the unexpected reply {reply.status}")

    def raise_error(self, reply: Reply) -> None:
        """Raise the error class the reply's word maps to."""
        cls = error_for_status(reply.status)
        if cls is None:  # pragma: no cover - errors only lists mapped words
            raise ProtocolError(f"{self.describe()!r} got {reply.status}")
        raise cls(command=self.describe())


def _job(reply: Reply) -> JobData:
    if reply.body is None:  # pragma: no cover - the parser always attaches one
        raise ProtocolError(f"{reply.status} reply without a body")
    return JobData(int(reply.args[0]), reply.body)


def _body(reply: Reply) -> bytes:
    if reply.body is None:  # pragma: no cover - the parser always attaches one
        raise ProtocolError(f"{reply.status} reply without a body")
    return reply.body


class _JobCommand(Command[int]):
    """A command on one job id whose value is that id."""

    __slots__ = ()
    job_id: int
    errors = _NOT_FOUND

    def value(self, reply: Reply) -> int:
        return self.job_id


class _TubeCommand(Command[T]):
    __slots__ = ()
    tube: str

    def __post_init__(self) -> None:
        check.tube_name(self.tube)


@dataclass(frozen=True, slots=True, init=False)
class Put(Command[int]):
    """``put <pri> <delay> <ttr> <bytes>``: value is the new job's id.

    ``body`` may be given as ``str`` (encoded as UTF-8). ``BURIED <id>`` raises
    ``BuriedError`` with the id of the job, which exists.
    """

    body: bytes
    priority: int
    delay: int
    ttr: int
    success = "INSERTED"
    errors = _ANY | {"BURIED", "EXPECTED_CRLF", "JOB_TOO_BIG", "DRAINING"}
    desyncs_on_bad_format = True

    def __init__(self, body: bytes, priority: int, delay: int, ttr: int) -> None:
        # Written by hand, as it runs once per put: the generated __init__ of a frozen
        # dataclass sets each field with object.__setattr__ and then calls
        # __post_init__, twice the cost of this. The usual arguments (bytes, ints in
        # range) are checked inline; anything else goes through the full checks, which
        # convert a body or raise. The fields are set through their slot descriptors,
        # the cheapest way past the frozen __setattr__.
        if type(body) is not bytes:
            body = check.body(body)
        if not (type(priority) is int and 0 <= priority <= MAX_U32):
            check.integer(priority, "priority")
        if not (type(delay) is int and 0 <= delay <= MAX_U32):
            check.integer(delay, "delay")
        if not (type(ttr) is int and 0 <= ttr <= MAX_U32):
            check.integer(ttr, "ttr")
        _set_put_body(self, body)
        _set_put_priority(self, priority)
        _set_put_delay(self, delay)
        _set_put_ttr(self, ttr)

    def line(self) -> bytes:
        return b"put %d %d %d %d" % (self.priority, self.delay, self.ttr, len(self.body))

    def encode(self) -> bytes:
        return b"put %d %d %d %d\r\n%b\r\n" % (
            self.priority,
            self.delay,
            self.ttr,
            len(self.body),
            self.body,
        )

    def value(self, reply: Reply) -> int:
        return int(reply.args[0])

    def interpret(self, reply: Reply) -> int:
        # The success first, without the generic dispatch: this runs once per put.
        if reply.status == "INSERTED":
            return int(reply.args[0])
        return Command.interpret(self, reply)

    def raise_error(self, reply: Reply) -> None:
        if reply.status == "BURIED" and reply.args:
            raise BuriedError(command=self.describe(), job_id=int(reply.args[0]))
        # Not super(): a slots=True dataclass is a new class, which zero-argument super()
        # does not know (TypeError on every error word but BURIED <id>).
        Command.raise_error(self, reply)


_set_put_body, _set_put_priority, _set_put_delay, _set_put_ttr = (
    Put.__dict__[name].__set__ for name in ("body", "priority", "delay", "ttr")
)


@dataclass(frozen=True, slots=True)
class Use(_TubeCommand[str]):
    """``use <tube>``: value is the tube now used."""

    tube: str
    may_change_tubes = True
    success = "USING"

    def line(self) -> bytes:
        return b"use " + self.tube.encode("ascii")

    def value(self, reply: Reply) -> str:
        return reply.args[0]


@dataclass(frozen=True, slots=True)
class Reserve(Command[JobData]):
    """``reserve``: waits for a job from the watched tubes."""

    success = "RESERVED"
    errors = _ANY | {"DEADLINE_SOON", "TIMED_OUT"}
    may_block = True

    def line(self) -> bytes:
        return b"reserve"

    def value(self, reply: Reply) -> JobData:
        return _job(reply)


@dataclass(frozen=True, slots=True)
class ReserveWithTimeout(Command[JobData]):
    """``reserve-with-timeout <seconds>``; ``seconds`` is rounded up to whole seconds."""

    seconds: int
    success = "RESERVED"
    errors = _ANY | {"DEADLINE_SOON", "TIMED_OUT"}
    may_block = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", check.reserve_timeout(self.seconds))

    def line(self) -> bytes:
        return b"reserve-with-timeout %d" % self.seconds

    def value(self, reply: Reply) -> JobData:
        return _job(reply)


@dataclass(frozen=True, slots=True)
class ReserveJob(Command[JobData]):
    """``reserve-job <id>``: reserves that job whatever its state (never blocks)."""

    job_id: int
    success = "RESERVED"
    errors = _NOT_FOUND

    def __post_init__(self) -> None:
        check.job_id(self.job_id)

    def line(self) -> bytes:
        return b"reserve-job %d" % self.job_id

    def value(self, reply: Reply) -> JobData:
        return _job(reply)


@dataclass(frozen=True, slots=True, init=False)
class Delete(_JobCommand):
    """``delete <id>``: value is the job id."""

    job_id: int
    success = "DELETED"

    def __init__(self, job_id: int) -> None:
        # Written by hand, as it runs once per job a stream settles (as Put's: the
        # generated frozen __init__ plus __post_init__ cost twice this). A usual id is
        # checked inline; anything else goes through the full check, which raises.
        if not (type(job_id) is int and 0 < job_id <= MAX_JOB_ID):
            check.job_id(job_id)
        _set_delete_job_id(self, job_id)

    def line(self) -> bytes:
        return b"delete %d" % self.job_id

    def encode(self) -> bytes:
        return b"delete %d\r\n" % self.job_id

    def interpret(self, reply: Reply) -> int:
        # The success first, without the generic dispatch: this runs once per job.
        if reply.status == "DELETED":
            return self.job_id
        return Command.interpret(self, reply)


_set_delete_job_id = Delete.__dict__["job_id"].__set__


@dataclass(frozen=True, slots=True)
class Release(_JobCommand):
    """``release <id> <pri> <delay>``: value is the job id (``BURIED`` raises)."""

    job_id: int
    priority: int
    delay: int = 0
    success = "RELEASED"
    errors = _NOT_FOUND | {"BURIED"}

    def __post_init__(self) -> None:
        check.job_id(self.job_id)
        check.integer(self.priority, "priority")
        check.integer(self.delay, "delay")

    def line(self) -> bytes:
        return b"release %d %d %d" % (self.job_id, self.priority, self.delay)


@dataclass(frozen=True, slots=True)
class Bury(_JobCommand):
    """``bury <id> <pri>``: value is the job id."""

    job_id: int
    priority: int
    success = "BURIED"

    def __post_init__(self) -> None:
        check.job_id(self.job_id)
        check.integer(self.priority, "priority")

    def line(self) -> bytes:
        return b"bury %d %d" % (self.job_id, self.priority)


@dataclass(frozen=True, slots=True)
class Touch(_JobCommand):
    """``touch <id>``: value is the job id."""

    job_id: int
    success = "TOUCHED"

    def __post_init__(self) -> None:
        check.job_id(self.job_id)

    def line(self) -> bytes:
        return b"touch %d" % self.job_id


@dataclass(frozen=True, slots=True)
class KickJob(_JobCommand):
    """``kick-job <id>``: value is the job id."""

    job_id: int
    success = "KICKED"

    def __post_init__(self) -> None:
        check.job_id(self.job_id)

    def line(self) -> bytes:
        return b"kick-job %d" % self.job_id


@dataclass(frozen=True, slots=True)
class Watch(_TubeCommand[int]):
    """``watch <tube>``: value is the number of watched tubes."""

    tube: str
    may_change_tubes = True
    success = "WATCHING"

    def line(self) -> bytes:
        return b"watch " + self.tube.encode("ascii")

    def value(self, reply: Reply) -> int:
        return int(reply.args[0])


@dataclass(frozen=True, slots=True)
class Ignore(_TubeCommand[int]):
    """``ignore <tube>``: value is the number of watched tubes left."""

    tube: str
    may_change_tubes = True
    success = "WATCHING"
    errors = _ANY | {"NOT_IGNORED"}

    def line(self) -> bytes:
        return b"ignore " + self.tube.encode("ascii")

    def value(self, reply: Reply) -> int:
        return int(reply.args[0])


@dataclass(frozen=True, slots=True)
class Peek(Command[JobData]):
    """``peek <id>``."""

    job_id: int
    success = "FOUND"
    errors = _NOT_FOUND

    def __post_init__(self) -> None:
        check.job_id(self.job_id)

    def line(self) -> bytes:
        return b"peek %d" % self.job_id

    def value(self, reply: Reply) -> JobData:
        return _job(reply)


@dataclass(frozen=True, slots=True)
class _PeekState(Command[JobData]):
    success = "FOUND"
    errors = _NOT_FOUND
    word: ClassVar[bytes] = b""

    def line(self) -> bytes:
        return self.word

    def value(self, reply: Reply) -> JobData:
        return _job(reply)


@dataclass(frozen=True, slots=True)
class PeekReady(_PeekState):
    """``peek-ready``: the next ready job of the used tube."""

    word = b"peek-ready"


@dataclass(frozen=True, slots=True)
class PeekDelayed(_PeekState):
    """``peek-delayed``: the delayed job of the used tube with the least delay left."""

    word = b"peek-delayed"


@dataclass(frozen=True, slots=True)
class PeekBuried(_PeekState):
    """``peek-buried``: the oldest buried job of the used tube."""

    word = b"peek-buried"


@dataclass(frozen=True, slots=True)
class Kick(Command[int]):
    """``kick <bound>``: value is the number of jobs kicked in the used tube."""

    bound: int
    success = "KICKED"

    def __post_init__(self) -> None:
        check.integer(self.bound, "kick bound")

    def line(self) -> bytes:
        return b"kick %d" % self.bound

    def value(self, reply: Reply) -> int:
        if not reply.args:
            raise ProtocolError(f"{self.describe()!r} got KICKED without a count")
        return int(reply.args[0])


@dataclass(frozen=True, slots=True)
class StatsJob(Command[JobStats]):
    """``stats-job <id>``."""

    job_id: int
    success = "OK"
    errors = _NOT_FOUND

    def __post_init__(self) -> None:
        check.job_id(self.job_id)

    def line(self) -> bytes:
        return b"stats-job %d" % self.job_id

    def value(self, reply: Reply) -> JobStats:
        return parse_job_stats(_body(reply))


@dataclass(frozen=True, slots=True)
class StatsTube(_TubeCommand[TubeStats]):
    """``stats-tube <tube>``."""

    tube: str
    success = "OK"
    errors = _NOT_FOUND

    def line(self) -> bytes:
        return b"stats-tube " + self.tube.encode("ascii")

    def value(self, reply: Reply) -> TubeStats:
        return parse_tube_stats(_body(reply))


@dataclass(frozen=True, slots=True)
class Stats(Command[ServerStats]):
    """``stats``."""

    success = "OK"

    def line(self) -> bytes:
        return b"stats"

    def value(self, reply: Reply) -> ServerStats:
        return parse_server_stats(_body(reply))


@dataclass(frozen=True, slots=True)
class ListTubes(Command[list[str]]):
    """``list-tubes``."""

    success = "OK"

    def line(self) -> bytes:
        return b"list-tubes"

    def value(self, reply: Reply) -> list[str]:
        return parse_yaml_list(_body(reply))


@dataclass(frozen=True, slots=True)
class ListTubesWatched(Command[list[str]]):
    """``list-tubes-watched``."""

    success = "OK"

    def line(self) -> bytes:
        return b"list-tubes-watched"

    def value(self, reply: Reply) -> list[str]:
        return parse_yaml_list(_body(reply))


@dataclass(frozen=True, slots=True)
class ListTubeUsed(Command[str]):
    """``list-tube-used``."""

    success = "USING"

    def line(self) -> bytes:
        return b"list-tube-used"

    def value(self, reply: Reply) -> str:
        return reply.args[0]


@dataclass(frozen=True, slots=True)
class PauseTube(_TubeCommand[str]):
    """``pause-tube <tube> <delay>``: value is the tube. A delay of 0 pauses for 1 s."""

    tube: str
    delay: int
    success = "PAUSED"
    errors = _NOT_FOUND

    def __post_init__(self) -> None:
        check.tube_name(self.tube)
        check.integer(self.delay, "pause delay")

    def line(self) -> bytes:
        return b"pause-tube %b %d" % (self.tube.encode("ascii"), self.delay)

    def value(self, reply: Reply) -> str:
        return self.tube


@dataclass(frozen=True, slots=True)
class Quit(Command[None]):
    """``quit``: the server closes the connection without a reply."""

    expects_reply = False

    def line(self) -> bytes:
        return b"quit"

    def value(self, reply: Reply) -> None:  # pragma: no cover - there is no reply
        return None


# Raw command words that would break the client's bookkeeping if sent through command():
# reserves must own their connection, and quit closes it.
_NOT_RAW = {
    "reserve": "reserve()",
    "reserve-with-timeout": "reserve(timeout)",
    "reserve-job": "reserve_job()",
    "quit": "quit()",
}


@dataclass(frozen=True, slots=True)
class RawCommand(Command[Reply]):
    """Any command line, for the escape hatch ``Client.command``.

    Its value is the ``Reply`` itself for any word that is not an error word; error
    words raise their ``CommandError`` (``BURIED`` is taken as success, as for ``bury``).
    When ``body`` is given its length is appended to the arguments, as ``put`` wants.
    """

    name: str
    args: tuple[str | int, ...] = ()
    body: bytes | None = None
    may_change_tubes = True
    _line: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __post_init__(self) -> None:
        name = check.token(self.name, "command name").decode("ascii")
        if name in _NOT_RAW:
            raise InvalidArgumentError(
                f"{name!r} cannot be sent through command(): use {_NOT_RAW[name]}, which "
                "keeps the client's connection bookkeeping right"
            )
        words = [name.encode("ascii")]
        words += [check.token(arg, f"argument {i} of {name}") for i, arg in enumerate(self.args)]
        if self.body is not None:
            object.__setattr__(self, "body", check.body(self.body))
            words.append(b"%d" % len(self.body))
        line = b" ".join(words)
        if len(line) + 2 > MAX_LINE:
            raise InvalidArgumentError(
                f"command line is {len(line) + 2} bytes; the server reads at most {MAX_LINE}"
            )
        object.__setattr__(self, "_line", line)

    @property
    def desyncs_on_bad_format(self) -> bool:  # type: ignore[override]
        """A raw command with a body desynchronises on ``BAD_FORMAT``, as ``put`` does."""
        return self.body is not None

    def line(self) -> bytes:
        return self._line

    def encode(self) -> bytes:
        if self.body is None:
            return self._line + b"\r\n"
        return self._line + b"\r\n" + self.body + b"\r\n"

    def value(self, reply: Reply) -> Reply:
        return reply

    def interpret(self, reply: Reply) -> Reply:
        """Return the reply, or raise the error its word stands for.

        Raises:
            CommandError: the reply word is an error word other than ``BURIED``.
        """
        if reply.status != "BURIED" and error_for_status(reply.status) is not None:
            self.raise_error(reply)
        return reply

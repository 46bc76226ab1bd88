"""Every error rxbeanstalk raises or delivers to ``on_error``.

The tree::

    BeanstalkError
    ├── CommandError                the server answered with a documented error word
    │   ├── NotFoundError           NOT_FOUND
    │   ├── TimedOutError           TIMED_OUT (the normal end of a reserve with a timeout)
    │   ├── DeadlineSoonError       DEADLINE_SOON (a job held here is within 1 s of its TTR)
    │   ├── NotIgnoredError         NOT_IGNORED (would empty the watch list)
    │   ├── BuriedError(job_id)     BURIED <id> after put/release: the job exists, buried
    │   ├── DrainingError           DRAINING (the server refuses new jobs)
    │   ├── JobTooBigError          JOB_TOO_BIG
    │   ├── ExpectedCrlfError       EXPECTED_CRLF
    │   └── ServerError             the server failed, not the command
    │       ├── OutOfMemoryError    OUT_OF_MEMORY
    │       ├── InternalError       INTERNAL_ERROR
    │       ├── BadFormatError      BAD_FORMAT
    │       └── UnknownCommandError UNKNOWN_COMMAND
    ├── ProtocolError               the server sent bytes that are not valid protocol
    ├── TransportError
    │   ├── ConnectError            could not connect (refused, timeout, bad unix path)
    │   └── ConnectionLostError     the connection dropped; every pending command fails
    │       ├── CommandTimeoutError no reply within the command's deadline (also TimeoutError)
    │       └── JobLostError        settling a job whose reservation is gone
    ├── JobSettledError             the job was already deleted, released or buried
    ├── LoopBindingError            used from an event loop the client is not bound to
    └── InvalidArgumentError        rejected at call time, nothing sent (also ValueError)

A ``CommandError`` means the connection is still in step with the server; every
``TransportError`` and ``ProtocolError`` means the connection it happened on was closed.
"""

from __future__ import annotations

__all__ = [
    "BadFormatError",
    "BeanstalkError",
    "BuriedError",
    "CommandError",
    "CommandTimeoutError",
    "ConnectError",
    "ConnectionLostError",
    "DeadlineSoonError",
    "DrainingError",
    "ExpectedCrlfError",
    "InternalError",
    "InvalidArgumentError",
    "JobLostError",
    "JobSettledError",
    "JobTooBigError",
    "LoopBindingError",
    "NotFoundError",
    "NotIgnoredError",
    "OutOfMemoryError",
    "ProtocolError",
    "ServerError",
    "TimedOutError",
    "TransportError",
    "UnknownCommandError",
    "error_for_status",
]


class BeanstalkError(Exception):
    """Base class of every error raised by rxbeanstalk."""


class CommandError(BeanstalkError):
    """The server answered a command with one of its documented error words.

    Attributes:
        status: The reply word, for example ``"NOT_FOUND"``.
        command: The command line that was sent (without the body), for messages.
    """

    status: str = ""

    def __init__(self, message: str = "", *, command: str = "") -> None:
        self.command = command
        super().__init__(message or self._default_message())

    def _default_message(self) -> str:
        if self.command:
            return f"{self.command!r} -> {self.status}"
        return self.status


class NotFoundError(CommandError):
    """``NOT_FOUND``: no such job or tube, or the job is reserved by another connection."""

    status = "NOT_FOUND"


class TimedOutError(CommandError):
    """``TIMED_OUT``: a reserve with a timeout found no job in time."""

    status = "TIMED_OUT"


class DeadlineSoonError(CommandError):
    """``DEADLINE_SOON``: a job this connection holds is within 1 s of its TTR."""

    status = "DEADLINE_SOON"


class NotIgnoredError(CommandError):
    """``NOT_IGNORED``: ignoring this tube would leave the watch list empty."""

    status = "NOT_IGNORED"


class BuriedError(CommandError):
    """``BURIED <id>`` after ``put`` or ``release``: the server ran out of memory.

    The job exists, but it was buried instead of being made ready.

    Attributes:
        job_id: The id of the buried job (``None`` after ``release``, whose reply has none).
    """

    status = "BURIED"

    def __init__(self, message: str = "", *, command: str = "", job_id: int | None = None):
        self.job_id = job_id
        super().__init__(message, command=command)

    def _default_message(self) -> str:
        base = super()._default_message()
        return base if self.job_id is None else f"{base} (job {self.job_id} exists, buried)"


class DrainingError(CommandError):
    """``DRAINING``: the server is in drain mode and accepts no new jobs."""

    status = "DRAINING"


class JobTooBigError(CommandError):
    """``JOB_TOO_BIG``: the body is larger than the server's ``max-job-size``."""

    status = "JOB_TOO_BIG"


class ExpectedCrlfError(CommandError):
    """``EXPECTED_CRLF``: the job body was not followed by CRLF."""

    status = "EXPECTED_CRLF"


class ServerError(CommandError):
    """The server failed to carry out the command (any command can get these)."""


class OutOfMemoryError(ServerError):
    """``OUT_OF_MEMORY``: the server could not allocate memory for the command."""

    status = "OUT_OF_MEMORY"


class InternalError(ServerError):
    """``INTERNAL_ERROR``: a bug in the server."""

    status = "INTERNAL_ERROR"


class BadFormatError(ServerError):
    """``BAD_FORMAT``: the server could not parse the command line."""

    status = "BAD_FORMAT"


class UnknownCommandError(ServerError):
    """``UNKNOWN_COMMAND``: the server does not know the command."""

    status = "UNKNOWN_COMMAND"


class ProtocolError(BeanstalkError):
    """The server sent bytes that are not valid beanstalkd protocol.

    The connection they arrived on is closed; no attempt is made to resynchronise.
    """


class TransportError(BeanstalkError):
    """The connection to the server failed."""


class ConnectError(TransportError):
    """Could not connect: refused, timed out, or a bad unix socket path."""


class ConnectionLostError(TransportError):
    """The connection dropped; every command pending on it failed with this error.

    A command whose bytes were sent may or may not have been carried out (a ``put`` may
    have created its job). rxbeanstalk never sends such a command again by itself.
    """


class CommandTimeoutError(ConnectionLostError, TimeoutError):
    """No reply arrived within the command's deadline.

    The connection is closed, because a late reply would be taken for the reply to the
    next command.
    """


class JobLostError(ConnectionLostError):
    """The reservation of the job being settled is gone.

    Its connection closed, the server restarted, or its TTR ran out; the server has put
    the job back (or lost it, without a binlog). When the loss was known beforehand,
    nothing was sent; when it showed only in the reply (``NOT_FOUND``, or the connection
    dropping while the command was in flight), the command's outcome is unknown.
    """


class JobSettledError(BeanstalkError):
    """The job was already deleted, released or buried through this handle."""


class LoopBindingError(BeanstalkError, RuntimeError):
    """The client was used in a way its event-loop binding does not allow.

    A client belongs to the loop it first connected on; using it from another running
    loop, or blocking on ``.run()`` on its own loop thread, raises this.
    """


class InvalidArgumentError(BeanstalkError, ValueError):
    """An argument was rejected at call time; nothing was sent."""


# One table from reply word to error class: the parser and the client both use it.
_ERRORS_BY_STATUS: dict[str, type[CommandError]] = {
    cls.status: cls
    for cls in (
        NotFoundError,
        TimedOutError,
        DeadlineSoonError,
        NotIgnoredError,
        BuriedError,
        DrainingError,
        JobTooBigError,
        ExpectedCrlfError,
        OutOfMemoryError,
        InternalError,
        BadFormatError,
        UnknownCommandError,
    )
}


def error_for_status(status: str) -> type[CommandError] | None:
    """Return the error class for a reply word, or ``None`` if the word is not an error.

    Args:
        status: A reply word such as ``"NOT_FOUND"``.

    Returns:
        The ``CommandError`` subclass for the word, or ``None``.
    """
    return _ERRORS_BY_STATUS.get(status)

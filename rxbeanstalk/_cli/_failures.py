"""Exit codes, and the one-line message for each way a command can fail."""

from __future__ import annotations

import os
import socket

from ..errors import (
    BeanstalkError,
    BuriedError,
    CommandError,
    CommandTimeoutError,
    ConnectError,
    DrainingError,
    InvalidArgumentError,
    JobTooBigError,
    ProtocolError,
    TransportError,
)

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliError",
    "explain",
]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILED = 1
"""The server refused or could not carry out the command (``NOT_FOUND``, ``DRAINING``...)."""
EXIT_USAGE = 2
"""Bad command line: unknown command or option, malformed value."""
EXIT_UNREACHABLE = 3
"""The server could not be reached, or stopped answering."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C (SIGINT), as a shell reports 128 + SIGINT."""


class CliError(Exception):
    """A failure the tool reports as one line on stderr, with its exit code.

    Args:
        message: What went wrong, without the ``rxbeanstalk:`` prefix.
        exit_code: The process's exit code.
    """

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def explain(error: BeanstalkError, address: str, timeout: float) -> CliError:
    """Turn an error of the client library into a message and an exit code.

    Commands translate the errors whose meaning depends on them (``NOT_FOUND`` is "job
    42 not found" for ``delete``, "no ready job" for ``peek``) before this runs.

    Args:
        error: What the client raised.
        address: The server's address, for messages.
        timeout: The ``--timeout`` in force, for messages.

    Returns:
        The error to report.
    """
    if isinstance(error, InvalidArgumentError):
        return CliError(str(error), EXIT_USAGE)
    if isinstance(error, ConnectError):
        cause = error.__cause__
        if isinstance(cause, OSError):
            reason = _os_reason(cause)
        else:  # the library raises the connect timeout without a cause
            reason = f"no connection within {timeout:g} s"
        return CliError(f"cannot connect to {address}: {reason}", EXIT_UNREACHABLE)
    if isinstance(error, CommandTimeoutError):
        return CliError(f"no reply from {address} within {timeout:g} s", EXIT_UNREACHABLE)
    if isinstance(error, TransportError):
        return CliError(f"lost the connection to {address}: {error}", EXIT_UNREACHABLE)
    if isinstance(error, ProtocolError):
        return CliError(f"{address} does not speak the beanstalkd protocol: {error}")
    if isinstance(error, DrainingError):
        return CliError(f"{address} is draining: it accepts no new jobs")
    if isinstance(error, JobTooBigError):
        return CliError(f"the job is larger than the max-job-size of {address}")
    if isinstance(error, BuriedError):
        which = "the job" if error.job_id is None else f"job {error.job_id}"
        return CliError(f"{which} was buried at once: {address} is out of memory")
    if isinstance(error, CommandError):
        return CliError(f"{address} answered {error.status}: {error}")
    return CliError(str(error))


def _os_reason(error: OSError) -> str:
    if isinstance(error, socket.gaierror) or not error.errno:
        # A resolver error's errno is an EAI_* code, not an errno: keep its own text.
        text = error.strerror or str(error)
    else:
        # asyncio re-raises "Connect call failed ('127.0.0.1', 1)" with the errno kept:
        # the errno's own text says what happened.
        text = os.strerror(error.errno)
    # "Connection refused" reads better mid-sentence in lower case.
    return text[:1].lower() + text[1:]

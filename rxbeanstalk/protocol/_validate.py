"""Argument checks run when a command is built, before a byte can be sent."""

from __future__ import annotations

import math
import re

from ..errors import InvalidArgumentError
from ._limits import MAX_JOB_ID, MAX_LINE, MAX_RESERVE_TIMEOUT, MAX_TUBE_NAME, MAX_U32

# The server's NAME_CHARS; a name may not begin with '-'.
_TUBE_RE = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]*\Z")
# A raw command word or argument: anything printable that the server splits on nothing.
_TOKEN_RE = re.compile(rb"[\x21-\x7e]+\Z")
# An int argument this large could not fit on a command line (and b"%d" may refuse it).
_TOKEN_INT_LIMIT = 10**MAX_LINE


def _show(value: object) -> str:
    """A number for a message; ``str()`` of an int over 4300 digits raises ValueError."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an int of {value.bit_length()} bits"
    return str(value)


def tube_name(name: object, what: str = "tube") -> str:
    """Check a tube name against the server's grammar.

    Args:
        name: The candidate name.
        what: What the name is, for the message.

    Returns:
        The name, unchanged.

    Raises:
        InvalidArgumentError: ``name`` is not a ``str`` of 1-200 bytes from
            ``A-Z a-z 0-9 - + / ; . $ _ ( )`` that does not start with ``-``.
    """
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{what} name must be a str, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_TUBE_NAME:
        raise InvalidArgumentError(
            f"{what} name must be 1 to {MAX_TUBE_NAME} bytes long, got {len(name)}: {name!r:.60}"
        )
    if _TUBE_RE.match(name) is None:
        if name.startswith("-"):
            raise InvalidArgumentError(f"{what} name may not start with '-': {name!r}")
        raise InvalidArgumentError(
            f"{what} name may only use A-Z a-z 0-9 and - + / ; . $ _ ( ): {name!r}"
        )
    return name


def integer(value: object, what: str, low: int = 0, high: int = MAX_U32) -> int:
    """Check that ``value`` is an ``int`` (not a ``bool``) in ``low..high``.

    Args:
        value: The candidate.
        what: The argument's name, for the message.
        low: Smallest accepted value.
        high: Largest accepted value.

    Returns:
        The value.

    Raises:
        InvalidArgumentError: not an ``int``, or out of range.
    """
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{what} must be an int, not {type(value).__name__}")
        value = int(value)
    if not low <= value <= high:
        raise InvalidArgumentError(f"{what} must be in {low}..{high}, got {_show(value)}")
    return value


def job_id(value: object) -> int:
    """Check a job id: an ``int`` in ``1..2**64-1``.

    Raises:
        InvalidArgumentError: not an ``int``, or out of range.
    """
    return integer(value, "job id", 1, MAX_JOB_ID)


def reserve_timeout(value: object) -> int:
    """Turn a reserve timeout in seconds into the whole seconds sent to the server.

    A fractional timeout is rounded up, so a reserve never gives up early.

    Raises:
        InvalidArgumentError: not a real number, negative, or above ``2**31-1``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(
            f"reserve timeout must be a number of seconds, not {type(value).__name__}"
        )
    # math.isfinite() of an int too large for a float raises OverflowError: ints are finite.
    if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        raise InvalidArgumentError(f"reserve timeout must be >= 0 seconds, got {_show(value)}")
    seconds = math.ceil(value)
    if seconds > MAX_RESERVE_TIMEOUT:
        raise InvalidArgumentError(
            f"reserve timeout must be at most {MAX_RESERVE_TIMEOUT} s, got {_show(value)}"
        )
    return seconds


def body(value: object) -> bytes:
    """Turn a job body into bytes: ``bytes``-like as is, ``str`` encoded as UTF-8.

    Raises:
        InvalidArgumentError: neither bytes-like nor ``str``.
    """
    if type(value) is bytes:
        return value
    if isinstance(value, str):
        return _utf8(value, "job body")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidArgumentError(f"job body must be bytes or str, not {type(value).__name__}")


def token(value: object, what: str) -> bytes:
    """Check one word of a raw command line: printable ASCII, no space, CR, LF or NUL.

    Raises:
        InvalidArgumentError: empty, or holds a character the protocol cannot carry.
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a str or int, not bool")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgumentError(f"{what} may not be negative, got {_show(value)}")
        if value >= _TOKEN_INT_LIMIT:
            raise InvalidArgumentError(f"{what} is too long for a command line: {_show(value)}")
        return b"%d" % value
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str or int, not {type(value).__name__}")
    raw = _utf8(value, what)
    if _TOKEN_RE.match(raw) is None:
        raise InvalidArgumentError(
            f"{what} must be non-empty printable ASCII without spaces, CR, LF or NUL: {value!r}"
        )
    return raw


def _utf8(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise InvalidArgumentError(f"{what} is not valid Unicode text: {exc}") from None

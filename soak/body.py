r"""Job bodies that carry their own identity and checksum.

Loss, duplication and corruption are measured from content, not from job ids (ids are
per server process). A body is::

    soak <run> <seq> <attempt>\n<payload> <sha256 hex of everything before the space>

``run`` is a random id of the soak run (a stray job from elsewhere never counts),
``seq`` the job's number in the run, and ``attempt`` which put attempt of that seq made
the job: a put retried after an unknown outcome makes a second job with the same seq
and a higher attempt, so a put-retry duplicate is told apart from a redelivery by the
body alone. The payload is random binary (CR, LF, NUL and all), and the digest at the
end is hex, so a body cut or shifted by the wire never ends in a valid CRLF trailer.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

__all__ = ["BodyError", "Stamp", "make_body", "read_body"]

_MAGIC = b"soak"
_DIGEST = 64  # hex characters of a sha256


class BodyError(ValueError):
    """A delivered body that is not what any producer of this run put."""


class Stamp(NamedTuple):
    """Who a body says it is."""

    seq: int
    attempt: int


def make_body(run_id: str, seq: int, attempt: int, payload: bytes) -> bytes:
    """The body of put ``attempt`` of job ``seq``.

    Args:
        run_id: The run's id (no spaces).
        seq: The job's number in the run.
        attempt: The put attempt (0 for the first).
        payload: Arbitrary bytes.

    Returns:
        The body, ending in the sha256 of its content.
    """
    content = b"%s %s %d %d\n%s" % (_MAGIC, run_id.encode(), seq, attempt, payload)
    return content + b" " + hashlib.sha256(content).hexdigest().encode()


def read_body(body: bytes, run_id: str) -> Stamp:
    """Check a delivered body and say which job it is.

    Args:
        body: The body as delivered.
        run_id: The run's id.

    Returns:
        Its seq and attempt.

    Raises:
        BodyError: the digest does not match, or the header is not this run's.
    """
    if len(body) < _DIGEST + 2 or body[-_DIGEST - 1 : -_DIGEST] != b" ":
        raise BodyError(f"no digest trailer in a {len(body)}-byte body")
    content, digest = body[: -_DIGEST - 1], body[-_DIGEST:]
    if hashlib.sha256(content).hexdigest().encode() != digest:
        raise BodyError(f"sha256 mismatch in a {len(body)}-byte body")
    header = content.split(b"\n", 1)[0].split(b" ")
    if len(header) != 4 or header[0] != _MAGIC or header[1] != run_id.encode():
        raise BodyError(f"not a body of run {run_id}: {bytes(header[0][:40])!r}...")
    try:
        return Stamp(int(header[2]), int(header[3]))
    except ValueError:
        raise BodyError(f"bad seq or attempt in {b' '.join(header)!r}") from None

"""``Job``: a job's id and body, and, when reserved, the means to settle it.

A reserved job remembers the connection that reserved it, because only that connection
may release, bury or touch it (or delete it while reserved). Once that connection is gone
the reservation is gone too, and settling delivers ``JobLostError`` without sending
anything: on a new connection the same id could name a job somebody else now holds, or,
after a server restart, a different job altogether.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from .protocol import Delete, JobStats, _html

if TYPE_CHECKING:
    from reactivex import Observable

    from ._client import Client
    from ._connection import Connection, Sink


# How a settled handle reads in its repr (Job._settled holds the command's name).
_SETTLED_STATE = {"delete": "deleted", "release": "released", "bury": "buried"}


class Holder(Protocol):
    """Whoever lent the connection a job was reserved on (a pool, a stream lane)."""

    def job_settling(self, job: Job) -> None:
        """A ``delete``, ``release`` or ``bury`` of ``job`` was just sent on its connection."""

    def job_settled(self, job: Job) -> None:
        """That command's reply arrived (or it failed): the job is no longer held."""

    def job_touched(self, job: Job) -> None:
        """A ``touch`` of ``job`` was answered ``TOUCHED``: its TTR starts again now."""


class Job:
    """A beanstalkd job.

    Attributes:
        id: The job id (unique within one server process).
        body: The job body.
    """

    __slots__ = ("_client", "_connection", "_holder", "_lost", "_settled", "body", "id")

    def __init__(
        self,
        job_id: int,
        body: bytes,
        client: Client,
        connection: Connection | None = None,
        holder: Holder | None = None,
    ) -> None:
        self.id = job_id
        self.body = body
        self._client = client
        self._connection = connection
        self._holder = holder
        self._settled: str | None = None
        self._lost: str | None = None

    def _state(self) -> str:
        """What this handle can still do, in a word or two (for the reprs)."""
        if self._settled is not None:
            return _SETTLED_STATE.get(self._settled, self._settled)
        if self._connection is None:
            return "peeked"  # from peek*: a copy of the job, never reserved through it
        return "reserved" if self.reserved else "reservation lost"

    def __repr__(self) -> str:
        preview = self.body[:40]
        more = "..." if len(self.body) > 40 else ""
        return f"<Job {self.id} {self._state()} {len(self.body)} bytes {preview!r}{more}>"

    def _repr_html_(self) -> str:
        """Jupyter's rich display: id, state and size, then the start of the body."""
        return _html.compact(
            f"job {self.id}",
            [("state", self._state()), ("bytes", len(self.body))],
            pre=_html.body_preview(self.body),
        )

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def reserved(self) -> bool:
        """Whether this handle holds a live, unsettled reservation."""
        conn = self._connection
        return conn is not None and not conn.closed and self._settled is None and self._lost is None

    @property
    def settled(self) -> str | None:
        """How the job was settled through this handle (``"delete"``, ...), or ``None``."""
        return self._settled

    def delete(self) -> Observable[int]:
        """Delete the job (cold; emits the job id).

        On a reserved job it goes over the connection that reserved it; a second
        ``delete``/``release``/``bury`` delivers ``JobSettledError``; a lost reservation
        delivers ``JobLostError``; nothing is sent in either case.
        """
        return self._client.delete(self)

    def _delete_to(self, sink: Sink) -> bool:
        """Delete the job now, as a subscription to ``delete()`` would, reporting to ``sink``.

        ``sink`` gets the id, or the same errors the Observable would deliver.
        ``process`` settles every job this way: a callback costs far less per job than
        an Observable and the future behind ``await``.

        Returns:
            ``False``, sending nothing, when not called on the client's loop thread (use
            ``delete()`` there: it hands the command over).
        """
        client = self._client
        if not client._binding.on_loop_thread():
            return False
        client._settle((self, "delete", Delete(self.id)), sink)
        return True

    def release(self, *, priority: int | None = None, delay: int = 0) -> Observable[int]:
        """Put the reserved job back, ready (or delayed by ``delay`` seconds).

        Args:
            priority: New priority; ``None`` keeps the job's priority (read with
                ``stats-job`` first).
            delay: Seconds before the job is ready again.

        Raises:
            InvalidArgumentError: a bad priority or delay (at call time).
        """
        return self._client.release(self, priority=priority, delay=delay)

    def bury(self, *, priority: int | None = None) -> Observable[int]:
        """Bury the reserved job; ``priority=None`` keeps its priority.

        Raises:
            InvalidArgumentError: a bad priority (at call time).
        """
        return self._client.bury(self, priority=priority)

    def touch(self) -> Observable[int]:
        """Ask for more time: the job's TTR starts again (cold; emits the job id)."""
        return self._client.touch(self)

    def stats(self) -> Observable[JobStats]:
        """The job's ``stats-job`` (cold)."""
        return self._client.stats_job(self)

"""A lane: one reserving connection that holds at most one job at a time.

A lane is the unit of credit behind ``reserve_stream`` and ``reserve_iter``: it reserves,
hands the job out, and reserves again only once that job is settled (the settle command
is sent, and the next reserve goes out right behind it, often in the same write) or its
reservation is lost. So N lanes never hold more than N jobs, whatever the consumer does.

Lanes reserve with ``reserve-with-timeout`` in a loop rather than a bare ``reserve``, so
a dead server or a half-open connection shows up as a typed error within the timeout
plus a grace, not hours later.

The server's own TTR expiry is unreliable on an idle connection (beanstalkd <= 1.13 can
miss it), so a lane polices the deadline of the job it holds: after a second it asks
``stats-job`` for the TTR, and once the TTR has passed since the reserve (or the last
touch) it treats the reservation as lost, sends ``stats-job`` once more (a command that
is not about the job makes the server release it at once; a touch or a delete would
rescue it), and reserves again. With ``auto_touch`` it asks for the TTR at once and
touches the job before it runs out.

The one-second check costs no timer per job: most jobs are settled well within the
second, so a lane keeps one check timer that is not cancelled when its job is settled.
When it fires it looks at the job held then, and either asks for its TTR (held a second
or more) or waits for that job's own second. So a lane arms at most about one timer a
second however fast it turns jobs over, instead of arming and cancelling one per job
(cancelled timers stay in the loop's heap until they come due, and every timer after
them pays for the heap's size).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from ._connection import Connection, open_connection
from ._job import Job
from .errors import BeanstalkError, ConnectionLostError, DeadlineSoonError, TimedOutError
from .protocol import (
    DEFAULT_TUBE,
    Ignore,
    JobData,
    JobStats,
    ReserveWithTimeout,
    StatsJob,
    Touch,
    Watch,
)

if TYPE_CHECKING:
    from ._channel import Address
    from ._client import Client

# Seconds each reserve waits on the server before it is simply sent again.
RESERVE_WAIT = 5
# Every lane sends the same reserve: built (and validated) once.
_RESERVE = ReserveWithTimeout(RESERVE_WAIT)
# How long a job may be held before the lane asks for its TTR.
_FIRST_CHECK = 1.0
# Past the TTR by this much, a job still unsettled is taken as lost.
_EXPIRY_GRACE = 0.25
# After DEADLINE_SOON, wait this long before reserving again (never spin).
_DEADLINE_SOON_PAUSE = 0.2


class LaneListener(Protocol):
    """What a lane reports to the stream or iterator that owns it."""

    def lane_job(self, lane: Lane, job: Job) -> None:
        """The lane reserved ``job``."""

    def lane_free(self, lane: Lane) -> None:
        """The lane's job was settled (or lost): it may reserve again."""

    def lane_idle(self, lane: Lane) -> None:
        """The settle command of the lane's job got its reply: nothing is in flight."""

    def lane_failed(self, lane: Lane, error: BaseException) -> None:
        """The lane's connection failed; the lane is closed."""


class _StateSink:
    __slots__ = ()

    def resolve(self, value: Any) -> None:
        pass

    def reject(self, error: BaseException) -> None:
        pass  # the connection closes itself; the reserve behind it reports the failure


_STATE = _StateSink()


class Lane:
    """One reserving connection that holds at most one job.

    Args:
        client: The client the lane's jobs belong to.
        address: Server address and timeouts.
        watch: The tubes to reserve from.
        listener: Receives jobs, credit and failures.
        auto_touch: Touch the held job before its TTR runs out.
    """

    __slots__ = (
        "_address",
        "_asked",
        "_auto_touch",
        "_check_timer",
        "_client",
        "_listener",
        "_since",
        "_timer",
        "_ttr",
        "_watch",
        "closed",
        "conn",
        "job",
        "reserving",
        "settling",
    )

    def __init__(
        self,
        client: Client,
        address: Address,
        watch: tuple[str, ...],
        listener: LaneListener,
        *,
        auto_touch: bool = False,
    ) -> None:
        self._client = client
        self._address = address
        self._watch = watch
        self._listener = listener
        self._auto_touch = auto_touch
        # The held job's expiry or touch, or the pause after DEADLINE_SOON: cancelled
        # when the job is settled.
        self._timer: asyncio.TimerHandle | None = None
        # The first check of whichever job is held when it fires: never cancelled on a
        # settle (see the module's docstring), only when the lane closes.
        self._check_timer: asyncio.TimerHandle | None = None
        # The job whose TTR was asked for (so each job is asked once).
        self._asked: Job | None = None
        self._ttr = 0.0
        # When the held job's TTR last started (its reserve or touch reply arrived): the
        # server's deadline is at most this plus the TTR.
        self._since = 0.0
        self.conn: Connection | None = None
        self.job: Job | None = None
        self.reserving = False
        self.settling = 0
        self.closed = False

    @property
    def quiet(self) -> bool:
        """Whether the lane holds no job and no settle command is in flight."""
        return self.job is None and self.settling == 0

    async def open(self) -> None:
        """Connect and apply the watch list (pipelined ahead of the first reserve).

        Raises:
            ConnectError: the server could not be reached.
        """
        address = self._address
        conn = await open_connection(
            asyncio.get_running_loop(),
            host=address.host,
            port=address.port,
            unix_path=address.unix_path,
            connect_timeout=address.connect_timeout,
            max_body=address.max_body,
        )
        if self.closed:
            conn.close()
            return
        self.conn = conn
        # A lane that holds a job has nothing in flight, so only this tells it that the
        # connection dropped (and the server took the job back).
        conn.on_close(self._connection_closed)
        timeout = address.command_timeout
        for tube in self._watch:
            if tube != DEFAULT_TUBE:
                conn.send(Watch(tube), _STATE, timeout)
        if DEFAULT_TUBE not in self._watch:
            conn.send(Ignore(DEFAULT_TUBE), _STATE, timeout)

    # -- reserving --------------------------------------------------------------------

    def reserve(self) -> None:
        """Send a reserve, unless the lane is closed, holds a job or is reserving."""
        conn = self.conn
        if self.closed or self.reserving or self.job is not None or conn is None:
            return
        self.reserving = True
        conn.send(_RESERVE, self, RESERVE_WAIT + self._address.command_timeout)

    def resolve(self, data: JobData) -> None:
        """A reserve's reply: a job."""
        self.reserving = False
        conn = self.conn
        assert conn is not None
        job = Job(data.id, data.body, self._client, conn, self)
        self.job = job
        loop = conn.loop
        self._since = loop.time()
        self._ttr = 0.0
        if self._auto_touch:
            self._ask_ttr(job)
        elif self._check_timer is None:
            # (A timer armed for an earlier job fires sooner and waits on for this one.)
            self._check_timer = loop.call_at(self._since + _FIRST_CHECK, self._check)
        self._listener.lane_job(self, job)

    def reject(self, error: BaseException) -> None:
        """A reserve's failure: TIMED_OUT and DEADLINE_SOON just reserve again."""
        self.reserving = False
        if self.closed:
            return
        if isinstance(error, TimedOutError):
            self.reserve()
        elif isinstance(error, DeadlineSoonError):
            assert self.conn is not None
            self._timer = self.conn.loop.call_later(_DEADLINE_SOON_PAUSE, self.reserve)
        else:
            self.close()
            self._listener.lane_failed(self, error)

    # -- the held job -----------------------------------------------------------------

    def job_settling(self, job: Job) -> None:
        """``Holder``: a settle command for ``job`` was sent; the credit is free."""
        self.settling += 1
        if job is self.job:
            self._release_credit()

    def job_settled(self, job: Job) -> None:
        """``Holder``: the settle command's reply arrived."""
        self.settling -= 1
        if self.quiet:
            self._listener.lane_idle(self)

    def _release_credit(self) -> None:
        self.job = None
        self._asked = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._listener.lane_free(self)

    def _check(self) -> None:
        self._check_timer = None
        job, conn = self.job, self.conn
        if job is None or conn is None or self.closed or self._asked is job:
            return  # nothing held now: the next job's reserve arms the check again
        due = self._since + _FIRST_CHECK
        if conn.loop.time() < due:
            # Armed for a job settled since: this one has not been held a second yet.
            self._check_timer = conn.loop.call_at(due, self._check)
        else:
            self._ask_ttr(job)

    def _ask_ttr(self, job: Job) -> None:
        assert self.conn is not None
        self._asked = job
        self.conn.send(StatsJob(job.id), _Stats(self, job), self._address.command_timeout)

    def got_ttr(self, job: Job, stats: JobStats) -> None:
        """The held job's ``stats-job`` arrived: plan its touch or its expiry."""
        if job is not self.job or self.conn is None:
            return
        self._ttr = float(stats.ttr)
        loop = self.conn.loop
        if self._auto_touch:
            # Touch with a margin of half the TTR, at most a second: the server warns
            # (DEADLINE_SOON) one second before the end.
            delay = max(0.0, stats.time_left - min(1.0, self._ttr / 2))
            self._timer = loop.call_later(delay, self._touch, job)
        else:
            self._plan_expiry(job)

    def _plan_expiry(self, job: Job) -> None:
        # From the reserve (or last touch), not from time-left: the server reports whole
        # seconds, rounded down, and a job taken for lost up to a second early would be
        # refused to its handler and reserved over (DEADLINE_SOON) while still held.
        assert self.conn is not None
        loop = self.conn.loop
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, self._since + self._ttr + _EXPIRY_GRACE - loop.time())
        self._timer = loop.call_later(delay, self._expire, job)

    def _touch(self, job: Job) -> None:
        self._timer = None
        if job is not self.job or self.conn is None:
            return
        self.conn.send(Touch(job.id), _Touched(self, job), self._address.command_timeout)

    def touched(self, job: Job) -> None:
        """The held job was touched: plan the next touch."""
        if job is self.job and self.conn is not None:
            self._since = self.conn.loop.time()
            delay = max(0.1, self._ttr - min(1.0, self._ttr / 2))
            self._timer = self.conn.loop.call_later(delay, self._touch, job)

    def job_touched(self, job: Job) -> None:
        """``Holder``: the handler touched ``job``; its TTR starts again."""
        if job is not self.job or self.conn is None:
            return
        self._since = self.conn.loop.time()
        if not self._auto_touch and self._ttr:
            self._plan_expiry(job)  # (before the TTR is known, the first check plans it)

    def _expire(self, job: Job) -> None:
        self._timer = None
        if job is self.job:
            job._lost = "its TTR ran out before it was settled"
            if self.conn is not None:
                # The server may have missed the TTR on this idle connection (the
                # TTR-miss bug): a command not about the job makes it let the job go now,
                # even if nobody pulls again (reserve_iter). Bounded by command_timeout.
                self.conn.send(StatsJob(job.id), _STATE, self._address.command_timeout)
            self._release_credit()

    # -- closing ----------------------------------------------------------------------

    def _connection_closed(self, conn: Connection) -> None:
        if self.closed:
            return  # the lane closed it, or a failed reserve already reported it
        self.close()
        reason = conn.close_reason
        if not isinstance(reason, BeanstalkError):
            reason = ConnectionLostError(f"connection lost: {reason}")
        self._listener.lane_failed(self, reason)

    def close(self) -> None:
        """Close the connection: a waiting reserve ends, a held job goes back to ready."""
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._check_timer is not None:
            self._check_timer.cancel()
            self._check_timer = None
        if self.conn is not None:
            self.conn.close()


class _Stats:
    __slots__ = ("job", "lane")

    def __init__(self, lane: Lane, job: Job) -> None:
        self.lane = lane
        self.job = job

    def resolve(self, stats: JobStats) -> None:
        self.lane.got_ttr(self.job, stats)

    def reject(self, error: BaseException) -> None:
        pass  # a lost connection is reported by the reserve; a NOT_FOUND means settled


class _Touched(_Stats):
    __slots__ = ()

    def resolve(self, value: Any) -> None:
        self.lane.touched(self.job)

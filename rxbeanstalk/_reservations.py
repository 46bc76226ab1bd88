"""The reserving connections behind ``Client.reserve`` and ``Client.reserve_job``.

A reserve runs on a connection of its own, so a waiting reserve never holds up a ``put``
or ``stats`` on the command connection, and no ``delete`` ever queues behind a waiting
reserve. A connection that holds a reserved job takes no new reserve until that job is
settled (else the job's ``delete`` would wait behind it); then it goes back to a small
idle pool. Cancelling a reserve closes its connection: the server stops waiting at once,
and returns the job if one was already on its way.

A reserve without a timeout goes out as ``reserve-with-timeout`` in a loop (each
``TIMED_OUT`` sends the next one), so a silent or half-open server fails it within
``RESERVE_WAIT`` plus ``command_timeout`` instead of hanging it for ever. A held job's
TTR is policed here as in a lane: the server can miss it on an idle connection, so once
it has passed without a settle the job is marked lost and its connection closed, which
hands the job back at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ._channel import Address, Channel
from ._connection import Connection
from ._job import Job
from ._lane import _EXPIRY_GRACE, _FIRST_CHECK
from ._observable import Emitter
from .errors import TimedOutError
from .protocol import Command, JobData, JobStats, StatsJob


class ReservingChannel(Channel):
    """A channel that reserves, and the count of jobs it holds (a ``Job`` holder)."""

    def __init__(self, address: Address, pool: Reservations) -> None:
        super().__init__(address)
        self.pool = pool
        self.held = 0
        self.busy = False
        # The TTR watchdog of the job held here (one at most: a holding channel is never
        # lent out): when its TTR last started, the TTR once known, the next check.
        self._job: Job | None = None
        self._since = 0.0
        self._ttr = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, job: Job) -> None:
        """``job`` was just reserved here: look at its TTR in a second."""
        loop = asyncio.get_running_loop()
        self._job = job
        self._since = loop.time()
        self._ttr = 0.0
        self._plan(loop, _FIRST_CHECK, self._check)

    def _plan(
        self, loop: asyncio.AbstractEventLoop, delay: float, then: Callable[[], None]
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(delay, then)

    def _check(self) -> None:
        self._timer = None
        job = self._job
        if job is not None and job.reserved and job._connection is not None:
            timeout = self.address.command_timeout
            job._connection.send(StatsJob(job.id), _TtrSink(self, job), timeout)

    def got_ttr(self, job: Job, ttr: int) -> None:
        """The held job's TTR arrived: plan its expiry."""
        if job is self._job and job.reserved:
            self._ttr = float(ttr)
            self._plan_expiry()

    def _plan_expiry(self) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._since + self._ttr + _EXPIRY_GRACE - loop.time())
        self._plan(loop, delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        job = self._job
        if job is not None and job.reserved:
            job._lost = "its TTR ran out before it was settled"
            self.pool.discard(self)  # closing hands the job back, whatever the server missed

    def _forget(self) -> None:
        self._job = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def job_settling(self, job: Job) -> None:
        pass  # its reply decides: the channel is free once the server has settled it

    def job_settled(self, job: Job) -> None:
        if job is self._job:
            self._forget()
        if job._connection is not None:
            self.pool.settled(self, job._connection)

    def job_touched(self, job: Job) -> None:
        """The held job was touched: its TTR starts again now."""
        if job is self._job:
            self._since = asyncio.get_running_loop().time()
            if self._ttr:
                self._plan_expiry()

    def close(self) -> None:
        """Close for good (see ``Channel.close``); the watchdog stops."""
        self._forget()
        super().close()


class _TtrSink:
    __slots__ = ("channel", "job")

    def __init__(self, channel: ReservingChannel, job: Job) -> None:
        self.channel = channel
        self.job = job

    def resolve(self, stats: JobStats) -> None:
        self.channel.got_ttr(self.job, stats.ttr)

    def reject(self, error: BaseException) -> None:
        pass  # a lost connection lost the job too; NOT_FOUND: it was settled meanwhile


MakeJob = Callable[[JobData, Connection, ReservingChannel], Any]


class _ReserveSink:
    __slots__ = ("again", "channel", "emitter", "make_job", "pool")

    def __init__(
        self, pool: Reservations, channel: ReservingChannel, emitter: Emitter, make_job: MakeJob
    ) -> None:
        self.pool = pool
        self.channel = channel
        self.emitter = emitter
        self.make_job = make_job
        # For a reserve without a timeout: sends the next reserve-with-timeout.
        self.again: Callable[[], None] | None = None

    def resolve(self, value: JobData) -> None:
        channel = self.channel
        channel.busy = False
        conn = channel.connection
        if self.emitter.done or conn is None or conn.closed:
            # Nobody wants the job: closing the connection hands it back to the server
            # with its priority intact (a release would need that priority first).
            self.pool.discard(channel)
            return
        channel.held += 1
        self.emitter.on_cancel = None
        job = self.make_job(value, conn, channel)
        channel.hold(job)
        self.emitter.resolve(job)

    def reject(self, error: BaseException) -> None:
        if self.again is not None and isinstance(error, TimedOutError) and not self.emitter.done:
            self.again()  # a reserve without a timeout waits on: the channel stays busy
            return
        self.channel.busy = False
        self.emitter.on_cancel = None
        self.pool.idle(self.channel)
        self.emitter.reject(error)

    def cancel(self) -> None:
        if self.channel.busy:
            self.pool.discard(self.channel)


class Reservations:
    """A pool of reserving channels.

    Args:
        address: Server address and timeouts.
        max_idle: How many idle reserving connections to keep open for the next reserve.
    """

    def __init__(self, address: Address, *, max_idle: int = 2) -> None:
        self.address = address
        self.max_idle = max_idle
        self._idle: list[ReservingChannel] = []
        self._all: set[ReservingChannel] = set()

    @property
    def channels(self) -> int:
        """How many reserving channels exist (idle, waiting, or holding jobs)."""
        return len(self._all)

    def reserve(
        self,
        command: Command[JobData],
        emitter: Emitter,
        *,
        timeout: float | None,
        watch: tuple[str, ...],
        make_job: MakeJob,
        repeat: bool = False,
    ) -> None:
        """Send a reserve-type command on a free reserving channel.

        Args:
            command: ``Reserve``, ``ReserveWithTimeout`` or ``ReserveJob``.
            emitter: Receives the job (made by ``make_job``) or the error.
            timeout: The command's deadline (``None`` for a blocking reserve).
            watch: The watch list the connection must have.
            make_job: Builds the ``Job`` handed to the emitter.
            repeat: Send ``command`` again after each ``TIMED_OUT`` (a reserve without a
                timeout, made of ``reserve-with-timeout`` commands that each have a
                deadline).
        """
        channel = self._take()
        channel.busy = True
        sink = _ReserveSink(self, channel, emitter, make_job)
        emitter.on_cancel = sink.cancel
        if repeat:

            def again() -> None:
                channel.send(command, sink, timeout=timeout, watch=watch)

            sink.again = again
        channel.send(command, sink, timeout=timeout, watch=watch)

    def _take(self) -> ReservingChannel:
        while self._idle:
            channel = self._idle.pop()
            if not channel.closed:
                return channel
        channel = ReservingChannel(self.address, self)
        self._all.add(channel)
        return channel

    def settled(self, channel: ReservingChannel, conn: Connection) -> None:
        """One job held on ``conn`` (of ``channel``) is no longer held."""
        if channel.connection is not conn or conn.closed:
            return  # that connection is gone, and with it everything it held
        channel.held -= 1
        self.idle(channel)

    def idle(self, channel: ReservingChannel) -> None:
        """Return ``channel`` to the idle pool if it is free, or close it if the pool is full."""
        conn = channel.connection
        if conn is not None and conn.closed:
            # Its jobs went back to the server with the connection; start afresh.
            channel.held = 0
        if channel.busy or channel.held or channel.closed or channel in self._idle:
            return
        if len(self._idle) < self.max_idle:
            self._idle.append(channel)
        else:
            self.discard(channel)

    def discard(self, channel: ReservingChannel) -> None:
        """Close ``channel`` for good (its jobs go back to the server)."""
        channel.close()
        self._all.discard(channel)
        if channel in self._idle:
            self._idle.remove(channel)

    def close(self) -> None:
        """Close every reserving channel."""
        for channel in list(self._all):
            channel.close()
        self._all.clear()
        self._idle.clear()

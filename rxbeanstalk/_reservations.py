"""The reserving connections behind ``Client.reserve`` and ``Client.reserve_job``.

A reserve runs on a connection of its own, so a waiting reserve never holds up a ``put``
or ``stats`` on the command connection, and no ``delete`` ever queues behind a waiting
reserve. A connection that holds a reserved job takes no new reserve until that job is
settled (else the job's ``delete`` would wait behind it); then it goes back to a small
idle pool. Cancelling a reserve closes its connection: the server stops waiting at once,
and returns the job if one was already on its way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._channel import Address, Channel
from ._connection import Connection
from ._job import Job
from ._observable import Emitter
from .protocol import Command, JobData


class ReservingChannel(Channel):
    """A channel that reserves, and the count of jobs it holds (a ``Job`` holder)."""

    def __init__(self, address: Address, pool: Reservations) -> None:
        super().__init__(address)
        self.pool = pool
        self.held = 0
        self.busy = False

    def job_settling(self, job: Job) -> None:
        pass  # its reply decides: the channel is free once the server has settled it

    def job_settled(self, job: Job) -> None:
        if job._connection is not None:
            self.pool.settled(self, job._connection)


MakeJob = Callable[[JobData, Connection, ReservingChannel], Any]


class _ReserveSink:
    __slots__ = ("channel", "emitter", "make_job", "pool")

    def __init__(
        self, pool: Reservations, channel: ReservingChannel, emitter: Emitter, make_job: MakeJob
    ) -> None:
        self.pool = pool
        self.channel = channel
        self.emitter = emitter
        self.make_job = make_job

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
        self.emitter.resolve(self.make_job(value, conn, channel))

    def reject(self, error: BaseException) -> None:
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
    ) -> None:
        """Send a reserve-type command on a free reserving channel.

        Args:
            command: ``Reserve``, ``ReserveWithTimeout`` or ``ReserveJob``.
            emitter: Receives the job (made by ``make_job``) or the error.
            timeout: The command's deadline (``None`` for a blocking reserve).
            watch: The watch list the connection must have.
            make_job: Builds the ``Job`` handed to the emitter.
        """
        channel = self._take()
        channel.busy = True
        sink = _ReserveSink(self, channel, emitter, make_job)
        emitter.on_cancel = sink.cancel
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

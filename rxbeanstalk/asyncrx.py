"""rxbeanstalk for aioreactive: every command as a cold ``AsyncObservable``.

Needs the extra: ``pip install 'rxbeanstalk[asyncrx]'`` (aioreactive 0.20, which pins
``reactivex<5``).

    >>> import aioreactive
    >>> from rxbeanstalk.asyncrx import AsyncClient
    >>> async def main() -> None:  # doctest: +SKIP
    ...     async with AsyncClient("127.0.0.1", 11300) as client:
    ...         job_id = await aioreactive.run(client.put(b"hello"), timeout=5)
    ...
    ...         async def handle(job):
    ...             await job.delete()  # settle: the lane may reserve again
    ...
    ...         jobs = client.reserve_stream(max_in_flight=4)
    ...         subscription = await jobs.subscribe_async(handle)
    ...         ...
    ...         await subscription.dispose_async()

Each command method sends nothing until subscribed; each subscription sends the command
once, then passes the value to ``asend`` and calls ``aclose``, or passes the typed
error (``rxbeanstalk.errors``) to ``athrow``. Invalid arguments raise
``InvalidArgumentError`` when the method is called. Disposing a subscription before
the reply abandons interest; a reserve that is still waiting closes its connection, so
no job is lost.

``reserve_stream`` paces the server by the awaited ``asend``: a lane reserves again only
after ``asend(job)`` returned and the job was settled. ``asend`` calls never overlap, so
to work on several jobs at once, start a task in ``asend`` and settle the job there.
(aioreactive operators such as ``map_async`` or ``take`` queue values in a mailbox and
return from ``asend`` at once; then settling alone paces the lanes, so at most
``max_in_flight`` jobs are still reserved and unsettled at any time.)

aioreactive 0.20 pitfalls: ``aioreactive.run`` gives up after 2 s unless given a
``timeout``; ``AsyncAnonymousObserver`` takes only coroutine functions; its ``catch``,
``retry`` and ``to_observable`` are broken (this module uses none of them).
"""

from __future__ import annotations

try:
    import aioreactive  # noqa: F401
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "rxbeanstalk.asyncrx needs aioreactive: pip install 'rxbeanstalk[asyncrx]'"
    ) from missing

from collections.abc import Awaitable, Generator, Iterable, Sequence
from types import TracebackType
from typing import Any

from aioreactive import AsyncObservable

from ._asyncrx_command import CommandSource
from ._asyncrx_stream import AsyncReserveStream, StreamSession
from ._client import Client, JobRef
from ._job import Job
from ._stats_stream import StatsSnapshot
from .protocol import (
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    MAX_BODY,
    JobStats,
    Reply,
    ServerStats,
    TubeStats,
)

__all__ = ["AsyncClient", "AsyncReserveStream"]


class _Closed:
    """What ``AsyncClient.close`` returns: already done, but may be awaited."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that finishes at once


class AsyncClient:
    """A beanstalkd client whose every command is a cold aioreactive ``AsyncObservable``.

    It wraps a ``Client`` (``.client``) and takes the same arguments. Construction does
    no I/O; the first subscription connects, and binds the client to the running loop.

    Args:
        host: Server host.
        port: Server port.
        unix_path: Path of the server's unix socket (instead of host and port).
        use: The tube ``put`` uses when given none.
        watch: The tubes ``reserve`` takes jobs from.
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds of silence after which a command fails with
            ``CommandTimeoutError``.
        max_body_size: Largest reply body accepted.

    Raises:
        InvalidArgumentError: a bad tube name, port or timeout.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11300,
        *,
        unix_path: str | None = None,
        use: str = DEFAULT_TUBE,
        watch: Sequence[str] = (DEFAULT_TUBE,),
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        max_body_size: int = MAX_BODY,
    ) -> None:
        self._client = Client(
            host,
            port,
            unix_path=unix_path,
            use=use,
            watch=watch,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            max_body_size=max_body_size,
        )
        self._sessions: set[StreamSession] = set()

    def __repr__(self) -> str:
        return f"<rxbeanstalk.asyncrx.AsyncClient {self._client.address}>"

    # -- lifecycle --------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The ``Client`` inside (its commands are awaitable reactivex Observables)."""
        return self._client

    @property
    def address(self) -> str:
        """``host:port`` or the unix socket path."""
        return self._client.address

    @property
    def used(self) -> str:
        """The tube ``put`` uses when given none."""
        return self._client.used

    @property
    def watched(self) -> tuple[str, ...]:
        """The tubes reserves take jobs from."""
        return self._client.watched

    def close(self) -> Awaitable[None]:
        """Close every connection; reserved jobs go back to the server.

        Running ``reserve_stream`` subscriptions close their lanes and end with
        ``aclose``. Safe to call twice. It is done when it returns; the result may be
        awaited too (``await client.close()``).

        Returns:
            An awaitable that is already done.
        """
        sessions = list(self._sessions)
        self._sessions.clear()
        for session in sessions:
            session.shut()
        self._client.close()
        return _Closed()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- producer ---------------------------------------------------------------------

    def put(
        self,
        body: bytes | str,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
        tube: str | None = None,
    ) -> AsyncObservable[int]:
        """Put a job (cold; emits the new job's id).

        Args:
            body: The job body; a ``str`` is encoded as UTF-8.
            priority: 0 (most urgent) to ``2**32-1``.
            delay: Seconds before the job is ready.
            ttr: Seconds a worker may hold the job.
            tube: The tube to put into; ``None`` for the client's used tube.

        Raises:
            InvalidArgumentError: a bad body type, number or tube name (at call time).
        """
        return CommandSource(
            self._client.put(body, priority=priority, delay=delay, ttr=ttr, tube=tube)
        )

    def put_many(
        self,
        bodies: Iterable[bytes | str],
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
        tube: str | None = None,
    ) -> AsyncObservable[int]:
        """Put many jobs, pipelined in bounded batches (cold; emits each id in order).

        The first error ends the sequence (``athrow``); no later body is sent.

        Raises:
            InvalidArgumentError: any bad body or argument (at call time, nothing sent).
        """
        return CommandSource(
            self._client.put_many(bodies, priority=priority, delay=delay, ttr=ttr, tube=tube)
        )

    def use(self, tube: str) -> AsyncObservable[str]:
        """Use ``tube`` for later puts, peeks and kicks (cold; emits the tube).

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return CommandSource(self._client.use(tube))

    # -- consumer ---------------------------------------------------------------------

    def reserve(self, timeout: float | None = None) -> AsyncObservable[Job]:
        """Reserve a job from the watched tubes (cold; emits a ``Job``).

        Disposing the subscription while it waits closes its reserving connection, so a
        job on its way goes back to the server.

        Args:
            timeout: Seconds to wait (rounded up); ``None`` waits for ever; ``0`` takes
                only a job that is ready now (``TimedOutError`` otherwise).

        Raises:
            InvalidArgumentError: a negative or too large timeout (at call time).
        """
        return CommandSource(self._client.reserve(timeout))

    def reserve_job(self, job_id: int) -> AsyncObservable[Job]:
        """Reserve the job with this id, whatever its state (cold; emits a ``Job``).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return CommandSource(self._client.reserve_job(job_id))

    def watch(self, tube: str) -> AsyncObservable[int]:
        """Add ``tube`` to the watch list (cold; emits the number of watched tubes).

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return CommandSource(self._client.watch(tube))

    def ignore(self, tube: str) -> AsyncObservable[int]:
        """Remove ``tube`` from the watch list (cold; ``NotIgnoredError`` for the last).

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return CommandSource(self._client.ignore(tube))

    # -- settling ---------------------------------------------------------------------

    def delete(self, job: JobRef) -> AsyncObservable[int]:
        """Delete a job (cold; emits its id); a reserved ``Job`` on its own connection.

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return CommandSource(self._client.delete(job))

    def release(
        self, job: JobRef, *, priority: int | None = None, delay: int = 0
    ) -> AsyncObservable[int]:
        """Release a reserved job back to ready, or delayed (cold; emits its id).

        Args:
            job: The job or its id.
            priority: The new priority; ``None`` keeps the job's own.
            delay: Seconds before it is ready again.

        Raises:
            InvalidArgumentError: a bad id, priority or delay (at call time).
        """
        return CommandSource(self._client.release(job, priority=priority, delay=delay))

    def bury(self, job: JobRef, *, priority: int | None = None) -> AsyncObservable[int]:
        """Bury a reserved job (cold; emits its id); ``priority=None`` keeps its own.

        Raises:
            InvalidArgumentError: a bad id or priority (at call time).
        """
        return CommandSource(self._client.bury(job, priority=priority))

    def touch(self, job: JobRef) -> AsyncObservable[int]:
        """Restart a reserved job's TTR (cold; emits its id).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return CommandSource(self._client.touch(job))

    def kick_job(self, job: JobRef) -> AsyncObservable[int]:
        """Kick one buried or delayed job (cold; emits its id).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return CommandSource(self._client.kick_job(job))

    # -- streams ----------------------------------------------------------------------

    def reserve_stream(
        self,
        tubes: Sequence[str] | None = None,
        *,
        max_in_flight: int = 1,
        drain_timeout: float = 5.0,
        auto_touch: bool = False,
    ) -> AsyncReserveStream:
        """A stream of reserved jobs, paced by the observer's awaited ``asend``.

        Each subscription opens ``max_in_flight`` lanes of its own (one connection each).
        A lane reserves a job, the job goes to ``asend`` (one call at a time, never
        overlapping), and the lane reserves again only after that ``asend`` returned
        and the job was settled (deleted, released, buried) or lost. Disposing the
        subscription stops the lanes: waiting lanes close at once, delivered jobs get
        ``drain_timeout`` seconds to be settled, then the server takes back what is
        left. A connection failure closes the lanes and goes to ``athrow``; an
        exception raised by ``asend`` does the same.

        Args:
            tubes: The tubes to reserve from; ``None`` for the client's watch list at the
                time a subscription starts.
            max_in_flight: How many jobs a subscription may hold reserved and unsettled.
            drain_timeout: Seconds delivered jobs get to be settled after disposal.
            auto_touch: Touch each unsettled job shortly before its TTR runs out.

        Raises:
            InvalidArgumentError: bad tube names, credit or timeout (at call time).
        """
        checked = self._client.reserve_stream(
            tubes, max_in_flight=max_in_flight, drain_timeout=drain_timeout, auto_touch=auto_touch
        )
        return AsyncReserveStream(
            self._client,
            checked.address,
            checked.tubes,
            max_in_flight=checked.max_in_flight,
            drain_timeout=checked.drain_timeout,
            auto_touch=checked.auto_touch,
            sessions=self._sessions,
        )

    # -- inspection -------------------------------------------------------------------

    def peek(self, job_id: int) -> AsyncObservable[Job]:
        """The job with this id, in any state (cold; emits a ``Job``; ``NotFoundError``).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return CommandSource(self._client.peek(job_id))

    def peek_ready(self) -> AsyncObservable[Job]:
        """The next ready job in the used tube (cold; ``NotFoundError`` if none)."""
        return CommandSource(self._client.peek_ready())

    def peek_delayed(self) -> AsyncObservable[Job]:
        """The delayed job in the used tube with the least delay left (cold)."""
        return CommandSource(self._client.peek_delayed())

    def peek_buried(self) -> AsyncObservable[Job]:
        """The oldest buried job in the used tube (cold)."""
        return CommandSource(self._client.peek_buried())

    def kick(self, bound: int) -> AsyncObservable[int]:
        """Kick up to ``bound`` buried (or else delayed) jobs of the used tube (cold).

        Raises:
            InvalidArgumentError: a bad bound (at call time).
        """
        return CommandSource(self._client.kick(bound))

    def stats(self) -> AsyncObservable[ServerStats]:
        """Server statistics (cold; emits ``ServerStats``)."""
        return CommandSource(self._client.stats())

    def stats_tube(self, tube: str) -> AsyncObservable[TubeStats]:
        """Statistics of one tube (cold; emits ``TubeStats``; ``NotFoundError``).

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return CommandSource(self._client.stats_tube(tube))

    def stats_job(self, job: JobRef) -> AsyncObservable[JobStats]:
        """Statistics of one job (cold; emits ``JobStats``; ``NotFoundError``).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return CommandSource(self._client.stats_job(job))

    def stats_stream(
        self, interval: float = 1.0, tubes: Sequence[str] | None = None
    ) -> AsyncObservable[StatsSnapshot]:
        """Periodic ``StatsSnapshot`` values of the server and its tubes (cold, endless).

        The same stream as ``Client.stats_stream``: a first snapshot at once, then one
        every ``interval`` seconds from a timer on the client's loop; it never
        calls ``aclose`` (so ``aioreactive.run`` on it waits until its timeout: take what
        you need). A failed round passes the typed error to ``athrow`` and stops the timer;
        disposing the subscription stops it too. Snapshots that arrive while ``asend`` is still
        busy with an earlier one wait their turn, so keep ``asend`` shorter than the
        interval.

        Args:
            interval: Seconds between snapshots (> 0).
            tubes: The tubes to include; ``None`` for every tube on the server; empty
                for the server's stats only.

        Raises:
            InvalidArgumentError: a bad interval or tube name (at call time).
        """
        return CommandSource(self._client.stats_stream(interval, tubes))

    def list_tubes(self) -> AsyncObservable[list[str]]:
        """Every tube on the server (cold)."""
        return CommandSource(self._client.list_tubes())

    def list_tubes_watched(self) -> AsyncObservable[list[str]]:
        """The client's watch list as the server has it (cold)."""
        return CommandSource(self._client.list_tubes_watched())

    def list_tube_used(self) -> AsyncObservable[str]:
        """The client's used tube as the server has it (cold)."""
        return CommandSource(self._client.list_tube_used())

    def pause_tube(self, tube: str, delay: int) -> AsyncObservable[str]:
        """Pause reserves from ``tube`` for ``delay`` seconds (cold; emits the tube).

        Raises:
            InvalidArgumentError: a bad tube name or delay (at call time).
        """
        return CommandSource(self._client.pause_tube(tube, delay))

    def quit(self) -> AsyncObservable[None]:
        """Send ``quit`` on the command connection (cold; emits ``None``)."""
        return CommandSource(self._client.quit())

    def command(
        self, name: str, *args: str | int, body: bytes | str | None = None
    ) -> AsyncObservable[Reply]:
        """Send any command line on the command connection (cold; emits the ``Reply``).

        Raises:
            InvalidArgumentError: a word with spaces, CR, LF or NUL, a line over 224
                bytes, or a reserve/quit command (at call time).
        """
        return CommandSource(self._client.command(name, *args, body=body))

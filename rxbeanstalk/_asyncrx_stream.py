"""``AsyncClient.reserve_stream``: jobs for an async observer, paced by its ``asend``.

Each subscription runs a ``StreamSession``: its own ``max_in_flight`` lanes (see
``_lane``; aioreactive has no safe multicast, so nothing is shared). A lane reserves a
job, the session hands it to the observer with an awaited ``asend``, and the lane reserves
again only once that ``asend`` returned *and* the job was settled (or its reservation was
lost). ``asend`` calls never overlap: jobs wait their turn in a queue that holds at most
one job per lane, so nothing grows with the length of the server's queue.

Disposing the subscription: lanes stop reserving, lanes waiting in a reserve and lanes
whose job was not yet delivered close at once (the server puts that job back), lanes
holding a delivered job wait up to ``drain_timeout`` for it to be settled, then every
connection still open closes. A connection failure closes every lane and ends the
subscription with ``athrow``; so does an exception raised by ``asend``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, MutableSet
from typing import TYPE_CHECKING, Any

from aioreactive import AsyncDisposable, AsyncObservable

from ._asyncrx_command import observer_of, report
from ._job import Job
from ._lane import Lane
from ._lane_set import LaneSet
from .errors import LoopBindingError

if TYPE_CHECKING:
    from ._channel import Address
    from ._client import Client


class StreamSession(LaneSet, AsyncDisposable):  # type: ignore[misc,unused-ignore]
    """One subscription of an ``AsyncReserveStream``: its lanes and its deliveries.

    Args:
        stream: The stream subscribed to.
        observer: The ``AsyncObserver`` that gets the jobs.
    """

    def __init__(self, stream: AsyncReserveStream, observer: Any) -> None:
        client = stream.client
        super().__init__(
            client,
            stream.address,
            stream.tubes if stream.tubes is not None else client.watched,
            drain_timeout=stream.drain_timeout,
            auto_touch=stream.auto_touch,
        )
        self._stream = stream
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        # Jobs reserved and not yet handed to the observer (at most one per lane).
        self._queue: deque[tuple[Lane, Job]] = deque()
        # Lanes whose job was reserved and whose asend has not returned yet.
        self._unacked: set[Lane] = set()
        # Of those, the lanes whose job was already settled or lost.
        self._freed: set[Lane] = set()
        # The end to deliver: an error for athrow, or None for aclose.
        self._end: tuple[BaseException | None] | None = None
        self._disposed = False
        self._wake = asyncio.Event()
        self._delivering: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Open the lanes and start reserving (in the background)."""
        stream = self._stream
        self._delivering = self._loop.create_task(self._deliver())
        binding = self.client._binding
        try:
            binding.bind()
            if not binding.on_loop_thread():
                raise LoopBindingError(
                    "this client is bound to its own event loop thread; an AsyncClient "
                    "must be used on the event loop it was first used on"
                )
        except LoopBindingError as error:
            self.running = False
            self.finished = True
            self._end = (error,)
            return
        stream.sessions.add(self)
        self.grow(stream.max_in_flight)

    async def dispose_async(self) -> None:
        """Stop: no more jobs reach the observer; delivered jobs get ``drain_timeout``.

        Lanes stop reserving; waiting lanes, and lanes whose job was not delivered yet,
        close at once; lanes holding a delivered job close once it is settled, or when
        ``drain_timeout`` runs out (the server then puts the job back). Returns at once:
        the observer may still settle its jobs while they drain.
        """
        if self._disposed:
            return
        self._disposed = True
        self.stop()
        self._wake.set()

    def stop(self) -> None:
        """Stop reserving and drain (see ``dispose_async``)."""
        if not self.running:
            return
        queue = self._queue
        while queue:
            lane, _ = queue.popleft()
            lane.close()  # never delivered: the server takes it back now
        super().stop()

    def fail(self, error: BaseException) -> None:
        """Close every lane (their jobs go back to the server), then ``athrow`` ``error``.

        Args:
            error: The error the observer gets.
        """
        self._end_with(error)

    def shut(self) -> None:
        """The client closes: close every lane, then ``aclose`` the observer."""
        self._end_with(None)

    def _end_with(self, error: BaseException | None) -> None:
        if not self.running:
            self.close_all()  # already stopping or ended: no more notifications
            return
        self._queue.clear()
        self.abort()
        self._end = (error,)
        self._wake.set()

    def released(self) -> None:
        if self.finished:
            self._stream.sessions.discard(self)

    # -- delivery ---------------------------------------------------------------------

    async def _deliver(self) -> None:
        observer = self._observer
        queue = self._queue
        try:
            while not self._disposed:
                if self._end is not None:
                    (error,) = self._end
                    try:
                        if error is None:
                            await observer.aclose()
                        else:
                            await observer.athrow(error)
                    except Exception as raised:
                        report(self._loop, "exception in athrow/aclose", raised)
                    return
                if not queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                lane, job = queue.popleft()
                if not job.reserved:
                    # Lost while it waited its turn (TTR, connection): the server has it.
                    self._acked(lane)
                    continue
                try:
                    await observer.asend(job)
                except Exception as error:
                    # The consumer broke: its jobs go back and the stream ends with it.
                    self._acked(lane)
                    self.fail(error)
                    continue
                self._acked(lane)
        except asyncio.CancelledError:
            # The loop is shutting down (or someone cancelled us): close everything.
            self._disposed = True
            self._queue.clear()
            self.abort()
            raise

    def _acked(self, lane: Lane) -> None:
        """``asend`` of the lane's job returned."""
        self._unacked.discard(lane)
        if self.running:
            if lane in self._freed:
                self._freed.discard(lane)
                lane.reserve()
        else:
            self._freed.discard(lane)
            self.lane_idle(lane)

    # -- LaneListener -----------------------------------------------------------------

    def deliver(self, lane: Lane, job: Job) -> None:
        """The lane reserved ``job``: queue it for the observer."""
        self._unacked.add(lane)
        self._queue.append((lane, job))
        self._wake.set()

    def lane_free(self, lane: Lane) -> None:
        """The lane's job was settled or lost: reserve again once its asend returned."""
        if self.running and lane in self._unacked:
            self._freed.add(lane)
        else:
            super().lane_free(lane)


class AsyncReserveStream(AsyncObservable[Job]):  # type: ignore[misc,unused-ignore]
    """The ``AsyncObservable[Job]`` that ``AsyncClient.reserve_stream`` returns.

    Every subscription gets lanes of its own. It never completes by itself: it ends
    with ``athrow`` on a connection failure, or ``aclose`` when the client is closed.

    Args:
        client: The client the jobs belong to.
        address: Server address and timeouts.
        tubes: The tubes to reserve from; ``None`` for the client's watch list when a
            subscription starts.
        max_in_flight: Lanes per subscription, so jobs reserved and unsettled at most.
        drain_timeout: Seconds delivered jobs get to be settled after disposal.
        auto_touch: Touch each unsettled job before its TTR runs out.
        sessions: Where running subscriptions register, so the client can end them.
    """

    def __init__(
        self,
        client: Client,
        address: Address,
        tubes: tuple[str, ...] | None,
        *,
        max_in_flight: int,
        drain_timeout: float,
        auto_touch: bool,
        sessions: MutableSet[StreamSession],
    ) -> None:
        self.client = client
        self.address = address
        self.tubes = tubes
        self.max_in_flight = max_in_flight
        self.drain_timeout = drain_timeout
        self.auto_touch = auto_touch
        self.sessions = sessions

    def __repr__(self) -> str:
        return (
            f"<rxbeanstalk.asyncrx reserve_stream tubes={self.tubes} "
            f"max_in_flight={self.max_in_flight}>"
        )

    async def subscribe_async(
        self,
        send: Any = None,
        throw: Callable[[Exception], Awaitable[None]] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Start lanes of this subscription's own and deliver their jobs.

        Args:
            send: An ``AsyncObserver``, or a coroutine function for each job.
            throw: A coroutine function for the error (with a function ``send``).
            close: A coroutine function for the end (with a function ``send``).

        Returns:
            A ``StreamSession`` (an ``AsyncDisposable``): disposing it stops the lanes and
            drains them.
        """
        session = StreamSession(self, observer_of(send, throw, close))
        session.start()
        return session

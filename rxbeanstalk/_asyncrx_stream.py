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
from .errors import LoopBindingError

if TYPE_CHECKING:
    from ._channel import Address
    from ._client import Client


class StreamSession(AsyncDisposable):  # type: ignore[misc,unused-ignore]
    """One subscription of an ``AsyncReserveStream``: its lanes and its deliveries.

    Args:
        stream: The stream subscribed to.
        observer: The ``AsyncObserver`` that gets the jobs.
    """

    def __init__(self, stream: AsyncReserveStream, observer: Any) -> None:
        self._stream = stream
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        self.lanes: list[Lane] = []
        self.running = True
        self.finished = False
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
        self._opening: asyncio.Task[None] | None = None
        self._delivering: asyncio.Task[None] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Open the lanes and start reserving (in the background)."""
        stream = self._stream
        client = stream.client
        self._delivering = self._loop.create_task(self._deliver())
        binding = client._binding
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
        watch = stream.tubes if stream.tubes is not None else client.watched
        self.lanes = [
            Lane(client, stream.address, watch, self, auto_touch=stream.auto_touch)
            for _ in range(stream.max_in_flight)
        ]
        self._opening = self._loop.create_task(self._open())

    async def _open(self) -> None:
        try:
            await asyncio.gather(*(lane.open() for lane in self.lanes))
        except Exception as error:
            self._opening = None
            self.fail(error)
            return
        self._opening = None
        for lane in self.lanes:
            if self.running:
                lane.reserve()

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
        self.running = False
        if self._opening is not None:
            self._opening.cancel()
        queue = self._queue
        while queue:
            lane, _ = queue.popleft()
            lane.close()  # never delivered: the server takes it back now
        for lane in self.lanes:
            if lane.quiet:
                lane.close()
        if self._all_closed():
            self._finish()
            return
        self._drain_timer = self._loop.call_later(self._stream.drain_timeout, self._close_all)

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
            self._close_all()  # already stopping or ended: no more notifications
            return
        self.running = False
        if self._opening is not None:
            self._opening.cancel()
        self._queue.clear()
        self._close_all()
        self._end = (error,)
        self._wake.set()

    def _close_all(self) -> None:
        for lane in self.lanes:
            lane.close()
        self._finish()

    def _all_closed(self) -> bool:
        return all(lane.closed for lane in self.lanes)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._stream.sessions.discard(self)
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    def _maybe_done(self) -> None:
        if self._all_closed():
            self._finish()

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
            self.running = False
            self._queue.clear()
            self._close_all()
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

    def lane_job(self, lane: Lane, job: Job) -> None:
        """The lane reserved ``job``: queue it for the observer."""
        if not self.running:
            lane.close()  # reserved while stopping: the server takes it back
            self._maybe_done()
            return
        self._unacked.add(lane)
        self._queue.append((lane, job))
        self._wake.set()

    def lane_free(self, lane: Lane) -> None:
        """The lane's job was settled or lost: reserve again once its asend returned."""
        if not self.running:
            self.lane_idle(lane)
        elif lane in self._unacked:
            self._freed.add(lane)
        else:
            lane.reserve()

    def lane_idle(self, lane: Lane) -> None:
        """Nothing is in flight on the lane: when stopping, close it."""
        if not self.running and lane.quiet:
            lane.close()
            self._maybe_done()

    def lane_failed(self, lane: Lane, error: BaseException) -> None:
        """The lane's connection failed: end the stream with the error."""
        if self.running:
            self.fail(error)
        else:
            self._maybe_done()


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

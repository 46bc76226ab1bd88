"""``reserve_stream``: a hot, ref-counted stream of jobs with credit backpressure.

All current subscribers share one session: a set of lanes (see ``_lane``), started when
the subscriber count goes from 0 to 1 and stopped when it drops back to 0. Each session
is new: reactivex's ``share()`` keeps its dead subject after an error, which would make
``retry`` fail at once, so a session detaches from the stream before it reports an error
or finishes, and the next subscription starts a fresh one with fresh lanes.

Stopping (the last subscriber left): lanes stop reserving, lanes waiting in a reserve
close at once, lanes holding a delivered job wait up to ``drain_timeout`` for it to be
settled, then every connection still open closes and the server puts its job back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import reactivex
from reactivex import abc

from ._job import Job
from ._lane import Lane
from ._loop import LoopBinding
from .errors import BeanstalkError

if TYPE_CHECKING:
    from ._channel import Address
    from ._client import Client


class _Subscriber:
    __slots__ = ("active", "on_completed", "on_error", "on_next")

    def __init__(
        self,
        on_next: Callable[[Job], None],
        on_error: Callable[[Exception], None],
        on_completed: Callable[[], None],
    ) -> None:
        self.on_next = on_next
        self.on_error = on_error
        self.on_completed = on_completed
        self.active = True


class _Session:
    """One run of a stream's lanes, from its first subscriber to its end."""

    def __init__(self, stream: ReserveStream, watch: tuple[str, ...]) -> None:
        self.stream = stream
        self.watch = watch
        self.subscribers: list[_Subscriber] = []
        self.lanes: list[Lane] = []
        self.running = True
        self.finished = False
        self._opening: asyncio.Task[None] | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        stream = self.stream
        self.lanes = [
            Lane(stream.client, stream.address, self.watch, self, auto_touch=stream.auto_touch)
            for _ in range(stream.max_in_flight)
        ]
        self._opening = asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        try:
            await asyncio.gather(*(lane.open() for lane in self.lanes))
        except BeanstalkError as error:
            self.fail(error)
            return
        finally:
            self._opening = None
        for lane in self.lanes:
            if self.running:
                lane.reserve()

    def stop(self) -> None:
        """The last subscriber left: stop reserving and drain."""
        if not self.running:
            return
        self.running = False
        self.stream.detach(self)
        if self._opening is not None:
            self._opening.cancel()
        for lane in self.lanes:
            if lane.quiet:
                lane.close()
        if self._all_closed():
            self._finish()
            return
        loop = asyncio.get_running_loop()
        self._drain_timer = loop.call_later(self.stream.drain_timeout, self._close_all)

    def fail(self, error: BaseException) -> None:
        """Close every lane (their jobs go back to the server), then report ``error``."""
        if self.finished:
            return
        self.running = False
        self.stream.detach(self)
        if self._opening is not None:
            self._opening.cancel()
        self._close_all()
        subscribers, self.subscribers = self.subscribers, []
        for subscriber in subscribers:
            if subscriber.active:
                subscriber.active = False
                try:
                    subscriber.on_error(cast(Exception, error))
                except Exception as raised:  # an observer that raises in on_error
                    asyncio.get_running_loop().call_exception_handler(
                        {"message": "rxbeanstalk: exception in on_error", "exception": raised}
                    )

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
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None

    # -- subscribers ------------------------------------------------------------------

    def add(self, subscriber: _Subscriber) -> None:
        self.subscribers.append(subscriber)

    def remove(self, subscriber: _Subscriber) -> None:
        subscriber.active = False
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        if not self.subscribers:
            self.stop()

    # -- LaneListener -----------------------------------------------------------------

    def lane_job(self, lane: Lane, job: Job) -> None:
        if not self.running:
            lane.close()  # reserved while stopping: the server takes it back
            self._maybe_done()
            return
        for subscriber in list(self.subscribers):
            if not subscriber.active:
                continue
            try:
                subscriber.on_next(job)
            except Exception as error:
                # The consumer broke: its job goes back (the lanes close) and the
                # stream ends with the consumer's error.
                self.fail(error)
                return

    def lane_free(self, lane: Lane) -> None:
        if self.running:
            lane.reserve()
        else:
            self.lane_idle(lane)

    def lane_idle(self, lane: Lane) -> None:
        if not self.running and lane.quiet:
            lane.close()
            self._maybe_done()

    def lane_failed(self, lane: Lane, error: BaseException) -> None:
        if self.running:
            self.fail(error)
        else:
            self._maybe_done()

    def _maybe_done(self) -> None:
        if self._all_closed():
            self._finish()


class ReserveStream(reactivex.Observable[Job]):
    """The hot Observable ``Client.reserve_stream`` returns.

    Args:
        client: The client the jobs belong to.
        binding: The client's loop binding.
        address: Server address and timeouts.
        tubes: The tubes to reserve from; ``None`` for the client's watch list when the
            lanes start.
        max_in_flight: Lanes, so jobs reserved and unsettled at most.
        drain_timeout: Seconds delivered jobs get to be settled after the last
            subscriber leaves.
        auto_touch: Touch each unsettled job before its TTR runs out.
    """

    def __init__(
        self,
        client: Client,
        binding: LoopBinding,
        address: Address,
        tubes: tuple[str, ...] | None,
        *,
        max_in_flight: int,
        drain_timeout: float,
        auto_touch: bool,
    ) -> None:
        super().__init__()
        self.client = client
        self.address = address
        self.tubes = tubes
        self.max_in_flight = max_in_flight
        self.drain_timeout = drain_timeout
        self.auto_touch = auto_touch
        self._binding = binding
        self._session: _Session | None = None
        self._sessions_started = 0

    @property
    def sessions_started(self) -> int:
        """How many times the lanes were started (each 0 -> 1 subscriber transition)."""
        return self._sessions_started

    @property
    def active(self) -> bool:
        """Whether lanes are running now."""
        return self._session is not None

    def detach(self, session: _Session) -> None:
        """Forget ``session``: the next subscriber starts a new one."""
        if self._session is session:
            self._session = None

    def subscribe(
        self,
        on_next: abc.ObserverBase[Job] | Callable[[Job], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Subscribe; jobs are delivered on the client's event loop.

        Returns:
            A disposable: disposing the last subscription stops and drains the lanes.
        """
        if isinstance(on_next, abc.ObserverBase) or hasattr(on_next, "on_next"):
            observer = cast(abc.ObserverBase[Job], on_next)
            subscriber = _Subscriber(observer.on_next, observer.on_error, observer.on_completed)
        else:
            subscriber = _Subscriber(
                cast(Callable[[Job], None], on_next or _ignore),
                on_error or _unhandled,
                on_completed or _nothing,
            )
        self._binding.bind()
        holder: list[_Session] = []
        self._binding.call(self._attach, subscriber, holder)

        def dispose() -> None:
            if subscriber.active:
                subscriber.active = False
                self._binding.call(self._detach_subscriber, subscriber, holder)

        return reactivex.disposable.Disposable(dispose)

    def _attach(self, subscriber: _Subscriber, holder: list[_Session]) -> None:
        if not subscriber.active:
            return
        session = self._session
        if session is None:
            tubes = self.tubes if self.tubes is not None else self.client.watched
            session = _Session(self, tubes)
            self._session = session
            self._sessions_started += 1
            session.add(subscriber)
            session.start()
        else:
            session.add(subscriber)
        holder.append(session)

    def _detach_subscriber(self, subscriber: _Subscriber, holder: list[_Session]) -> None:
        if holder:
            holder[0].remove(subscriber)


def _ignore(_: Any) -> None:
    pass


def _nothing() -> None:
    pass


def _unhandled(error: Exception) -> None:
    loop = asyncio._get_running_loop()
    if loop is not None:
        loop.call_exception_handler(
            {"message": "rxbeanstalk: reserve_stream error with no on_error", "exception": error}
        )

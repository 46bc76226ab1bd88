"""``reserve_stream``: a hot, ref-counted stream of jobs with credit backpressure.

All current subscribers share one session: a set of lanes (see ``_lane``), started when
the subscriber count goes from 0 to 1 and stopped when it drops back to 0. Each session
is new: reactivex's ``share()`` keeps its dead subject after an error, which would make
``retry`` fail at once, so a session detaches from the stream before it reports an error
or finishes, and the next subscription starts a fresh one with fresh lanes.

Stopping (the last subscriber left) is ``LaneSet``'s drain: lanes stop reserving, lanes
waiting in a reserve close at once, lanes holding a delivered job wait up to
``drain_timeout`` for it to be settled, then every connection still open closes and the
server puts its job back. A subscriber that arrives during a drain starts a new session
with only the credit the draining one is not holding, and the new session grows a lane
each time a draining lane closes, so ``max_in_flight`` holds across the hand-over too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import reactivex
from reactivex import abc

from ._job import Job
from ._lane import Lane
from ._lane_set import LaneSet
from ._loop import LoopBinding

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


class _Session(LaneSet):
    """One run of a stream's lanes, from its first subscriber to its end."""

    def __init__(self, stream: ReserveStream, watch: tuple[str, ...]) -> None:
        super().__init__(
            stream.client,
            stream.address,
            watch,
            drain_timeout=stream.drain_timeout,
            auto_touch=stream.auto_touch,
        )
        self.stream = stream
        self.subscribers: list[_Subscriber] = []

    def stop(self) -> None:
        """The last subscriber left: stop reserving and drain."""
        if self.running:
            self.stream.detach(self)
        super().stop()

    def fail(self, error: BaseException) -> None:
        """Close every lane (their jobs go back to the server), then report ``error``."""
        if self.finished:
            return
        self.stream.detach(self)
        self.abort()
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

    def released(self) -> None:
        self.stream.rebalance()

    # -- subscribers ------------------------------------------------------------------

    def add(self, subscriber: _Subscriber) -> None:
        self.subscribers.append(subscriber)

    def remove(self, subscriber: _Subscriber) -> None:
        subscriber.active = False
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)
        if not self.subscribers:
            self.stop()

    def deliver(self, lane: Lane, job: Job) -> None:
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
        # Sessions that stopped but still hold delivered jobs: their lanes count
        # against max_in_flight until they close.
        self._draining: set[_Session] = set()
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
        self._draining.add(session)

    def _credit_left(self) -> int:
        return self.max_in_flight - sum(s.open_lanes for s in self._draining)

    def rebalance(self) -> None:
        """Give the running session the credit that draining sessions gave back.

        A subscriber arriving while the previous session drains must not push the jobs
        held past ``max_in_flight``: the new session starts with the lanes that are
        free, and gets one more each time a draining lane closes.
        """
        self._draining = {s for s in self._draining if not s.finished}
        session = self._session
        if session is not None and session.running:
            session.grow(self._credit_left() - len(session.lanes))

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
            self.rebalance()
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

"""``Cluster.reserve_stream``: the job streams of every server, merged, riding out failures.

Each server has its own ``ReserveStream`` (``max_in_flight`` lanes, hot and shared, with
its own credit), and every subscriber of the merged stream subscribes to all of them. So
the merged stream is hot and shared the same way (its subscribers share each server's
lanes), and it holds at most ``max_in_flight`` jobs per server.

When one server's stream fails with an error that a healthy server cannot cure by
itself, the whole merged stream fails: a consumer that raised, an invalid argument,
``BAD_FORMAT``/``UNKNOWN_COMMAND``. Any other failure belongs to that server: its lanes
have closed (the server takes back their jobs), the server is marked down if the failure
closed a connection, and its stream is subscribed again once the server is back (a
probe got an answer) and a backoff since its last failure has passed. The other servers'
lanes run on untouched.

``patience`` decides when an outage is the merged stream's business: once every server
has been down (marked down, its lanes not running) for ``patience`` seconds in a row,
the stream fails with ``ConnectError``, which ``retry_with_backoff`` retries. ``None``
waits for the servers for ever.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import cast

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable

from ._cluster_health import Health, Member, backoff
from ._job import Job
from ._loop import LoopBinding
from ._stream import ReserveStream
from .errors import (
    BadFormatError,
    ConnectError,
    ProtocolError,
    ServerError,
    TransportError,
    UnknownCommandError,
)


def survivable(error: BaseException) -> bool:
    """Whether a server's stream failing with ``error`` leaves the merged stream running.

    Lost or refused connections and garbled replies (the connection was closed) and
    server-side failures are the server's trouble; ``BAD_FORMAT``/``UNKNOWN_COMMAND``
    mean this client and that server do not understand each other, and anything else (a
    consumer's exception) is not a server's trouble at all.
    """
    if isinstance(error, BadFormatError | UnknownCommandError):
        return False
    return isinstance(error, TransportError | ProtocolError | ServerError)


class ClusterStream(reactivex.Observable[Job]):
    """The hot Observable ``Cluster.reserve_stream`` returns.

    Args:
        binding: The cluster's loop binding.
        health: The cluster's down marks.
        streams: Each member with its own server's stream.
        patience: Seconds every server may be down before the stream fails; ``None``
            for ever.
    """

    def __init__(
        self,
        binding: LoopBinding,
        health: Health,
        streams: Sequence[tuple[Member, ReserveStream]],
        *,
        patience: float | None,
    ) -> None:
        super().__init__()
        self._binding = binding
        self.health = health
        self.streams = list(streams)
        self.patience = patience

    def subscribe(
        self,
        on_next: abc.ObserverBase[Job] | Callable[[Job], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Subscribe; jobs are delivered on the cluster's event loop.

        The merged stream never completes: it ends with an error, or when disposed.

        Returns:
            A disposable: disposing stops and drains this subscriber's share of the lanes.
        """
        next_: Callable[[Job], None]
        error_: Callable[[Exception], None]
        if isinstance(on_next, abc.ObserverBase) or hasattr(on_next, "on_next"):
            observer = cast(abc.ObserverBase[Job], on_next)
            next_, error_ = observer.on_next, observer.on_error
        else:
            next_ = on_next or _ignore
            error_ = on_error or _unhandled
        self._binding.bind()
        merge = _Merge(self, next_, error_)
        self._binding.call(merge.start)

        def dispose() -> None:
            if not merge.disposed:
                merge.disposed = True
                self._binding.call(merge.stop)

        return Disposable(dispose)


# Stands for a subscription that ``subscribe`` has not returned yet.
_OPENING = Disposable()


class _Feed:
    """One server's stream within one subscription of the merged stream."""

    __slots__ = ("failures", "member", "stream", "sub", "timer", "waiting")

    def __init__(self, member: Member, stream: ReserveStream) -> None:
        self.member = member
        self.stream = stream
        self.sub: abc.DisposableBase | None = None
        self.failures = 0
        self.timer: asyncio.TimerHandle | None = None
        self.waiting = False  # its backoff passed while the server was down


class _Merge:
    """One subscription of the merged stream."""

    def __init__(
        self,
        owner: ClusterStream,
        on_next: Callable[[Job], None],
        on_error: Callable[[Exception], None],
    ) -> None:
        self.health = owner.health
        self.patience = owner.patience
        self.feeds = [_Feed(member, stream) for member, stream in owner.streams]
        self.on_next = on_next
        self.on_error = on_error
        self.stopped = False
        self.disposed = False
        self.consumer_error: BaseException | None = None
        self.patience_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.disposed:
            return
        self.health.listen(self.changed)
        for feed in self.feeds:
            if not self.stopped:
                self.open(feed)
        self.check_outage()

    def open(self, feed: _Feed) -> None:
        feed.waiting = False
        # Running from now on: a failure inside subscribe (none is known to happen
        # there; the lanes connect in a task) resets it to None, and must stay None.
        feed.sub = _OPENING
        sub = feed.stream.subscribe(
            functools.partial(self.job, feed), functools.partial(self.failed, feed)
        )
        if feed.sub is _OPENING:
            feed.sub = sub

    def job(self, feed: _Feed, job: Job) -> None:
        if self.stopped:
            return
        feed.failures = 0
        try:
            self.on_next(job)
        except Exception as error:
            # Let the server's stream see it: its lanes close and hand their jobs back,
            # and the error comes back to ``failed`` to end the merged stream.
            self.consumer_error = error
            raise

    def failed(self, feed: _Feed, error: Exception) -> None:
        feed.sub = None
        if self.stopped:
            return
        if error is self.consumer_error or not survivable(error):
            self.fail(error)
            return
        self.health.failed(feed.member, error)
        feed.failures += 1
        delay = backoff(feed.failures, self.health.retry_base, self.health.retry_cap)
        feed.timer = asyncio.get_running_loop().call_later(delay, self.retry, feed)
        self.check_outage()

    def retry(self, feed: _Feed) -> None:
        feed.timer = None
        if self.stopped:
            return
        if feed.member.down:
            feed.waiting = True  # ``changed`` opens it when a probe gets an answer
            return
        self.open(feed)
        self.check_outage()

    def changed(self, member: Member) -> None:
        if self.stopped:
            return
        if not member.down:
            for feed in self.feeds:
                if feed.member is member and feed.waiting:
                    self.open(feed)
        self.check_outage()

    def check_outage(self) -> None:
        """Start the patience clock when no server is left, stop it when one is back."""
        if self.patience is None or self.stopped:
            return
        outage = all(feed.sub is None and feed.member.down for feed in self.feeds)
        if outage and self.patience_timer is None:
            loop = asyncio.get_running_loop()
            self.patience_timer = loop.call_later(self.patience, self.give_up)
        elif not outage and self.patience_timer is not None:
            self.patience_timer.cancel()
            self.patience_timer = None

    def give_up(self) -> None:
        self.patience_timer = None
        reasons = "; ".join(f"{f.member.address}: {f.member.reason}" for f in self.feeds)
        error = ConnectError(
            f"every server of the cluster has been down for {self.patience:g} s: {reasons}"
        )
        last = max(self.feeds, key=lambda f: f.member.down_since).member.reason
        error.__cause__ = last
        self.fail(error)

    def fail(self, error: BaseException) -> None:
        self.stop()
        try:
            self.on_error(cast(Exception, error))
        except Exception as raised:
            asyncio.get_running_loop().call_exception_handler(
                {"message": "rxbeanstalk: exception in on_error", "exception": raised}
            )

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.health.unlisten(self.changed)
        if self.patience_timer is not None:
            self.patience_timer.cancel()
            self.patience_timer = None
        for feed in self.feeds:
            if feed.timer is not None:
                feed.timer.cancel()
                feed.timer = None
            sub, feed.sub = feed.sub, None
            if sub is not None:
                sub.dispose()


def _ignore(_: Job) -> None:
    pass


def _unhandled(error: Exception) -> None:
    loop = asyncio._get_running_loop()
    if loop is not None:
        loop.call_exception_handler(
            {"message": "rxbeanstalk: reserve_stream error with no on_error", "exception": error}
        )

"""The cold ``AsyncObservable`` behind every ``AsyncClient`` command.

``CommandSource`` wraps the cold ``reactivex.Observable`` a ``Client`` method returned
(so the arguments were checked when the method was called). Each ``subscribe_async``
subscribes to it once, which sends the command once, and hands what comes back to the
async observer through a ``Relay``: one notification at a time, each awaited, in order
(``asend`` for each value, then ``aclose``; or ``athrow`` with the typed error).

Disposing a subscription abandons interest: the reply is still read and dropped by the
connection, a reserve that is still waiting closes its reserving connection (the server
stops waiting, and a job on its way goes back), and a reserved ``Job`` that arrived but
was not yet handed to the observer is released, so no job is left reserved by nobody.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import reactivex
from aioreactive import AsyncAnonymousObserver, AsyncDisposable, AsyncObservable, AsyncObserver
from reactivex import abc

from ._job import Job

T = TypeVar("T")

_NEXT = 0
_ERROR = 1
_CLOSE = 2


def report(loop: asyncio.AbstractEventLoop, what: str, error: BaseException) -> None:
    """Hand an error nobody can receive to the loop's exception handler.

    Args:
        loop: The loop whose handler gets it.
        what: What went wrong, for the log message.
        error: The error.
    """
    loop.call_exception_handler({"message": f"rxbeanstalk.asyncrx: {what}", "exception": error})


def observer_of(
    send: Any,
    throw: Callable[[Exception], Awaitable[None]] | None,
    close: Callable[[], Awaitable[None]] | None,
) -> Any:
    """The ``AsyncObserver`` that ``subscribe_async``'s arguments describe.

    Args:
        send: An ``AsyncObserver``, or a coroutine function called with each value, or
            ``None``.
        throw: A coroutine function called with the error, or ``None``.
        close: A coroutine function called at the end, or ``None``.

    Returns:
        ``send`` itself if it is an observer (an ``AsyncObserver``, or any object with
        ``asend``, ``athrow`` and ``aclose``), else an ``AsyncAnonymousObserver``.
    """
    if isinstance(send, AsyncObserver) or all(
        callable(getattr(send, name, None)) for name in ("asend", "athrow", "aclose")
    ):
        return send
    return AsyncAnonymousObserver(send, throw, close)


def give_back(value: Any) -> None:
    """Release ``value`` if it is a reserved ``Job`` that nobody will get to see.

    Args:
        value: A value a command emitted.
    """
    if isinstance(value, Job) and value.reserved:
        value.release().subscribe(on_error=_ignore)


def _ignore(_: Exception) -> None:
    pass


class Relay(AsyncDisposable):  # type: ignore[misc,unused-ignore]
    """One subscription to a command: the Rx notifications, awaited by an async observer.

    The ``Client`` observable calls back on the client's loop thread; a notification from
    another thread (a client bound to its own private loop) is handed over to the
    subscriber's loop first. A delivery task started with the first notification awaits
    the observer's methods one at a time, so they never overlap.

    Args:
        observer: The ``AsyncObserver`` to deliver to.
    """

    def __init__(self, observer: Any) -> None:
        self._observer = observer
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._inbox: deque[tuple[int, Any]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription: abc.DisposableBase | None = None
        self._ended = False
        self._disposed = False

    def start(self, source: reactivex.Observable[Any]) -> None:
        """Subscribe to ``source``: this sends the command.

        Args:
            source: The cold ``Client`` observable.
        """
        self._subscription = source.subscribe(
            on_next=self._on_next, on_error=self._on_error, on_completed=self._on_completed
        )

    # -- from the client's loop thread ------------------------------------------------

    def _on_next(self, value: Any) -> None:
        self._post(_NEXT, value)

    def _on_error(self, error: Exception) -> None:
        self._post(_ERROR, error)

    def _on_completed(self) -> None:
        self._post(_CLOSE, None)

    def _post(self, kind: int, value: Any) -> None:
        if threading.get_ident() == self._thread:
            self._receive(kind, value)
            return
        try:
            self._loop.call_soon_threadsafe(self._receive, kind, value)
        except RuntimeError:  # the subscriber's loop is closed: nobody is listening
            if kind == _NEXT:
                give_back(value)

    # -- on the subscriber's loop -----------------------------------------------------

    def _receive(self, kind: int, value: Any) -> None:
        if self._disposed or self._ended:
            if kind == _NEXT:
                give_back(value)
            return
        if kind != _NEXT:
            self._ended = True
        self._inbox.append((kind, value))
        if self._task is None:
            self._task = self._loop.create_task(self._deliver())
        else:
            self._wake.set()

    async def _deliver(self) -> None:
        observer = self._observer
        inbox = self._inbox
        while True:
            while not inbox:
                if self._disposed:
                    return
                self._wake.clear()
                await self._wake.wait()
            if self._disposed:
                return
            kind, value = inbox.popleft()
            try:
                if kind == _NEXT:
                    await observer.asend(value)
                    continue
                if kind == _ERROR:
                    await observer.athrow(value)
                else:
                    await observer.aclose()
                return
            except Exception as error:
                if kind != _NEXT:
                    report(self._loop, "exception in athrow/aclose", error)
                    return
                broken = error
            # The observer's asend raised: the subscription ends with that error.
            self._stop()
            try:
                await observer.athrow(broken)
            except Exception as error:
                report(self._loop, "exception in athrow", error)
            return

    def _stop(self) -> None:
        self._ended = True
        if self._subscription is not None:
            self._subscription.dispose()
        inbox = self._inbox
        while inbox:
            kind, value = inbox.popleft()
            if kind == _NEXT:
                give_back(value)

    async def dispose_async(self) -> None:
        """Abandon interest: nothing more reaches the observer.

        A reply still on its way is read and dropped; a waiting reserve closes its
        connection; a reserved job not yet delivered is released. Returns at once (it
        may be called from inside the observer's own ``asend``).
        """
        if self._disposed:
            return
        self._disposed = True
        self._stop()
        self._wake.set()


class CommandSource(AsyncObservable[T], Generic[T]):  # type: ignore[misc,unused-ignore]
    """A cold ``AsyncObservable`` of one ``Client`` command.

    Nothing is sent until ``subscribe_async``; each subscription sends the command once.

    Args:
        source: The cold ``reactivex.Observable`` a ``Client`` method returned.
    """

    def __init__(self, source: reactivex.Observable[T]) -> None:
        self._source = source

    def __repr__(self) -> str:
        return f"<rxbeanstalk.asyncrx command {self._source!r}>"

    async def subscribe_async(
        self,
        send: Any = None,
        throw: Callable[[Exception], Awaitable[None]] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        """Send the command; its value (or error) goes to the observer.

        Args:
            send: An ``AsyncObserver``, or a coroutine function for each value.
            throw: A coroutine function for the error (with a function ``send``).
            close: A coroutine function for the end (with a function ``send``).

        Returns:
            An ``AsyncDisposable``: disposing it abandons interest in the reply.
        """
        relay = Relay(observer_of(send, throw, close))
        relay.start(self._source)
        return relay

"""The cold Observable every command method returns.

``CommandObservable`` is a ``reactivex.Observable`` that skips the generic subscribe
machinery (auto-detach observer, trampoline) and registers its observer straight with
the connection's reply FIFO: each subscription starts its work on the client's loop and
gets its values there. ``await`` and ``.run()`` take the same short path with a future
instead of an observer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Generator
from typing import Any, Generic, TypeVar, cast

import reactivex
from reactivex import abc

from ._loop import LoopBinding
from .errors import ConnectionLostError, LoopBindingError

T = TypeVar("T")


class Emitter(abc.DisposableBase):
    """Where a subscription's outcome goes; also its disposable.

    ``resolve``/``reject`` serve single-reply commands (the connection's ``Sink``);
    ``next``/``complete``/``error`` serve commands that emit several values.
    ``on_cancel``, when set by the work that was started, runs on the loop when the
    subscriber disposes before the end.
    """

    __slots__ = ("_binding", "done", "on_cancel")

    def __init__(self, binding: LoopBinding) -> None:
        self._binding = binding
        self.done = False
        self.on_cancel: Callable[[], None] | None = None

    def next(self, value: Any) -> None:
        """Emit one value."""
        raise NotImplementedError

    def complete(self) -> None:
        """Emit the end."""
        raise NotImplementedError

    def error(self, error: BaseException) -> None:
        """Emit an error."""
        raise NotImplementedError

    def resolve(self, value: Any) -> None:
        """Emit ``value``, then the end."""
        self.next(value)
        self.complete()

    def reject(self, error: BaseException) -> None:
        """Emit an error."""
        self.error(error)

    def dispose(self) -> None:
        """Stop caring about the outcome (safe from any thread, idempotent)."""
        if self.done:
            return
        self.done = True
        if self.on_cancel is not None and self._binding.loop is not None:
            self._binding.call(self._cancel)

    def _cancel(self) -> None:
        cancel, self.on_cancel = self.on_cancel, None
        if cancel is not None:
            cancel()


def _report(error: BaseException, what: str) -> None:
    loop = asyncio._get_running_loop()
    context = {"message": f"rxbeanstalk: {what}", "exception": error}
    if loop is not None:
        loop.call_exception_handler(context)
    else:  # pragma: no cover - sinks run on the loop
        raise error


class ObserverEmitter(Emitter):
    """Delivers to a subscriber's callbacks.

    An exception a callback raises is reported to the loop's exception handler, never
    allowed to break the connection.
    """

    __slots__ = ("_context", "_entered", "_on_completed", "_on_error", "_on_next")

    def __init__(
        self,
        binding: LoopBinding,
        on_next: Callable[[Any], None] | None,
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> None:
        super().__init__(binding)
        self._on_next = on_next
        self._on_error = on_error
        self._on_completed = on_completed
        # Replies arrive in the context the connection was opened in; callbacks run in
        # the subscriber's, as asyncio's own callbacks do. (ipykernel tells notebook cells
        # apart by context variables: without this, a print in on_next lands in the cell
        # that first opened the connection.)
        self._context = contextvars.copy_context()
        self._entered = False

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        if self._entered:  # a callback that makes this emitter emit again: already inside
            callback(*args)
            return
        self._entered = True
        try:
            self._context.run(callback, *args)
        finally:
            self._entered = False

    @property
    def has_error_handler(self) -> bool:
        """Whether the subscriber gave an ``on_error``."""
        return self._on_error is not None

    def next(self, value: Any) -> None:
        if self.done or self._on_next is None:
            return
        try:
            self._call(self._on_next, value)
        except Exception as error:
            _report(error, "exception in on_next")

    def complete(self) -> None:
        if self.done:
            return
        self.done = True
        if self._on_completed is not None:
            try:
                self._call(self._on_completed)
            except Exception as error:
                _report(error, "exception in on_completed")

    def error(self, error: BaseException) -> None:
        if self.done:
            return
        self.done = True
        if self._on_error is None:
            _report(error, "unhandled error (subscribe with on_error to handle it)")
            return
        try:
            self._call(self._on_error, cast(Exception, error))
        except Exception as raised:
            _report(raised, "exception in on_error")


class _LastValue(Emitter):
    """Keeps the last value; ends a future with it (``await`` and ``.run()``)."""

    __slots__ = ("_has_value", "_value")

    def __init__(self, binding: LoopBinding) -> None:
        super().__init__(binding)
        self._value: Any = None
        self._has_value = False

    def next(self, value: Any) -> None:
        self._value = value
        self._has_value = True

    def complete(self) -> None:
        if self.done:
            return
        self.done = True
        if self._has_value:
            self._set_result(self._value)
        else:
            self._set_error(reactivex.internal.SequenceContainsNoElementsError())

    def error(self, error: BaseException) -> None:
        if self.done:
            return
        self.done = True
        self._set_error(error)

    def _set_result(self, value: Any) -> None:
        raise NotImplementedError

    def _set_error(self, error: BaseException) -> None:
        raise NotImplementedError


class FutureEmitter(_LastValue):
    """Ends an asyncio future (``await observable``)."""

    __slots__ = ("future",)

    def __init__(self, binding: LoopBinding, future: asyncio.Future[Any]) -> None:
        super().__init__(binding)
        self.future = future

    def _set_result(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def _set_error(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class ThreadEmitter(_LastValue):
    """Ends a ``concurrent.futures.Future`` that another thread waits on (``.run()``)."""

    __slots__ = ("future",)

    def __init__(self, binding: LoopBinding) -> None:
        super().__init__(binding)
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def _set_result(self, value: Any) -> None:
        self.future.set_result(value)

    def _set_error(self, error: BaseException) -> None:
        self.future.set_exception(error)


Start = Callable[[Any, Emitter], None]
"""Starts a subscription's work on the loop: ``start(argument, emitter)``."""


class CommandObservable(reactivex.Observable[T], Generic[T]):
    """A cold Observable: each subscription calls ``start(argument, emitter)`` on the loop.

    Args:
        binding: The client's loop binding.
        start: What a subscription does (send a command, usually).
        argument: Passed to ``start`` (the command, usually).
    """

    def __init__(self, binding: LoopBinding, start: Start, argument: Any) -> None:
        # Not super().__init__(): it allocates an RLock per command, which only a few
        # operators ever take (``lock`` below makes one when first asked), and sets a
        # subscribe function this class does not use.
        self._subscribe = None
        self._binding = binding
        self._start = start
        self._argument = argument

    @property
    def lock(self) -> threading.RLock:
        """The lock some reactivex operators take on their source, made on first use."""
        lock: threading.RLock | None = self.__dict__.get("_lock")
        if lock is None:
            # setdefault is atomic: two threads asking at once get the same lock.
            lock = self.__dict__.setdefault("_lock", threading.RLock())
        return lock

    @lock.setter
    def lock(self, value: threading.RLock) -> None:
        self.__dict__["_lock"] = value

    def subscribe(
        self,
        on_next: abc.ObserverBase[T] | Callable[[T], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
    ) -> abc.DisposableBase:
        """Subscribe with an observer or callbacks; values arrive on the client's loop.

        ``scheduler`` is accepted for compatibility and not used: delivery always happens
        on the client's event loop.

        Returns:
            A disposable: disposing abandons interest (the reply is still read and
            dropped; a reserve in progress is cancelled and its job, if any, returned).
        """
        # Duck typing rather than an ABC isinstance check, and string casts: both run on
        # every command, and the runtime forms cost more than the rest of subscribe.
        observer_next = getattr(on_next, "on_next", None)
        if observer_next is not None:
            observer = cast("abc.ObserverBase[T]", on_next)
            emitter = ObserverEmitter(
                self._binding, observer_next, observer.on_error, observer.on_completed
            )
        else:
            emitter = ObserverEmitter(
                self._binding, cast("Callable[[Any], None] | None", on_next), on_error, on_completed
            )
        try:
            self._binding.bind()
        except LoopBindingError as error:
            if emitter.has_error_handler:
                emitter.error(error)
                return emitter
            raise
        self._binding.call(self._start, self._argument, emitter)
        return emitter

    def __await__(self) -> Generator[Any, None, T]:
        """Send the command and wait for its value (the last one, for several).

        Raises:
            BeanstalkError: the error the command failed with.
            LoopBindingError: the client is bound to another loop.
        """
        loop = self._binding.bind()
        if not self._binding.on_loop_thread():
            # Awaiting from a loop other than the client's own private one: hand the work
            # over and wait on a thread-safe future.
            emitter: _LastValue = ThreadEmitter(self._binding)
            loop.call_soon_threadsafe(self._start, self._argument, emitter)
            wrapped = asyncio.wrap_future(cast(ThreadEmitter, emitter).future)
            try:
                return cast(T, (yield from wrapped))
            except asyncio.CancelledError:
                emitter.dispose()
                raise
        future: asyncio.Future[T] = loop.create_future()
        emitter = FutureEmitter(self._binding, future)
        self._start(self._argument, emitter)
        try:
            return (yield from future)
        except asyncio.CancelledError:
            emitter.dispose()
            raise

    def run(self, scheduler: abc.SchedulerBase | None = None) -> T:
        """Send the command and block until its value arrives (plain scripts, threads).

        Raises:
            BeanstalkError: the error the command failed with.
            LoopBindingError: called on the client's own loop thread, where blocking
                would deadlock; ``await`` the observable or ``subscribe`` instead.
        """
        binding = self._binding
        if binding.on_loop_thread() or (
            binding.loop is None and asyncio._get_running_loop() is not None
        ):
            raise LoopBindingError(
                ".run() would block the event loop this client runs on and deadlock; "
                "use `await observable` or `.subscribe(...)` here instead"
            )
        loop = binding.bind()
        emitter = ThreadEmitter(binding)
        loop.call_soon_threadsafe(self._start, self._argument, emitter)
        try:
            # Wait without result(timeout=...): its TimeoutError (the builtin, since 3.11)
            # could not be told apart from a CommandTimeoutError the command failed with.
            while not concurrent.futures.wait((emitter.future,), timeout=0.5).done:
                if loop.is_closed() or not loop.is_running():
                    raise ConnectionLostError("the client's event loop stopped")
            return cast(T, emitter.future.result())
        except BaseException:
            emitter.dispose()
            raise

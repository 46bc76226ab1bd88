"""The cold Observable every command method returns.

``CommandObservable`` is a ``reactivex.Observable`` that skips the generic subscribe
machinery (auto-detach observer, trampoline) and registers its observer straight with
the connection's reply FIFO: each subscription starts its work on the client's loop and
gets its values there. ``await`` and ``.run()`` take the same short path with a future
(or, for ``.run()``, a lock) instead of an observer. On the client's own loop, which is
where almost every subscription happens, the work starts within ``subscribe`` itself.
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

from ._loop import LoopBinding, running_loop
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
        # Emitter.__init__ written out: this runs once per subscription.
        self._binding = binding
        self.done = False
        self.on_cancel = None
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

    def resolve(self, value: Any) -> None:
        # ``next(value)`` then ``complete()``, entering the subscriber's context once
        # instead of twice: this is the reply of every single-reply command.
        if self.done:
            return
        if self._entered:
            self._resolve(value)
            return
        self._entered = True
        try:
            self._context.run(self._resolve, value)
        finally:
            self._entered = False

    def _resolve(self, value: Any) -> None:
        on_next = self._on_next
        if on_next is not None:
            try:
                on_next(value)
            except Exception as error:
                _report(error, "exception in on_next")
            if self.done:  # on_next disposed the subscription: no on_completed
                return
        self.done = True
        on_completed = self._on_completed
        if on_completed is not None:
            try:
                on_completed()
            except Exception as error:
                _report(error, "exception in on_completed")

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
        # The base classes' __init__ written out: this runs once per awaited command.
        self._binding = binding
        self.done = False
        self.on_cancel = None
        self._value = None
        self._has_value = False
        self.future = future

    def resolve(self, value: Any) -> None:
        # ``next(value)`` then ``complete()`` in one step (every single-reply command).
        if self.done:
            return
        self.done = True
        if not self.future.done():
            self.future.set_result(value)

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


class _Waiter(_LastValue):
    """Ends a blocking wait in another thread (``.run()``).

    A bare lock, held until the outcome is in: the cheapest hand-over between two
    threads (a ``concurrent.futures.Future`` and ``wait()`` build a condition, an event
    and a waiter object around the same thing).
    """

    __slots__ = ("_error", "_lock", "_result")

    def __init__(self, binding: LoopBinding) -> None:
        super().__init__(binding)
        self._result: Any = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._lock.acquire()

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the outcome; whether it is in."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()  # so that a later wait() sees it too
            return True
        return False

    def outcome(self) -> Any:
        """The value, or raise the error (once ``wait`` said it is in)."""
        if self._error is not None:
            raise self._error
        return self._result

    def _set_result(self, value: Any) -> None:
        self._result = value
        self._lock.release()

    def _set_error(self, error: BaseException) -> None:
        self._error = error
        self._lock.release()


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
        binding = self._binding
        loop = binding.loop
        if loop is not None and running_loop() is loop:
            # On the client's own loop, bound already (the usual case): start here.
            self._start(self._argument, emitter)
            return emitter
        try:
            binding.bind()
        except LoopBindingError as error:
            if emitter.has_error_handler:
                emitter.error(error)
                return emitter
            raise
        binding.call(self._start, self._argument, emitter)
        return emitter

    def __await__(self) -> Generator[Any, None, T]:
        """Send the command and wait for its value (the last one, for several).

        Raises:
            BeanstalkError: the error the command failed with.
            LoopBindingError: the client is bound to another loop.
        """
        binding = self._binding
        loop = binding.loop
        if loop is None or running_loop() is not loop:
            # Not (yet) on the client's own loop: bind, or find it is another thread's.
            loop = binding.bind()
            if not binding.on_loop_thread():
                # Awaiting from a loop other than the client's own private one: hand the
                # work over and wait on a thread-safe future.
                emitter: _LastValue = ThreadEmitter(binding)
                loop.call_soon_threadsafe(self._start, self._argument, emitter)
                wrapped = asyncio.wrap_future(cast(ThreadEmitter, emitter).future)
                try:
                    return cast(T, (yield from wrapped))
                except asyncio.CancelledError:
                    emitter.dispose()
                    raise
        future: asyncio.Future[T] = loop.create_future()
        emitter = FutureEmitter(binding, future)
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
        emitter = _Waiter(binding)
        loop.call_soon_threadsafe(self._start, self._argument, emitter)
        try:
            # Wake up now and then to notice a loop that stopped without an answer.
            while not emitter.wait(0.5):
                if loop.is_closed() or not loop.is_running():
                    raise ConnectionLostError("the client's event loop stopped")
            return cast(T, emitter.outcome())
        except BaseException:
            emitter.dispose()
            raise

"""Operators for job streams: ``process`` and ``retry_with_backoff``.

Each is a function that returns ``Callable[[Observable[A]], Observable[B]]``, to be used
with ``pipe``::

    client.reserve_stream(tubes=["emails"], max_in_flight=8).pipe(
        process(send_email, release_delay=30, max_releases=5),
        retry_with_backoff(max_tries=10, base=0.5),
    ).subscribe(print)
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable, SerialDisposable

from ._job import Job
from .errors import (
    BadFormatError,
    InvalidArgumentError,
    JobLostError,
    JobSettledError,
    ProtocolError,
    TransportError,
    UnknownCommandError,
)
from .protocol import MAX_U32

__all__ = ["Action", "Outcome", "process", "retry_with_backoff"]

T = TypeVar("T")


class Action(enum.Enum):
    """What ``process`` did with a job."""

    DELETED = "deleted"
    """The handler succeeded; the job was deleted."""
    RELEASED = "released"
    """The handler failed; the job was released (to be tried again after the delay)."""
    BURIED = "buried"
    """The handler failed (``on_error="bury"``, or ``max_releases`` was reached)."""
    SETTLED_ELSEWHERE = "settled_elsewhere"
    """Another subscriber of the stream settled the job first; nothing was sent."""
    LOST = "lost"
    """The reservation was gone before the job could be settled; the server has it back."""


@dataclass(frozen=True, slots=True, init=False)
class Outcome:
    """One job's outcome in ``process``.

    Attributes:
        job: The job.
        action: What was done with it.
        error: The handler's exception, if it failed (``TimeoutError`` on ``timeout``).
        reason: A sentence saying what happened and why.
    """

    job: Job
    action: Action
    error: BaseException | None
    reason: str

    def __init__(self, job: Job, action: Action, error: BaseException | None, reason: str) -> None:
        # Written by hand, as one is made per job: the generated __init__ of a frozen
        # dataclass sets each field with object.__setattr__, three times the cost of
        # setting them through their slot descriptors.
        _set_outcome_job(self, job)
        _set_outcome_action(self, action)
        _set_outcome_error(self, error)
        _set_outcome_reason(self, reason)

    @property
    def ok(self) -> bool:
        """Whether the handler succeeded."""
        return self.error is None


_set_outcome_job, _set_outcome_action, _set_outcome_error, _set_outcome_reason = (
    Outcome.__dict__[name].__set__ for name in ("job", "action", "error", "reason")
)


Handler = Callable[[Job], Any] | Callable[[Job], Awaitable[Any]]


def process(
    handler: Handler,
    *,
    on_error: Literal["release", "bury"] = "release",
    release_delay: int = 0,
    max_releases: int | None = None,
    timeout: float | None = None,
) -> Callable[[reactivex.Observable[Job]], reactivex.Observable[Outcome]]:
    """Run ``handler`` on each job, then settle the job by the result.

    .. code::

        ---j1------j2------j3------|
        [  process(handler)          ]
        ------o1------o2-------o3--|     (o = Outcome, as each handler finishes)

    A coroutine function runs on the client's event loop; a plain function runs in a
    worker thread (so it may block, and may call ``.run()`` on the client). On success
    the job is deleted. On an exception it is released after ``release_delay`` seconds
    with its own priority, or buried once it has been released ``max_releases`` times
    (read with ``stats-job``), or buried at once with ``on_error="bury"``. One
    ``Outcome`` is emitted per job. Jobs are handled concurrently, as many as the
    stream's credit lets through: nothing is queued here.

    When the source completes, the sequence completes after the last handler finishes;
    when the source fails, the error is passed on at once (the source's lanes have
    closed, so the jobs in progress are back on the server).

    Args:
        handler: ``handler(job)``, sync or async; its return value is ignored.
        on_error: ``"release"`` (default) or ``"bury"``.
        release_delay: Seconds before a released job is ready again.
        max_releases: Bury instead of releasing once the job was released this many
            times; ``None`` never buries.
        timeout: Seconds a handler may run; then the job is released (an async
            handler is cancelled; a thread cannot be, so it runs on unheard).

    Returns:
        The operator.

    Raises:
        InvalidArgumentError: a bad argument (at call time).
    """
    if not callable(handler):
        raise InvalidArgumentError("handler must be callable")
    if on_error not in ("release", "bury"):
        raise InvalidArgumentError(f"on_error must be 'release' or 'bury', got {on_error!r}")
    if (
        isinstance(release_delay, bool)
        or not isinstance(release_delay, int)
        or not 0 <= release_delay <= MAX_U32
    ):
        # (past 2**32-1 every release would fail, each ending the whole pipeline)
        raise InvalidArgumentError(
            f"release_delay must be an int in 0..{MAX_U32}, got {release_delay!r}"
        )
    if max_releases is not None and (
        isinstance(max_releases, bool) or not isinstance(max_releases, int) or max_releases < 0
    ):
        raise InvalidArgumentError(f"max_releases must be an int >= 0, got {max_releases!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InvalidArgumentError(f"timeout must be a positive number, got {timeout!r}")
    is_async = inspect.iscoroutinefunction(handler)
    # (Cast once: the subscripted type in a cast is built anew on every call.)
    async_handler = cast(Callable[[Job], Awaitable[Any]], handler)
    # The common case, awaited straight in the job's task: no wrapper coroutine.
    plain_async = is_async and timeout is None

    async def run_handler(job: Job) -> None:
        if is_async:
            awaitable = async_handler(job)
        else:
            awaitable = asyncio.get_running_loop().run_in_executor(None, handler, job)
        if timeout is None:
            await awaitable
        else:
            await asyncio.wait_for(awaitable, timeout)

    async def settle_failure(job: Job, error: BaseException) -> Outcome:
        # Checked first: stats-job on a job this handle no longer holds would go to the
        # command connection, and fail with NOT_FOUND once the job was deleted.
        if job.settled is not None:
            raise JobSettledError(f"job {job.id} was already {job.settled}d")
        if not job.reserved:
            raise JobLostError(f"job {job.id}'s reservation is gone; nothing was sent")
        if on_error == "bury":
            await job.bury()
            return Outcome(job, Action.BURIED, error, f"handler failed ({error!r}); buried")
        stats = await job.stats()
        if max_releases is not None and stats.releases >= max_releases:
            await job.bury(priority=stats.pri)
            return Outcome(
                job,
                Action.BURIED,
                error,
                f"handler failed ({error!r}) after {stats.releases} releases; buried",
            )
        await job.release(priority=stats.pri, delay=release_delay)
        return Outcome(
            job,
            Action.RELEASED,
            error,
            f"handler failed ({error!r}); released with a delay of {release_delay} s",
        )

    async def failed(job: Job, error: Exception) -> Outcome:
        failure: BaseException = error
        if isinstance(error, asyncio.TimeoutError):
            failure = TimeoutError(f"handler ran longer than {timeout} s")
        try:
            return await settle_failure(job, failure)
        except JobSettledError:
            return Outcome(job, Action.SETTLED_ELSEWHERE, failure, "settled by another subscriber")
        except JobLostError as lost:
            return Outcome(job, Action.LOST, failure, f"handler failed, then: {lost}")

    async def handle(job: Job, run: _Run) -> None:
        # One task per job, so that the handler runs as a task of its own (its context,
        # ``current_task()``, ``asyncio.timeout``). The task ends once the job's settle
        # command is sent: a success's ``delete`` reports to a callback (``_Deleted``)
        # instead of an awaited Observable, which saves a future, a done callback and a
        # few loop turns per job. (Running the handler's first step at once, with no
        # task, would break those on 3.11, and measured slower anyway: each lane then
        # writes as soon as it reads, and the server is woken once per job.)
        try:
            try:
                if plain_async:
                    await async_handler(job)
                else:
                    await run_handler(job)
            except Exception as error:
                run.emit(await failed(job, error))
            else:
                deleted = _Deleted(run, job)
                if not job._delete_to(deleted):
                    # Off the client's loop (jobs from elsewhere): the Observable hands
                    # the delete over to that loop.
                    try:
                        job_id = await job.delete()
                    except Exception as error:
                        deleted.reject(error)
                    else:
                        deleted.resolve(job_id)
        except asyncio.CancelledError:
            run.in_flight -= 1  # no outcome for a cancelled handler
            raise
        except Exception as error:  # settling itself failed: a connection problem
            run.fail(error)
        finally:
            run.tasks.discard(asyncio.current_task())

    def operator(source: reactivex.Observable[Job]) -> reactivex.Observable[Outcome]:
        def subscribe(
            observer: abc.ObserverBase[Outcome], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            run = _Run(observer)

            def on_next(job: Job) -> None:
                run.in_flight += 1
                task = asyncio.get_running_loop().create_task(handle(job, run))
                run.tasks.add(task)  # (the loop keeps only a weak reference)

            run.subscription = source.subscribe(
                on_next, run.on_error, run.on_completed, scheduler=scheduler
            )
            return Disposable(run.dispose)

        return reactivex.Observable(subscribe)

    return operator


class _Run:
    """One subscription of ``process``: its jobs in progress and where outcomes go.

    A job is in progress from its delivery until its outcome is known (its handler
    finished and its settle command was answered), and each one ends in ``emit`` or
    ``fail``. Outcomes are often emitted from the reply of a job's ``delete``, inside
    its connection's read: an observer's ``on_error`` or ``on_completed`` that raises
    is reported to the loop's exception handler, never let through to the connection.
    """

    __slots__ = ("in_flight", "observer", "source_done", "stopped", "subscription", "tasks")

    def __init__(self, observer: abc.ObserverBase[Outcome]) -> None:
        self.observer = observer
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.source_done = False
        self.stopped = False
        self.subscription: abc.DisposableBase | None = None

    def emit(self, outcome: Outcome) -> None:
        """A job's outcome is known."""
        self.in_flight -= 1
        if self.stopped:
            return
        try:
            self.observer.on_next(outcome)
        except Exception as broke:
            # The consumer broke: as with the stream itself, stop taking jobs and end
            # with its error (handlers in progress still settle their jobs).
            self.stopped = True
            if self.subscription is not None:
                self.subscription.dispose()
            self._end(broke)
            return
        if self.source_done and not self.in_flight:
            self.stopped = True
            self._end(None)

    def fail(self, error: BaseException) -> None:
        """Settling a job failed (a connection problem): the pipeline ends with it."""
        self.in_flight -= 1
        if not self.stopped:
            self.stopped = True
            self._end(error)

    def on_error(self, error: Exception) -> None:
        if not self.stopped:
            self.stopped = True
            self._end(error)

    def on_completed(self) -> None:
        self.source_done = True
        if not self.in_flight and not self.stopped:
            self.stopped = True
            self._end(None)

    def _end(self, error: BaseException | None) -> None:
        try:
            if error is None:
                self.observer.on_completed()
            else:
                self.observer.on_error(cast(Exception, error))
        except Exception as raised:
            loop = asyncio._get_running_loop()
            if loop is None:
                raise
            what = "on_completed" if error is None else "on_error"
            loop.call_exception_handler(
                {"message": f"rxbeanstalk: exception in {what}", "exception": raised}
            )

    def dispose(self) -> None:
        # Handlers in progress run on and settle their jobs: the stream gives them
        # drain_timeout; only their outcomes are no longer wanted.
        self.stopped = True
        if self.subscription is not None:
            self.subscription.dispose()


class _Deleted:
    """Where the ``delete`` of a handled job reports: its outcome."""

    __slots__ = ("job", "run")

    def __init__(self, run: _Run, job: Job) -> None:
        self.run = run
        self.job = job

    def resolve(self, value: Any) -> None:
        self.run.emit(Outcome(self.job, Action.DELETED, None, "handled; deleted"))

    def reject(self, error: BaseException) -> None:
        if isinstance(error, JobSettledError):
            self.run.emit(
                Outcome(self.job, Action.SETTLED_ELSEWHERE, None, "settled by another subscriber")
            )
        elif isinstance(error, JobLostError):
            self.run.emit(
                Outcome(self.job, Action.LOST, None, f"handled, but not deleted: {error}")
            )
        else:
            self.run.fail(error)


_NEVER_RETRIED = (InvalidArgumentError, BadFormatError, UnknownCommandError)


def retry_with_backoff(
    max_tries: int | None = None,
    base: float = 0.5,
    cap: float = 30.0,
    *,
    retryable: tuple[type[BaseException], ...] = (TransportError, ProtocolError),
) -> Callable[[reactivex.Observable[T]], reactivex.Observable[T]]:
    """Subscribe again after an error, waiting longer after each consecutive failure.

    .. code::

        --a--b--X                (X: ConnectionLostError)
                 ...wait base...
                 --c--X
                       ...wait 2*base...
                       --d--e--|
        [ retry_with_backoff() ]
        --a--b-----c-----------d--e--|

    The wait before try ``n`` is ``min(cap, base * 2**(n-1))`` times a random factor
    between 0.5 and 1 (so many clients do not retry in step). The count starts again
    once a value arrives, so a long-lived stream survives any number of separate
    failures. Errors that are not ``retryable`` pass through at once, and so do
    ``InvalidArgumentError``, ``BadFormatError`` and ``UnknownCommandError`` always:
    trying again cannot cure them. The wait runs on the event loop the error arrives on
    (the client's), so no thread is involved.

    Args:
        max_tries: Subscriptions in a row that may fail before the error is passed on
            (like ``ops.retry(n)``, the first one counts); ``None`` for no limit.
        base: The first wait, in seconds.
        cap: The longest wait, in seconds.
        retryable: The error types worth another try.

    Returns:
        The operator.

    Raises:
        InvalidArgumentError: a bad argument (at call time).
    """
    if max_tries is not None and (
        isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1
    ):
        raise InvalidArgumentError(f"max_tries must be an int >= 1 or None, got {max_tries!r}")
    for value, what in ((base, "base"), (cap, "cap")):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InvalidArgumentError(f"{what} must be a number >= 0, got {value!r}")

    def operator(source: reactivex.Observable[T]) -> reactivex.Observable[T]:
        def subscribe(
            observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            current = SerialDisposable()
            state: dict[str, Any] = {"failures": 0, "stopped": False, "timer": None}

            def on_next(value: T) -> None:
                state["failures"] = 0
                observer.on_next(value)

            def on_error(error: Exception) -> None:
                if state["stopped"]:
                    return
                state["failures"] += 1
                failures = state["failures"]
                give_up = (
                    isinstance(error, _NEVER_RETRIED)
                    or not isinstance(error, retryable)
                    or (max_tries is not None and failures >= max_tries)
                )
                if give_up:
                    state["stopped"] = True
                    observer.on_error(error)
                    return
                delay = min(cap, base * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)
                loop = asyncio._get_running_loop()
                if loop is not None:
                    state["timer"] = loop.call_later(delay, attempt)
                else:
                    timer = reactivex.scheduler.TimeoutScheduler.singleton()
                    state["timer"] = timer.schedule_relative(delay, lambda *_: attempt())

            def on_completed() -> None:
                if not state["stopped"]:
                    state["stopped"] = True
                    observer.on_completed()

            def attempt() -> None:
                state["timer"] = None
                if not state["stopped"]:
                    current.disposable = source.subscribe(
                        on_next, on_error, on_completed, scheduler=scheduler
                    )

            def dispose() -> None:
                state["stopped"] = True
                timer = state["timer"]
                if timer is not None:
                    if isinstance(timer, asyncio.TimerHandle):
                        timer.cancel()
                    else:
                        timer.dispose()
                current.dispose()

            attempt()
            return Disposable(dispose)

        return reactivex.Observable(subscribe)

    return operator

"""``retry_with_backoff`` on plain reactivex sources, and ``process``'s own contract.

``retry_with_backoff`` needs no server: its sources are ``rx.throw`` and counting
``rx.defer`` factories. Its waits run on the running event loop when there is one, and on
reactivex's timeout thread otherwise; both are tested.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import reactivex as rx

from rxbeanstalk import Client, Job
from rxbeanstalk import operators as bops
from rxbeanstalk.errors import (
    BadFormatError,
    BeanstalkError,
    CommandTimeoutError,
    ConnectError,
    ConnectionLostError,
    InvalidArgumentError,
    JobSettledError,
    NotFoundError,
    ProtocolError,
    UnknownCommandError,
)
from rxbeanstalk.operators import Action
from rxbeanstalk.testing import BeanstalkdServer
from tests.conftest import eventually, run, stat, within

# Long enough for a retry that should not happen to have happened.
QUIET = 0.15


class Sink:
    """Records a subscription's values and end; the end may come from any thread."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.error: Exception | None = None
        self.completed = False
        self.ended = threading.Event()
        self.end_thread: int | None = None

    def on_next(self, value: Any) -> None:
        self.values.append(value)

    def on_error(self, error: Exception) -> None:
        self.error = error
        self._end()

    def on_completed(self) -> None:
        self.completed = True
        self._end()

    def _end(self) -> None:
        self.end_thread = threading.get_ident()
        self.ended.set()

    def subscribe(self, observable: rx.Observable[Any]) -> Any:
        return observable.subscribe(self.on_next, self.on_error, self.on_completed)

    async def wait(self, seconds: float = 5.0) -> None:
        await eventually(self.ended.is_set, "the sequence ended", seconds)


class Counted:
    """A cold source that counts its subscriptions and fails each with ``errors[n]``.

    Subscription ``n`` emits ``values_each`` values (``n`` itself), then fails with
    ``errors[n]``, or completes once the errors run out.
    """

    def __init__(self, *errors: Exception, values_each: int = 0) -> None:
        self.errors = errors
        self.values_each = values_each
        self.times: list[float] = []
        self.threads: list[int] = []

    @property
    def subscriptions(self) -> int:
        return len(self.times)

    def observable(self) -> rx.Observable[int]:
        def factory(_: Any) -> rx.Observable[int]:
            n = len(self.times)
            self.times.append(time.monotonic())
            self.threads.append(threading.get_ident())
            values: rx.Observable[int] = rx.from_iterable([n] * self.values_each)
            if n < len(self.errors):
                return rx.concat(values, rx.throw(self.errors[n]))
            return values

        return rx.defer(factory)


def lost(n: int = 1) -> list[Exception]:
    return [ConnectionLostError(f"lost #{i}") for i in range(n)]


# ----------------------------------------------------------------------------- retry


def test_gives_up_after_max_tries_subscriptions() -> None:
    async def main() -> None:
        errors = lost(10)
        source = Counted(*errors)
        sink = Sink()
        sink.subscribe(source.observable().pipe(bops.retry_with_backoff(max_tries=3, base=0.001)))
        await sink.wait()
        assert source.subscriptions == 3
        assert sink.error is errors[2]
        # Every retry ran on the loop's own thread (no timer thread involved).
        assert set(source.threads) == {threading.get_ident()}

    asyncio.run(main())


def test_rx_throw_with_one_try_is_not_retried() -> None:
    async def main() -> None:
        error = ProtocolError("garbage")
        sink = Sink()
        sink.subscribe(rx.throw(error).pipe(bops.retry_with_backoff(max_tries=1)))
        assert sink.ended.is_set()  # at once, no wait at all
        assert sink.error is error

    asyncio.run(main())


@pytest.mark.parametrize(
    "error",
    [
        ConnectionLostError("dropped"),
        ConnectError("refused"),
        CommandTimeoutError("silence"),
        ProtocolError("garbage"),
    ],
    ids=type,
)
def test_transport_and_protocol_errors_are_retried(error: Exception) -> None:
    async def main() -> None:
        source = Counted(error, error)
        sink = Sink()
        sink.subscribe(source.observable().pipe(bops.retry_with_backoff(base=0.001)))
        await sink.wait()
        assert sink.completed and sink.error is None
        assert source.subscriptions == 3

    asyncio.run(main())


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgumentError("bad tube"),
        BadFormatError("BAD_FORMAT"),
        UnknownCommandError("UNKNOWN_COMMAND"),
    ],
    ids=type,
)
def test_never_retries_what_a_retry_cannot_cure(error: Exception) -> None:
    async def main() -> None:
        source = Counted(error, error)
        sink = Sink()
        # Even when told that everything is retryable.
        operator = bops.retry_with_backoff(base=0.001, retryable=(Exception,))
        sink.subscribe(source.observable().pipe(operator))
        assert sink.ended.is_set() and sink.error is error
        await asyncio.sleep(QUIET)
        assert source.subscriptions == 1

    asyncio.run(main())


@pytest.mark.parametrize(
    "error",
    [ValueError("app bug"), NotFoundError("NOT_FOUND"), JobSettledError("twice")],
    ids=type,
)
def test_non_retryable_errors_pass_through_at_once(error: Exception) -> None:
    async def main() -> None:
        source = Counted(error)
        sink = Sink()
        sink.subscribe(source.observable().pipe(bops.retry_with_backoff(base=10)))
        assert sink.ended.is_set()  # synchronously: no timer was involved
        assert sink.error is error
        assert source.subscriptions == 1

    asyncio.run(main())


def test_retryable_can_be_narrowed_and_widened() -> None:
    async def main() -> None:
        narrow = Counted(ProtocolError("x"))
        sink = Sink()
        sink.subscribe(
            narrow.observable().pipe(bops.retry_with_backoff(retryable=(ConnectionLostError,)))
        )
        assert sink.ended.is_set() and isinstance(sink.error, ProtocolError)

        wide = Counted(KeyError("flaky"), NotFoundError("flaky"))
        sink = Sink()
        operator = bops.retry_with_backoff(base=0.001, retryable=(KeyError, BeanstalkError))
        sink.subscribe(wide.observable().pipe(operator))
        await sink.wait()
        assert sink.completed and wide.subscriptions == 3

    asyncio.run(main())


def test_a_value_resets_the_count() -> None:
    async def main() -> None:
        # Every subscription emits a value before failing: with max_tries=2 the count
        # never reaches 2, so five failures in all are survived.
        source = Counted(*lost(5), values_each=1)
        sink = Sink()
        sink.subscribe(source.observable().pipe(bops.retry_with_backoff(max_tries=2, base=0.001)))
        await sink.wait()
        assert sink.completed and sink.error is None
        assert sink.values == [0, 1, 2, 3, 4, 5]

        # Without values in between, the second failure in a row is passed on.
        silent = Counted(*lost(5))
        sink = Sink()
        sink.subscribe(silent.observable().pipe(bops.retry_with_backoff(max_tries=2, base=0.001)))
        await sink.wait()
        assert isinstance(sink.error, ConnectionLostError) and silent.subscriptions == 2

    asyncio.run(main())


def test_completion_and_values_pass_through() -> None:
    async def main() -> None:
        sink = Sink()
        sink.subscribe(rx.of(1, 2, 3).pipe(bops.retry_with_backoff(max_tries=1)))
        assert sink.values == [1, 2, 3] and sink.completed

    asyncio.run(main())


def test_waits_grow_and_are_capped() -> None:
    base = 0.04

    async def main() -> None:
        source = Counted(*lost(4))
        sink = Sink()
        sink.subscribe(source.observable().pipe(bops.retry_with_backoff(base=base, cap=0.1)))
        await sink.wait()
        assert sink.completed
        gaps = [b - a for a, b in zip(source.times, source.times[1:], strict=False)]
        # Wait n is min(cap, base * 2**(n-1)) times a factor in [0.5, 1].
        for n, gap in enumerate(gaps, start=1):
            full = min(0.1, base * 2 ** (n - 1))
            assert 0.5 * full - 0.005 <= gap <= full + 0.1, (n, gaps)

    asyncio.run(main())


def test_cap_bounds_a_huge_base() -> None:
    async def main() -> None:
        source = Counted(*lost(3))
        sink = Sink()
        sink.subscribe(source.observable().pipe(bops.retry_with_backoff(base=1000, cap=0.01)))
        await sink.wait(2)
        assert sink.completed and source.subscriptions == 4

    asyncio.run(main())


def test_dispose_cancels_a_pending_retry() -> None:
    async def main() -> None:
        source = Counted(*lost(3))
        sink = Sink()
        subscription = sink.subscribe(
            source.observable().pipe(bops.retry_with_backoff(base=0.05, cap=0.05))
        )
        assert source.subscriptions == 1  # failed; a retry is waiting
        subscription.dispose()
        await asyncio.sleep(QUIET)
        assert source.subscriptions == 1
        assert not sink.ended.is_set()

    asyncio.run(main())


def test_without_a_loop_the_wait_runs_on_a_timer_thread() -> None:
    source = Counted(*lost(2))
    sink = Sink()
    sink.subscribe(source.observable().pipe(bops.retry_with_backoff(base=0.01)))
    assert sink.ended.wait(5)
    assert sink.completed and source.subscriptions == 3
    assert source.threads[0] == threading.get_ident()
    assert threading.get_ident() not in source.threads[1:]


def test_without_a_loop_dispose_cancels_a_pending_retry() -> None:
    source = Counted(*lost(3))
    sink = Sink()
    subscription = sink.subscribe(
        source.observable().pipe(bops.retry_with_backoff(base=0.05, cap=0.05))
    )
    subscription.dispose()
    time.sleep(QUIET)  # the retry, if not cancelled, would have run by now
    assert source.subscriptions == 1
    assert not sink.ended.is_set()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_tries": 0},
        {"max_tries": -1},
        {"max_tries": 1.5},
        {"max_tries": True},
        {"max_tries": "3"},
        {"base": -0.1},
        {"base": "1"},
        {"base": True},
        {"cap": -1},
        {"cap": None},
    ],
)
def test_retry_rejects_bad_arguments_at_call_time(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        bops.retry_with_backoff(**kwargs)


# ----------------------------------------------------------------------------- process


async def _handler(job: Job) -> None:
    pass


@pytest.mark.parametrize(
    ("handler", "kwargs"),
    [
        (None, {}),
        ("not callable", {}),
        (_handler, {"on_error": "drop"}),
        (_handler, {"on_error": None}),
        (_handler, {"release_delay": -1}),
        (_handler, {"release_delay": 1.5}),
        (_handler, {"release_delay": True}),
        (_handler, {"release_delay": 2**32}),
        (_handler, {"max_releases": -1}),
        (_handler, {"max_releases": 2.0}),
        (_handler, {"max_releases": False}),
        (_handler, {"timeout": 0}),
        (_handler, {"timeout": -1}),
        (_handler, {"timeout": "1"}),
        (_handler, {"timeout": True}),
        (_handler, {"timeout": float("nan")}),
    ],
)
def test_process_rejects_bad_arguments_at_call_time(handler: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        bops.process(handler, **kwargs)


def test_process_passes_a_source_error_on_at_once() -> None:
    async def main() -> None:
        error = ConnectionLostError("lanes closed")
        sink = Sink()
        sink.subscribe(rx.throw(error).pipe(bops.process(_handler)))
        assert sink.ended.is_set() and sink.error is error

        sink = Sink()
        sink.subscribe(rx.empty().pipe(bops.process(_handler)))
        assert sink.ended.is_set() and sink.completed

    asyncio.run(main())


def test_process_completes_after_its_last_handler(beanstalkd: BeanstalkdServer) -> None:
    client = Client(port=beanstalkd.port)

    async def main() -> list[Any]:
        await within(client.put_many([b"a", b"b"]))
        jobs = [await within(client.reserve(timeout=1)) for _ in range(2)]
        gate = asyncio.Event()

        async def handler(job: Job) -> None:
            await gate.wait()

        sink = Sink()
        sink.subscribe(rx.from_iterable(jobs).pipe(bops.process(handler)))
        await asyncio.sleep(QUIET)
        assert not sink.ended.is_set()  # the source completed; the handlers still run
        gate.set()
        await sink.wait()
        assert sink.completed
        return sink.values

    outcomes = run(main(), client)
    assert [outcome.action for outcome in outcomes] == [Action.DELETED, Action.DELETED]
    assert stat(beanstalkd, "cmd-delete") == 2
    assert stat(beanstalkd, "current-jobs-reserved") == 0

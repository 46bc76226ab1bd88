"""Shared fixtures and helpers of the client tests against a real beanstalkd.

The server fixtures (``beanstalkd``, ``beanstalkd_unix``, ``beanstalkd_module``) come from
``rxbeanstalk.testing.pytest_plugin``. The helpers below are plain functions; test modules
import them with ``from tests.conftest import ...`` (they keep no module state, so the
second import pytest makes of this file does no harm).

Rules the helpers enforce: every ``asyncio.run`` has an overall bound, and waiting for a
condition is polling with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import reactivex

from rxbeanstalk import Client
from rxbeanstalk.testing import BeanstalkdServer

T = TypeVar("T")

# Counters that a raw stats query moves by itself: its own connection and its own command.
_SELF_COUNTED = {"total-connections": 1, "cmd-stats": 1}


# The 23 reply words of beanstalkd 1.12/1.13 (protocol.md 1.5), written out here rather
# than taken from the library under test.
REPLY_WORDS = frozenset(
    {
        "INSERTED",
        "BURIED",
        "EXPECTED_CRLF",
        "JOB_TOO_BIG",
        "DRAINING",
        "USING",
        "RESERVED",
        "DEADLINE_SOON",
        "TIMED_OUT",
        "DELETED",
        "NOT_FOUND",
        "RELEASED",
        "TOUCHED",
        "WATCHING",
        "NOT_IGNORED",
        "FOUND",
        "KICKED",
        "OK",
        "PAUSED",
        "OUT_OF_MEMORY",
        "INTERNAL_ERROR",
        "BAD_FORMAT",
        "UNKNOWN_COMMAND",
    }
)


# ----------------------------------------------------------------------------- running


def run(main: Awaitable[T], *clients: Client, timeout: float = 20.0) -> T:
    """Run ``main`` in a fresh event loop, bounded by ``timeout`` seconds in all.

    ``clients`` are closed on that loop when ``main`` ends (however it ends), so their
    connections never outlive the loop they belong to.
    """

    async def bounded() -> T:
        try:
            async with asyncio.timeout(timeout):
                return await main
        finally:
            for client in clients:
                client.close()

    return asyncio.run(bounded())


def make_client(server: BeanstalkdServer, **options: Any) -> Client:
    """A ``Client`` pointed at ``server`` (TCP or unix), with extra ``Client`` options."""
    kwargs: dict[str, Any] = {**server.client_kwargs(), **options}
    return Client(**kwargs)


@pytest.fixture
def client(beanstalkd: BeanstalkdServer) -> Iterator[Client]:
    """A client of the per-test ``beanstalkd``, closed after the test.

    Pass it to ``run(main(), client)`` so that it is closed on the loop it used.
    """
    made = make_client(beanstalkd)
    try:
        yield made
    finally:
        made.close()


# ----------------------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], object], what: str = "", timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"not true within {timeout} s: {what or predicate}")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


async def eventually(predicate: Callable[[], object], what: str = "", timeout: float = 5.0) -> None:
    """``wait_until`` for coroutines: polls without blocking the event loop."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"not true within {timeout} s: {what or predicate}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)


async def within(awaitable: Awaitable[T], seconds: float = 5.0) -> T:
    """Await with a bound."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def collect(observable: reactivex.Observable[T], timeout: float = 10.0) -> list[T]:
    """Subscribe with callbacks and gather every value until completion (or raise)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[T]] = loop.create_future()
    values: list[T] = []

    def on_error(error: Exception) -> None:
        if not done.done():
            done.set_exception(error)

    def on_completed() -> None:
        if not done.done():
            done.set_result(values)

    subscription = observable.subscribe(values.append, on_error, on_completed)
    try:
        async with asyncio.timeout(timeout):
            return await done
    finally:
        subscription.dispose()


# ----------------------------------------------------------------------------- server views


def stat(server: BeanstalkdServer, key: str, tube: str | None = None) -> int:
    """One integer field of the server's (or a tube's) stats, read with a raw socket."""
    return int(server.stats(tube)[key])


def job_state(server: BeanstalkdServer, job_id: int) -> str | None:
    """The job's state as the server reports it (raw ``stats-job``), ``None`` if gone."""
    try:
        return server.stats_job(job_id)["state"]
    except LookupError:
        return None


def counters(server: BeanstalkdServer) -> dict[str, int]:
    """Every ``cmd-*`` counter plus connection and job totals, from a raw ``stats``."""
    stats = server.stats()
    keys = [k for k in stats if k.startswith("cmd-")] + ["total-connections", "total-jobs"]
    return {key: int(stats[key]) for key in keys}


def activity(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What happened on the server between two ``counters`` snapshots.

    The second snapshot's own connection and ``stats`` command are not counted, so an
    empty result means nobody sent anything in between.
    """
    moved = {}
    for key, value in after.items():
        delta = value - before.get(key, 0) - _SELF_COUNTED.get(key, 0)
        if delta:
            moved[key] = delta
    return moved

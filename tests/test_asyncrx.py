"""rxbeanstalk.asyncrx (the aioreactive flavour) against a real beanstalkd.

aioreactive 0.20 pins reactivex<5, so these tests run in the reactivex-4.1 environment,
where aioreactive must be installed (its absence fails the module). In the reactivex-6
environment they are skipped, except the one that checks the import error names the extra.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import reactivex

from rxbeanstalk import (
    BeanstalkError,
    ConnectError,
    InvalidArgumentError,
    Job,
    JobLostError,
    NotFoundError,
    ServerStats,
    TimedOutError,
    TransportError,
)
from rxbeanstalk.testing import BeanstalkdServer
from tests.conftest import eventually, stat

aioreactive: Any
try:
    aioreactive = importlib.import_module("aioreactive")
except ImportError:
    if reactivex.__version__.startswith("4"):
        raise  # the reactivex-4 environment is the one that must run these tests
    aioreactive = None

HAVE_AIOREACTIVE = aioreactive is not None

if HAVE_AIOREACTIVE:
    from rxbeanstalk.asyncrx import AsyncClient

needs_aioreactive = pytest.mark.skipif(
    not HAVE_AIOREACTIVE,
    reason="aioreactive 0.20 needs reactivex<5: run in the reactivex-4.1 environment",
)

EXTRA_HINT = "pip install 'rxbeanstalk[asyncrx]'"


# -- helpers --------------------------------------------------------------------------


def run(main: Callable[[], Coroutine[Any, Any, None]], timeout: float = 20.0) -> None:
    """Run ``main()`` in a fresh loop, bounded by ``timeout``."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await main()

    asyncio.run(bounded())


async def baseline_connections(client: Any, server: BeanstalkdServer) -> int:
    """Open the client's command connection; the server's connection count then."""
    await client.client.stats()
    return stat(server, "current-connections")


# An aioreactive AsyncObserver where aioreactive is installed (a plain base elsewhere,
# where the tests that use it are skipped).
ObserverBase: Any = aioreactive.AsyncObserver if HAVE_AIOREACTIVE else object


class Recorder(ObserverBase):  # type: ignore[misc]
    """An async observer that records what it gets."""

    def __init__(self, on_value: Callable[[Any], Coroutine[Any, Any, None]] | None = None):
        super().__init__()
        self.values: list[Any] = []
        self.error: Exception | None = None
        self.closed = False
        self.done = asyncio.Event()
        self._on_value = on_value

    async def asend(self, value: Any) -> None:
        self.values.append(value)
        if self._on_value is not None:
            await self._on_value(value)

    async def athrow(self, error: Exception) -> None:
        self.error = error
        self.done.set()

    async def aclose(self) -> None:
        self.closed = True
        self.done.set()


# -- the import guard -----------------------------------------------------------------


def test_import_without_aioreactive_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aioreactive", None)  # makes `import aioreactive` fail
    for name in list(sys.modules):
        if name == "rxbeanstalk.asyncrx" or name.startswith("rxbeanstalk._asyncrx"):
            monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=re.escape(EXTRA_HINT)):
        importlib.import_module("rxbeanstalk.asyncrx")


# -- commands -------------------------------------------------------------------------


@needs_aioreactive
def test_commands_are_cold_and_send_once_per_subscription(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            put = client.put(b"hello")
            client.delete(1)
            client.use("elsewhere")
            # A stats on the same (pipelined) connection would come after them.
            stats: ServerStats = await aioreactive.run(client.stats(), timeout=5)
            assert stats.cmd_put == 0
            assert stats.cmd_delete == 0
            assert stats.cmd_use == 0
            assert stat(beanstalkd, "cmd-put") == 0

            first = await aioreactive.run(put, timeout=5)
            assert stat(beanstalkd, "cmd-put") == 1
            second = await aioreactive.run(put, timeout=5)
            assert stat(beanstalkd, "cmd-put") == 2
            assert second == first + 1
            assert stat(beanstalkd, "current-jobs-ready") == 2

    run(main)


@needs_aioreactive
def test_command_values_then_aclose(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            recorder = Recorder()
            await client.put_many([b"a", b"b", "c"], tube="many").subscribe_async(recorder)
            await asyncio.wait_for(recorder.done.wait(), 5)
            assert recorder.closed and recorder.error is None
            assert len(recorder.values) == 3
            assert recorder.values == sorted(recorder.values)
            assert stat(beanstalkd, "cmd-put") == 3

            assert await aioreactive.run(client.use("many"), timeout=5) == "many"
            assert await aioreactive.run(client.list_tube_used(), timeout=5) == "many"
            job = await aioreactive.run(client.peek_ready(), timeout=5)
            assert isinstance(job, Job)
            assert (job.id, job.body) == (recorder.values[0], b"a")
            tube = await aioreactive.run(client.stats_tube("many"), timeout=5)
            assert tube.current_jobs_ready == 3
            assert "many" in await aioreactive.run(client.list_tubes(), timeout=5)
            reply = await aioreactive.run(client.command("list-tube-used"), timeout=5)
            assert reply.status == "USING"

            await aioreactive.run(client.watch("many"), timeout=5)
            reserved = await aioreactive.run(client.reserve(timeout=0), timeout=5)
            assert reserved.reserved
            assert await aioreactive.run(client.delete(reserved), timeout=5) == reserved.id
            assert stat(beanstalkd, "cmd-delete") == 1
            assert stat(beanstalkd, "current-jobs-reserved") == 0

    run(main)


@needs_aioreactive
def test_typed_errors_arrive_by_athrow(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            recorder = Recorder()
            await client.peek(424242).subscribe_async(recorder)
            await asyncio.wait_for(recorder.done.wait(), 5)
            assert isinstance(recorder.error, NotFoundError)
            assert recorder.values == [] and not recorder.closed

            with pytest.raises(NotFoundError):
                await aioreactive.run(client.peek(424242), timeout=5)
            with pytest.raises(TimedOutError):
                await aioreactive.run(client.reserve(timeout=0), timeout=5)

    run(main)


@needs_aioreactive
def test_invalid_arguments_raise_at_call_time(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                client.put(b"x", priority=-1)
            with pytest.raises(InvalidArgumentError):
                client.put(b"x", tube="-bad")
            with pytest.raises(InvalidArgumentError):
                client.reserve(timeout=-1)
            with pytest.raises(InvalidArgumentError):
                client.reserve_stream(max_in_flight=0)
            with pytest.raises(InvalidArgumentError):
                client.reserve_stream(tubes="emails")
            stats = await aioreactive.run(client.stats(), timeout=5)
            assert stats.cmd_put == 0

    run(main)


@needs_aioreactive
def test_disposing_a_waiting_reserve_loses_no_job(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            baseline = await baseline_connections(client, beanstalkd)
            recorder = Recorder()
            subscription = await client.reserve().subscribe_async(recorder)
            await eventually(lambda: stat(beanstalkd, "current-waiting") == 1, "reserve waits")
            await subscription.dispose_async()
            await eventually(
                lambda: stat(beanstalkd, "current-connections") == baseline,
                "the reserving connection closed",
            )
            await client.client.put(b"later")
            assert stat(beanstalkd, "current-jobs-ready") == 1
            assert recorder.values == [] and not recorder.done.is_set()

    run(main)


# -- reserve_stream -------------------------------------------------------------------


@needs_aioreactive
def test_reserve_stream_asend_is_the_backpressure(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            ids = [await client.client.put(f"job {i}") for i in range(10)]
            gate = asyncio.Event()
            all_done = asyncio.Event()
            processed: list[int] = []
            active = 0
            most_active = 0
            most_reserved = 0

            async def asend(job: Job) -> None:
                nonlocal active, most_active, most_reserved
                active += 1
                most_active = max(most_active, active)
                await gate.wait()
                stats = await client.client.stats()
                most_reserved = max(most_reserved, stats.current_jobs_reserved)
                processed.append(job.id)
                await job.delete()
                active -= 1
                if len(processed) == len(ids):
                    all_done.set()

            stream = client.reserve_stream(max_in_flight=3)
            subscription = await stream.subscribe_async(asend)
            await eventually(
                lambda: stat(beanstalkd, "current-jobs-reserved") == 3, "three jobs reserved"
            )
            # The first asend blocks: the other two lanes hold their jobs and reserve
            # nothing more, however long we look.
            for _ in range(20):
                assert stat(beanstalkd, "current-jobs-reserved") <= 3
                assert stat(beanstalkd, "current-jobs-ready") == 7
                await asyncio.sleep(0.005)
            assert active == 1

            gate.set()
            await asyncio.wait_for(all_done.wait(), 10)
            await subscription.dispose_async()

            assert sorted(processed) == ids
            assert most_active == 1  # asend calls never overlapped
            assert most_reserved <= 3
            server = beanstalkd.stats()
            assert server["cmd-delete"] == "10"
            assert server["current-jobs-ready"] == "0"
            assert server["current-jobs-reserved"] == "0"

    run(main)


@needs_aioreactive
def test_dispose_returns_unsettled_jobs_and_closes_lanes(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            baseline = await baseline_connections(client, beanstalkd)
            for i in range(5):
                await client.client.put(f"job {i}")
            held: list[Job] = []

            async def asend(job: Job) -> None:
                held.append(job)  # kept, never settled

            stream = client.reserve_stream(max_in_flight=3, drain_timeout=0.3)
            subscription = await stream.subscribe_async(asend)
            await eventually(
                lambda: len(held) == 3 and stat(beanstalkd, "current-jobs-reserved") == 3,
                "three jobs delivered",
            )
            assert stat(beanstalkd, "current-connections") == baseline + 3
            await subscription.dispose_async()
            await eventually(
                lambda: (
                    stat(beanstalkd, "current-jobs-ready") == 5
                    and stat(beanstalkd, "current-jobs-reserved") == 0
                    and stat(beanstalkd, "current-connections") == baseline
                ),
                "jobs back to ready, lanes closed",
            )
            assert len(held) == 3
            with pytest.raises(JobLostError):
                await held[0].delete()

    run(main)


@needs_aioreactive
def test_dispose_closes_waiting_lanes_at_once_and_drains(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            baseline = await baseline_connections(client, beanstalkd)
            for i in range(2):
                await client.client.put(f"job {i}")
            held: list[Job] = []

            async def asend(job: Job) -> None:
                held.append(job)

            stream = client.reserve_stream(max_in_flight=3, drain_timeout=60)
            subscription = await stream.subscribe_async(asend)
            await eventually(
                lambda: len(held) == 2 and stat(beanstalkd, "current-waiting") == 1,
                "two jobs delivered, one lane waiting",
            )
            await subscription.dispose_async()
            await eventually(
                lambda: stat(beanstalkd, "current-connections") == baseline + 2,
                "the waiting lane closed at once",
            )
            await client.client.put(b"after dispose")
            assert stat(beanstalkd, "current-jobs-ready") == 1
            # Held jobs may still be settled while they drain; then their lanes close.
            await held[0].delete()
            await held[1].release()
            await eventually(
                lambda: stat(beanstalkd, "current-connections") == baseline,
                "drained lanes closed",
            )
            assert len(held) == 2
            assert stat(beanstalkd, "cmd-delete") == 1
            assert stat(beanstalkd, "current-jobs-ready") == 2

    run(main)


@needs_aioreactive
def test_undelivered_jobs_go_back_at_dispose(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            for i in range(3):
                await client.client.put(f"job {i}")
            gate = asyncio.Event()
            delivered: list[Job] = []

            async def asend(job: Job) -> None:
                delivered.append(job)
                await gate.wait()
                await job.delete()

            stream = client.reserve_stream(max_in_flight=3, drain_timeout=60)
            subscription = await stream.subscribe_async(asend)
            await eventually(
                lambda: stat(beanstalkd, "current-jobs-reserved") == 3, "three jobs reserved"
            )
            await subscription.dispose_async()
            await eventually(
                lambda: stat(beanstalkd, "current-jobs-ready") == 2,
                "the two queued jobs went back at once",
            )
            gate.set()
            await eventually(
                lambda: (
                    stat(beanstalkd, "cmd-delete") == 1
                    and stat(beanstalkd, "current-jobs-reserved") == 0
                ),
                "the delivered job was settled during the drain",
            )
            assert len(delivered) == 1

    run(main)


@needs_aioreactive
def test_each_subscription_has_its_own_lanes(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            for i in range(4):
                await client.client.put(f"job {i}")
            first, second = Recorder(), Recorder()
            stream = client.reserve_stream(max_in_flight=1, drain_timeout=0)
            one = await stream.subscribe_async(first)
            two = await stream.subscribe_async(second)
            await eventually(
                lambda: len(first.values) == 1 and len(second.values) == 1, "one job each"
            )
            assert first.values[0].id != second.values[0].id
            assert stat(beanstalkd, "current-jobs-reserved") == 2
            await one.dispose_async()
            await two.dispose_async()
            await eventually(lambda: stat(beanstalkd, "current-jobs-ready") == 4, "both jobs back")

    run(main)


@needs_aioreactive
def test_reserve_stream_takes_the_given_tubes(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            await client.client.put(b"default job")
            wanted = await client.client.put(b"email", tube="emails")
            got: list[Job] = []

            async def asend(job: Job) -> None:
                got.append(job)
                await job.delete()

            subscription = await client.reserve_stream(["emails"]).subscribe_async(asend)
            await eventually(lambda: len(got) == 1, "the emails job")
            await subscription.dispose_async()
            assert got[0].id == wanted
            assert stat(beanstalkd, "current-jobs-ready") == 1

    run(main)


@needs_aioreactive
def test_asend_that_raises_ends_the_stream(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            baseline = await baseline_connections(client, beanstalkd)
            await client.client.put(b"poison")

            async def explode(job: Job) -> None:
                raise RuntimeError("handler broke")

            recorder = Recorder(explode)
            await client.reserve_stream(max_in_flight=2).subscribe_async(recorder)
            await asyncio.wait_for(recorder.done.wait(), 5)
            assert isinstance(recorder.error, RuntimeError)
            await eventually(
                lambda: (
                    stat(beanstalkd, "current-jobs-ready") == 1
                    and stat(beanstalkd, "current-connections") == baseline
                ),
                "the job went back and the lanes closed",
            )

    run(main)


@needs_aioreactive
def test_connection_failure_arrives_by_athrow(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            recorder = Recorder()
            await client.reserve_stream(max_in_flight=2).subscribe_async(recorder)
            await eventually(lambda: stat(beanstalkd, "current-waiting") == 2, "lanes waiting")
            beanstalkd.kill()
            await asyncio.wait_for(recorder.done.wait(), 10)
            assert isinstance(recorder.error, TransportError)
            assert not recorder.closed

    run(main)


@needs_aioreactive
def test_connect_failure_arrives_by_athrow(beanstalkd: BeanstalkdServer) -> None:
    beanstalkd.stop()

    async def main() -> None:
        async with AsyncClient(**beanstalkd.client_kwargs()) as client:  # type: ignore[arg-type]
            recorder = Recorder()
            await client.reserve_stream().subscribe_async(recorder)
            await asyncio.wait_for(recorder.done.wait(), 10)
            assert isinstance(recorder.error, ConnectError)

            recorder = Recorder()
            await client.stats().subscribe_async(recorder)
            await asyncio.wait_for(recorder.done.wait(), 10)
            assert isinstance(recorder.error, BeanstalkError)

    run(main)


@needs_aioreactive
def test_close_ends_running_streams(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        client = AsyncClient(**beanstalkd.client_kwargs())  # type: ignore[arg-type]
        baseline = await baseline_connections(client, beanstalkd) - 1
        recorder = Recorder()
        await client.reserve_stream(max_in_flight=2).subscribe_async(recorder)
        await eventually(lambda: stat(beanstalkd, "current-waiting") == 2, "lanes waiting")
        await client.close()
        await asyncio.wait_for(recorder.done.wait(), 5)
        assert recorder.closed and recorder.error is None
        await eventually(
            lambda: stat(beanstalkd, "current-connections") == baseline, "every connection closed"
        )
        client.close()  # twice is fine

    run(main)

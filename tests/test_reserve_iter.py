"""``reserve_iter``: pull-driven backpressure, and every unsettled job back on exit."""

from __future__ import annotations

import asyncio

import pytest

from rxbeanstalk import Client, InvalidArgumentError, Job, LoopBindingError
from rxbeanstalk.testing import BeanstalkdServer
from tests.conftest import eventually, run, stat

# Long enough for a reserve that should NOT happen to show up in the server's counters.
QUIET = 0.2


def test_a_reserve_is_sent_only_when_pulled_and_a_credit_is_free(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await client.put_many([b"job%d" % i for i in range(6)])
        async with client.reserve_iter(max_in_flight=2) as jobs:
            it = aiter(jobs)
            await asyncio.sleep(QUIET)
            assert stat(beanstalkd, "current-jobs-reserved") == 0  # nothing pulled yet
            first = await anext(it)
            second = await anext(it)
            assert stat(beanstalkd, "current-jobs-reserved") == 2
            with pytest.raises(TimeoutError):  # no credit: the third pull waits
                async with asyncio.timeout(QUIET):
                    await anext(it)
            assert stat(beanstalkd, "current-jobs-reserved") == 2
            await first.delete()
            third = await anext(it)
            assert third.id not in (first.id, second.id)
            assert stat(beanstalkd, "current-jobs-reserved") == 2
            await second.delete()
            await third.delete()
        assert stat(beanstalkd, "cmd-delete") == 3
        await eventually(lambda: stat(beanstalkd, "current-jobs-ready") == 3)

    run(main(), client)


def test_break_puts_every_unsettled_job_back(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        await client.put_many([b"job%d" % i for i in range(5)])
        held: list[Job] = []
        async with client.reserve_iter(max_in_flight=3) as jobs:
            async for job in jobs:
                held.append(job)
                if len(held) == 3:
                    break
        await eventually(lambda: stat(beanstalkd, "current-jobs-reserved") == 0)
        assert stat(beanstalkd, "current-jobs-ready") == 5
        # The command connection and the stats query itself: every lane is closed.
        await eventually(lambda: stat(beanstalkd, "current-connections") == 2)
        with pytest.raises(Exception) as lost:
            await held[0].delete()
        assert type(lost.value).__name__ == "JobLostError"

    run(main(), client)


def test_an_exception_and_a_cancellation_put_jobs_back(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def consume() -> None:
        async with client.reserve_iter(max_in_flight=2) as jobs:
            async for _ in jobs:
                await asyncio.sleep(3600)  # a handler that never finishes

    async def main() -> None:
        await client.put_many([b"a", b"b"])
        with pytest.raises(RuntimeError):
            async with client.reserve_iter() as jobs:
                async for _ in jobs:
                    raise RuntimeError("handler failed")
        await eventually(lambda: stat(beanstalkd, "current-jobs-reserved") == 0)

        task = asyncio.get_running_loop().create_task(consume())
        await eventually(lambda: stat(beanstalkd, "current-jobs-reserved") == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await eventually(lambda: stat(beanstalkd, "current-jobs-reserved") == 0)
        assert stat(beanstalkd, "current-jobs-ready") == 2

    run(main(), client)


def test_a_pull_cancelled_by_a_timeout_keeps_its_job_for_the_next_pull(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        async with client.reserve_iter() as jobs:
            it = aiter(jobs)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(QUIET):
                    await anext(it)  # nothing ready: the reserve stays out
            job_id = await client.put(b"late")
            await eventually(lambda: stat(beanstalkd, "current-jobs-reserved") == 1)
            async with asyncio.timeout(5):
                job = await anext(it)
            assert (job.id, job.body) == (job_id, b"late")
            await job.delete()
        assert stat(beanstalkd, "cmd-delete") == 1
        assert stat(beanstalkd, "total-jobs") == 1

    run(main(), client)


def test_bad_arguments_and_the_wrong_loop_are_refused(client: Client) -> None:
    with pytest.raises(InvalidArgumentError):
        client.reserve_iter(max_in_flight=0)
    with pytest.raises(InvalidArgumentError):
        client.reserve_iter(tubes="emails")

    async def elsewhere() -> None:
        client.reserve_iter()

    async def main() -> None:
        await client.stats()  # binds the client to this loop
        errors: list[BaseException] = []

        def other_thread() -> None:
            try:
                asyncio.run(elsewhere())
            except BaseException as error:
                errors.append(error)

        await asyncio.to_thread(other_thread)
        assert len(errors) == 1 and isinstance(errors[0], LoopBindingError)

    run(main(), client)

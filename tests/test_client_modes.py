"""The three ways to use a client: await, callbacks, and plain ``.run()``.

Also loop binding, unix sockets, context managers, and disposing a pending reserve.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops

from rxbeanstalk import (
    Client,
    ConnectionLostError,
    Job,
    LoopBindingError,
    NotFoundError,
    TimedOutError,
)
from rxbeanstalk.testing import BeanstalkdServer
from tests.conftest import (
    activity,
    collect,
    counters,
    eventually,
    job_state,
    make_client,
    run,
    stat,
    wait_until,
    within,
)


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rxbeanstalk-loop"]


# ----------------------------------------------------------------------------- asyncio


def test_await_mode(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        assert client.loop is None  # construction did no I/O
        assert stat(beanstalkd, "current-connections") == 1  # just this query
        job_id = await client.put(b"async")
        assert client.loop is asyncio.get_running_loop()
        job = await client.reserve(0)
        assert (job.id, job.body) == (job_id, b"async")
        assert await job.delete() == job_id
        with pytest.raises(NotFoundError):
            await client.peek(job_id)

    run(main(), client)
    assert _loop_threads() == []  # no private loop was started


def test_cancelling_an_await_abandons_the_command(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await client.put(b"x", tube="elsewhere")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.reserve()  # nothing in default: waits until cancelled
        await eventually(lambda: stat(beanstalkd, "current-waiting") == 0)
        assert await client.put(b"still works") == 2

    run(main(), client)


# ----------------------------------------------------------------------------- callbacks


def test_callback_mode_delivers_on_the_loop_thread(client: Client) -> None:
    async def main() -> None:
        loop_thread = threading.get_ident()
        loop = asyncio.get_running_loop()
        events: list[tuple[str, Any, int]] = []
        done: asyncio.Future[None] = loop.create_future()

        def on_next(value: Any) -> None:
            events.append(("next", value, threading.get_ident()))

        def on_error(error: Exception) -> None:
            events.append(("error", type(error), threading.get_ident()))
            done.set_result(None)

        def on_completed() -> None:
            events.append(("completed", None, threading.get_ident()))
            done.set_result(None)

        client.put(b"cb").subscribe(on_next, on_error, on_completed)
        await done
        assert events == [("next", 1, loop_thread), ("completed", None, loop_thread)]

        events.clear()
        done = loop.create_future()
        client.peek(999).subscribe(on_next, on_error, on_completed)
        await done
        assert events == [("error", NotFoundError, loop_thread)]

        # Subscribed from a worker thread: still delivered on the loop thread.
        events.clear()
        done = loop.create_future()
        await asyncio.to_thread(lambda: client.stats().subscribe(on_next, on_error, on_completed))
        await done
        assert [(kind, thread) for kind, _, thread in events] == [
            ("next", loop_thread),
            ("completed", loop_thread),
        ]

    run(main(), client)


def _times_ten(job_id: int) -> int:
    return job_id * 10


def test_callback_mode_with_an_observer_and_operators(client: Client) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[int]] = loop.create_future()
        client.put_many([b"a", b"b", b"c"]).pipe(
            ops.map(_times_ten),
            ops.to_list(),
        ).subscribe(
            reactivex.Observer(
                on_next=done.set_result,
                on_error=done.set_exception,
            )
        )
        assert await done == [10, 20, 30]

        merged = await collect(reactivex.merge(client.put(b"d"), client.put(b"e")))
        assert sorted(merged) == [4, 5]
        tubes = await collect(client.list_tubes().pipe(ops.flat_map(reactivex.from_iterable)))
        assert tubes == ["default"]

    run(main(), client)


def test_callbacks_without_a_loop_run_on_the_private_loop(beanstalkd: BeanstalkdServer) -> None:
    client = make_client(beanstalkd)
    seen: list[tuple[Any, str]] = []
    finished = threading.Event()
    try:
        client.put(b"x").subscribe(
            lambda value: seen.append((value, threading.current_thread().name)),
            on_completed=finished.set,
        )
        assert finished.wait(5)
        assert seen == [(1, "rxbeanstalk-loop")]
    finally:
        client.close()


# ----------------------------------------------------------------------------- plain sync


def test_sync_mode_runs_a_private_loop_thread_and_close_stops_it(
    beanstalkd: BeanstalkdServer,
) -> None:
    assert _loop_threads() == []
    client = make_client(beanstalkd)
    job_id = client.put(b"sync").run()
    assert job_id == 1
    [thread] = _loop_threads()
    assert thread.daemon and thread.is_alive()
    job = client.reserve(timeout=0).run()
    assert isinstance(job, Job) and job.body == b"sync"
    assert job.touch().run() == job_id
    assert job.release(delay=100).run() == job_id
    assert job_state(beanstalkd, job_id) == "delayed"
    with pytest.raises(TimedOutError):
        client.reserve(timeout=0).run()
    with pytest.raises(NotFoundError):
        client.peek(999).run()
    assert client.stats().run().current_jobs_delayed == 1
    client.close()
    wait_until(lambda: not thread.is_alive(), what="the loop thread ended")
    assert _loop_threads() == []
    wait_until(lambda: stat(beanstalkd, "current-connections") == 1)
    client.close()  # twice is fine


def test_run_from_a_worker_thread_of_a_running_loop(client: Client) -> None:
    async def main() -> None:
        await client.put(b"bound here")
        job_id = await asyncio.to_thread(lambda: client.put(b"from a thread").run())
        assert job_id == 2
        assert _loop_threads() == []  # the work went to the client's (this) loop

    run(main(), client)


def test_a_private_loop_client_can_be_awaited_from_another_loop(
    beanstalkd: BeanstalkdServer,
) -> None:
    client = make_client(beanstalkd)
    try:
        assert client.put(b"sync first").run() == 1

        async def main() -> int:
            return await client.put(b"then awaited")  # handed over to the private loop

        assert run(main()) == 2
    finally:
        client.close()


# ----------------------------------------------------------------------------- loop binding


def test_run_on_the_clients_own_loop_is_refused(beanstalkd: BeanstalkdServer) -> None:
    client = make_client(beanstalkd)

    async def main() -> None:
        with pytest.raises(LoopBindingError, match="await"):
            client.put(b"before binding").run()  # a loop runs here: it would be this one
        assert client.loop is None
        await client.put(b"binds")
        with pytest.raises(LoopBindingError, match="await"):
            client.put(b"after binding").run()

    run(main(), client)
    assert stat(beanstalkd, "total-jobs") == 1  # the refused puts were never sent


def test_a_client_bound_to_one_loop_refuses_another(beanstalkd: BeanstalkdServer) -> None:
    client = make_client(beanstalkd)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()

    async def bind() -> int:
        return await client.put(b"on the other loop")

    try:
        assert asyncio.run_coroutine_threadsafe(bind(), other).result(5) == 1

        async def main() -> None:
            with pytest.raises(LoopBindingError, match="another event loop"):
                await client.put(b"x")
            errors: list[Exception] = []
            client.put(b"y").subscribe(on_error=errors.append)
            assert [type(e) for e in errors] == [LoopBindingError]
            with pytest.raises(LoopBindingError):
                client.put(b"z").subscribe(print)  # no on_error: raised right here

        run(main())
        assert client.put(b"sync from here").run() == 2  # a thread without a loop may
    finally:
        client.close()
        other.call_soon_threadsafe(other.stop)
        thread.join(5)
        other.close()
    assert stat(beanstalkd, "total-jobs") == 2


def test_a_client_follows_its_loop_into_the_next_asyncio_run(
    beanstalkd: BeanstalkdServer,
) -> None:
    client = make_client(beanstalkd)

    async def first() -> int:
        job_id = await client.put(b"one")
        await client.quit()  # no connection outlives this loop (a socket would leak)
        return job_id

    async def second() -> int:
        return await client.put(b"two")

    assert run(first()) == 1
    assert client.loop is not None and client.loop.is_closed()
    assert run(second(), client) == 2  # bound again, to the new loop


# ----------------------------------------------------------------------------- unix socket


def test_unix_socket(beanstalkd_unix: BeanstalkdServer) -> None:
    client = make_client(beanstalkd_unix)
    assert client.address == beanstalkd_unix.unix_path

    async def main() -> None:
        job_id = await client.put(b"over unix")
        job = await client.reserve(0)
        assert (job.id, job.body) == (job_id, b"over unix")
        assert (await client.stats_job(job)).state.value == "reserved"
        await job.delete()
        assert (await client.stats()).total_jobs == 1

    run(main(), client)


def test_unix_socket_sync(beanstalkd_unix: BeanstalkdServer) -> None:
    with make_client(beanstalkd_unix) as client:
        assert client.put(b"x").run() == 1
        assert client.reserve(0).run().delete().run() == 1
    assert _loop_threads() == []


# ----------------------------------------------------------------------------- context managers


def test_sync_context_manager_closes_everything(beanstalkd: BeanstalkdServer) -> None:
    with make_client(beanstalkd) as client:
        client.put(b"x").run()
        job = client.reserve(0).run()
        assert stat(beanstalkd, "current-connections") == 3  # command, reserving, query
    wait_until(lambda: stat(beanstalkd, "current-connections") == 1)
    assert job_state(beanstalkd, job.id) == "ready"  # the held job went back
    assert _loop_threads() == []


def test_async_context_manager_closes_everything(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> Job:
        async with make_client(beanstalkd) as client:
            await client.put(b"x")
            job = await client.reserve(0)
            assert stat(beanstalkd, "current-connections") == 3
        await eventually(lambda: stat(beanstalkd, "current-connections") == 1)
        with pytest.raises(ConnectionLostError):
            await client.put(b"after close")
        return job

    job = run(main())
    assert job_state(beanstalkd, job.id) == "ready"


# ----------------------------------------------------------------------------- dispose


def test_disposing_a_pending_reserve_closes_its_connection_and_loses_no_job(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        delivered: list[Any] = []
        subscription = client.reserve().subscribe(delivered.append, delivered.append)
        await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
        assert stat(beanstalkd, "current-connections") == 2  # the reserving one and the query
        subscription.dispose()
        await eventually(lambda: stat(beanstalkd, "current-connections") == 1)
        assert stat(beanstalkd, "current-waiting") == 0

        assert beanstalkd.query(b"put 0 0 60 4\r\nsafe\r\n") == b"INSERTED 1\r\n"
        assert job_state(beanstalkd, 1) == "ready"
        assert beanstalkd.stats_job(1)["reserves"] == "0"
        assert delivered == []

        # The client still reserves normally afterwards.
        job = await client.reserve(0)
        assert job.body == b"safe"

    run(main(), client)


def test_disposing_a_reserve_at_once_sends_nothing(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        delivered: list[Any] = []
        client.reserve().subscribe(delivered.append, delivered.append).dispose()
        client.reserve(timeout=5).subscribe(delivered.append, delivered.append).dispose()
        assert await client.put(b"kept") == 1  # a round trip on the command connection
        await eventually(lambda: stat(beanstalkd, "current-connections") == 2)
        assert job_state(beanstalkd, 1) == "ready"
        assert stat(beanstalkd, "cmd-reserve") == stat(beanstalkd, "cmd-reserve-with-timeout") == 0
        assert delivered == []

    run(main(), client)


def test_disposing_a_put_still_keeps_the_connection_in_sync(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        seen: list[Any] = []
        client.put(b"unwanted").subscribe(seen.append).dispose()
        assert await client.put(b"wanted") == 2  # its reply is not taken for the first one
        assert seen == []

    before = counters(beanstalkd)
    run(main(), client)
    assert activity(before, counters(beanstalkd)) == {
        "cmd-put": 2,
        "total-jobs": 2,
        "total-connections": 1,  # the same connection carried both
    }


_WHO = contextvars.ContextVar("who", default="nobody")


def test_callbacks_run_in_the_subscribers_context(beanstalkd: BeanstalkdServer) -> None:
    """A reply is read in the context that opened the connection; callbacks get their own.

    Notebook kernels route output by context variables, so this decides which cell a
    print in ``on_next`` lands in.
    """
    client = make_client(beanstalkd)
    seen: list[tuple[str, str]] = []

    async def opener() -> None:
        _WHO.set("opener")
        await client.put(b"first")  # opens the command connection in this context

    async def subscriber(name: str) -> None:
        _WHO.set(name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def completed() -> None:
            seen.append(("completed", _WHO.get()))
            done.set_result(None)

        client.put(b"x").subscribe(
            on_next=lambda _: seen.append(("next", _WHO.get())), on_completed=completed
        )
        await within(done)

    async def main() -> None:
        await asyncio.create_task(opener())
        await asyncio.gather(
            asyncio.create_task(subscriber("cell 2")), asyncio.create_task(subscriber("cell 3"))
        )

    run(main(), client)
    assert sorted(seen) == [
        ("completed", "cell 2"),
        ("completed", "cell 3"),
        ("next", "cell 2"),
        ("next", "cell 3"),
    ]

"""Failures a user must see as typed errors, never as hangs; ownership and reconnects.

The real beanstalkd covers ownership, restarts and refused connections; ``FakeServer``
covers what a real server cannot be made to do (garbage, a reply cut mid-body, silence).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from rxbeanstalk import (
    BuriedError,
    Client,
    CommandTimeoutError,
    ConnectError,
    ConnectionLostError,
    DeadlineSoonError,
    InternalError,
    Job,
    JobLostError,
    JobSettledError,
    NotFoundError,
    OutOfMemoryError,
    ProtocolError,
    TimedOutError,
)
from rxbeanstalk.testing import BeanstalkdServer
from tests.conftest import (
    activity,
    counters,
    eventually,
    job_state,
    make_client,
    run,
    stat,
    wait_until,
)
from tests.fakeserver import SILENT, FakeServer, Response, hang_up, reply

# ----------------------------------------------------------------------------- head of line


def test_a_waiting_reserve_does_not_delay_put_or_stats(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> tuple[float, float, Job]:
        waiting = asyncio.ensure_future(client.reserve())
        await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
        started = time.monotonic()
        job_id = await client.put(b"work")
        put_took = time.monotonic() - started
        started = time.monotonic()
        await client.stats()
        stats_took = time.monotonic() - started
        async with asyncio.timeout(5):
            job = await waiting
        assert job.id == job_id
        return put_took, stats_took, job

    put_took, stats_took, job = run(main(), client)
    assert put_took < 0.25
    assert stats_took < 0.25
    assert job.body == b"work"


# ----------------------------------------------------------------------------- ownership


def test_another_client_cannot_settle_a_reserved_job(beanstalkd: BeanstalkdServer) -> None:
    owner = make_client(beanstalkd)
    other = make_client(beanstalkd)

    async def main() -> None:
        job_id = await owner.put(b"mine")
        job = await owner.reserve(0)
        with pytest.raises(NotFoundError):
            await other.delete(job_id)
        with pytest.raises(NotFoundError):
            await other.release(job_id, priority=1)
        with pytest.raises(NotFoundError):
            await other.bury(job_id, priority=1)
        with pytest.raises(NotFoundError):
            await other.touch(job_id)
        with pytest.raises(NotFoundError):
            await other.reserve_job(job_id)
        assert job_state(beanstalkd, job_id) == "reserved"
        assert job.reserved
        assert await job.delete() == job_id
        assert job_state(beanstalkd, job_id) is None

    run(main(), owner, other)


def test_a_job_is_settled_only_once(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> dict[str, int]:
        job_id = await client.put(b"once")
        job = await client.reserve(0)
        assert await job.delete() == job_id
        before = counters(beanstalkd)
        for settle in (
            job.delete,
            job.release,
            job.bury,
            job.touch,
            lambda: job.release(priority=1),
            lambda: job.bury(priority=1),
            lambda: client.delete(job),
        ):
            with pytest.raises(JobSettledError):
                await settle()
        await client.list_tube_used()  # one round trip: anything sent would be counted
        return activity(before, counters(beanstalkd))

    assert run(main(), client) == {"cmd-list-tube-used": 1}


def test_a_second_settle_while_the_first_is_in_flight(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        job_id = await client.put(b"x", priority=9)
        job = await client.reserve(0)
        first = asyncio.ensure_future(job.release())  # needs stats-job first
        await asyncio.sleep(0)  # let it start (this is ordering, not waiting for a condition)
        with pytest.raises(JobSettledError):
            await job.delete()
        assert await first == job_id
        assert job_state(beanstalkd, job_id) == "ready"

    run(main(), client)


SETTLES: dict[str, Callable[[Job], Awaitable[object]]] = {
    "delete": lambda job: job.delete(),
    "release": lambda job: job.release(),
    "release-priority": lambda job: job.release(priority=1),
    "bury": lambda job: job.bury(),
    "bury-priority": lambda job: job.bury(priority=1),
    "touch": lambda job: job.touch(),
}


@pytest.mark.parametrize("how", sorted(SETTLES))
def test_settling_after_a_server_restart_is_job_lost_and_sends_nothing(
    beanstalkd: BeanstalkdServer, client: Client, how: str
) -> None:
    async def main() -> dict[str, int]:
        await client.put(b"x", priority=4)
        job = await client.reserve(0)
        await asyncio.to_thread(beanstalkd.restart)
        await eventually(lambda: not job.reserved, what="the client noticed the drop")
        fresh = await client.put(b"new job, same id")  # ids restart without a binlog
        assert fresh == job.id
        before = counters(beanstalkd)
        with pytest.raises(JobLostError):
            await SETTLES[how](job)
        await client.list_tube_used()
        return activity(before, counters(beanstalkd))

    assert run(main(), client) == {"cmd-list-tube-used": 1}
    assert job_state(beanstalkd, 1) == "ready"  # the new job with the old id was not touched


def test_settling_after_close_is_job_lost_and_the_job_goes_back(
    beanstalkd: BeanstalkdServer,
) -> None:
    client = make_client(beanstalkd)

    async def main() -> Job:
        await client.put(b"x")
        job = await client.reserve(0)
        client.close()
        await eventually(lambda: job_state(beanstalkd, job.id) == "ready")
        with pytest.raises(JobLostError):
            await job.delete()
        with pytest.raises(JobLostError):
            await job.release()
        return job

    run(main(), client)
    assert stat(beanstalkd, "cmd-delete") == 0
    assert stat(beanstalkd, "cmd-release") == 0


# ----------------------------------------------------------------------------- reconnects


def test_reconnect_restores_used_tube_and_watch_list(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await client.use("t1")
        await client.watch("w1")
        await client.ignore("default")
        with pytest.raises(TimedOutError):
            await client.reserve(0)  # a reserving connection with the watch list applied

        await asyncio.to_thread(beanstalkd.restart)

        assert await client.list_tube_used() == "t1"
        assert await client.list_tubes_watched() == ["w1"]
        job_id = await client.put(b"after")
        assert beanstalkd.stats_job(job_id)["tube"] == "t1"
        beanstalkd.query(b"use w1\r\nput 0 0 60 2\r\nw1\r\n")
        beanstalkd.query(b"put 0 0 60 7\r\ndefault\r\n")
        job = await client.reserve(0)
        assert job.body == b"w1"

    run(main(), client)


def test_commands_in_flight_during_a_drop_fail_and_are_not_replayed(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await client.use("t1")
        waiting = asyncio.ensure_future(client.reserve(timeout=30))
        await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
        pid = beanstalkd.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the server reads nothing more: the put is in flight
        put = asyncio.ensure_future(client.put(b"in flight"))
        port = beanstalkd.port
        await eventually(lambda: _unread_bytes_at(port) > 0, what="the put reached the server")
        assert not put.done()
        beanstalkd.kill()
        with pytest.raises(ConnectionLostError) as put_error:
            await put
        with pytest.raises(ConnectionLostError) as reserve_error:
            await waiting
        assert not isinstance(put_error.value, CommandTimeoutError)
        assert not isinstance(reserve_error.value, CommandTimeoutError)

        await asyncio.to_thread(beanstalkd.restart)
        assert await client.put(b"next") == 1  # the lost put was never sent again
        with pytest.raises(TimedOutError):
            await client.reserve(0)
        assert stat(beanstalkd, "total-jobs") == 1
        assert stat(beanstalkd, "cmd-reserve-with-timeout") == 1
        assert beanstalkd.stats_job(1)["tube"] == "t1"

    run(main(), client)


def _unread_bytes_at(port: int) -> int:
    """Bytes waiting unread in the receive queues of the server's TCP sockets (Linux)."""
    total = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                total += int(queues.split(":")[1], 16)
    return total


def test_connection_refused_is_a_fast_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    client = Client("127.0.0.1", port)

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(ConnectError):
            await client.put(b"x")
        with pytest.raises(ConnectError):
            await client.reserve(0)
        return time.monotonic() - started

    assert run(main(), client) < 1

    sync = Client("127.0.0.1", port)
    started = time.monotonic()
    with pytest.raises(ConnectError):
        sync.stats().run()
    assert time.monotonic() - started < 1
    sync.close()


def test_missing_unix_socket_is_a_connect_error(tmp_path: os.PathLike[str]) -> None:
    client = Client(unix_path=os.path.join(tmp_path, "nothing.sock"))

    async def main() -> None:
        with pytest.raises(ConnectError):
            await client.list_tubes()

    run(main(), client, timeout=5)


def test_the_client_reconnects_once_the_server_is_back(beanstalkd: BeanstalkdServer) -> None:
    client = make_client(beanstalkd)

    async def main() -> int:
        await client.put(b"x")
        await asyncio.to_thread(beanstalkd.stop)
        with pytest.raises((ConnectError, ConnectionLostError)):
            await client.put(b"down")
        with pytest.raises(ConnectError):
            await client.put(b"still down")
        await asyncio.to_thread(beanstalkd.restart)
        return await client.put(b"back")  # after at most a short backoff

    assert run(main(), client) == 1


# ----------------------------------------------------------------------------- a fake server


def _fake(respond: Callable[[bytes], Response]) -> FakeServer:
    return FakeServer(respond).start()


@pytest.mark.parametrize(
    "garbage",
    [
        b"HELLO WORLD\r\n",  # no such reply word
        b"USING default\r\n",  # a real word, but not one a put can get
        b"INSERTED abc\r\n",  # malformed argument
        b"\x00\xff" * 200,  # no CRLF within the 224-byte line cap
        b"FOUND 1 3\r\nabcXY",  # body not followed by CRLF
    ],
    ids=["unknown-word", "wrong-word", "bad-argument", "no-line-end", "bad-trailer"],
)
def test_garbage_is_a_protocol_error_and_the_connection_is_replaced(garbage: bytes) -> None:
    fake = _fake(lambda line: reply(garbage) if line.startswith(b"put") else reply(b"USING x\r\n"))
    client = Client(fake.host, fake.port)

    async def main() -> None:
        first = client.put(b"a")
        second = client.list_tube_used()  # pipelined behind it on the same connection
        results = await asyncio.gather(first, second, return_exceptions=True)
        assert type(results[0]) is ProtocolError
        assert isinstance(results[1], ConnectionLostError)
        await eventually(lambda: fake.closed_by_client == 1, what="client closed its side")
        assert await client.list_tube_used() == "x"  # a fresh connection
        assert fake.accepted == 2

    try:
        run(main(), client, timeout=10)
    finally:
        fake.stop()


def test_a_reply_cut_mid_body_is_connection_lost() -> None:
    fake = _fake(lambda line: hang_up(b"FOUND 1 100\r\n" + b"x" * 50))
    client = Client(fake.host, fake.port)

    async def main() -> None:
        with pytest.raises(ConnectionLostError) as error:
            await client.peek(1)
        assert type(error.value) is ConnectionLostError
        assert "middle of a reply" in str(error.value)

    try:
        run(main(), client, timeout=10)
    finally:
        fake.stop()


def test_a_server_that_hangs_up_is_connection_lost() -> None:
    fake = _fake(lambda line: hang_up())
    client = Client(fake.host, fake.port)

    async def main() -> None:
        with pytest.raises(ConnectionLostError) as error:
            await client.stats()
        assert type(error.value) is ConnectionLostError

    try:
        run(main(), client, timeout=10)
    finally:
        fake.stop()


def test_a_silent_server_is_a_command_timeout_not_a_hang() -> None:
    fake = _fake(lambda line: SILENT)
    client = Client(fake.host, fake.port, command_timeout=0.5)

    async def main() -> tuple[float, float]:
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError):
            await client.put(b"x")
        put_took = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError):
            await client.reserve(timeout=1)  # its deadline: the timeout plus command_timeout
        return put_took, time.monotonic() - started

    try:
        put_took, reserve_took = run(main(), client, timeout=10)
        wait_until(lambda: fake.closed_by_client == 2, what="each timed-out connection closed")
    finally:
        fake.stop()
    assert 0.45 <= put_took < 1.0
    assert 1.45 <= reserve_took < 2.0


def test_a_silent_server_fails_sync_run_too() -> None:
    fake = _fake(lambda line: SILENT)
    client = Client(fake.host, fake.port, command_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(CommandTimeoutError):
            client.stats().run()
        assert time.monotonic() - started < 1.0
    finally:
        client.close()
        fake.stop()


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"DEADLINE_SOON\r\n", DeadlineSoonError),
        (b"OUT_OF_MEMORY\r\n", OutOfMemoryError),
        (b"INTERNAL_ERROR\r\n", InternalError),
    ],
    ids=["deadline-soon", "out-of-memory", "internal-error"],
)
def test_error_words_a_real_server_rarely_sends(answer: bytes, error: type[Exception]) -> None:
    fake = _fake(lambda line: reply(answer))
    client = Client(fake.host, fake.port)

    async def main() -> None:
        with pytest.raises(error):
            await client.reserve(timeout=5)
        assert fake.commands[-1] == b"reserve-with-timeout 5"

    try:
        run(main(), client, timeout=10)
    finally:
        fake.stop()


def test_buried_put_carries_the_job_id() -> None:
    fake = _fake(lambda line: reply(b"BURIED 7\r\n"))
    client = Client(fake.host, fake.port)

    async def main() -> None:
        with pytest.raises(BuriedError) as error:
            await client.put(b"body")
        assert error.value.job_id == 7
        assert fake.bodies == [b"body"]

    try:
        run(main(), client, timeout=10)
    finally:
        fake.stop()


# ----------------------------------------------------------------------------- pipelining


def test_2000_concurrent_puts_share_one_connection(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> tuple[list[int], float]:
        started = time.monotonic()
        ids = await asyncio.gather(*(client.put(b"job %d" % i) for i in range(2000)))
        return ids, time.monotonic() - started

    before = counters(beanstalkd)
    ids, elapsed = run(main(), client)
    moved = activity(before, counters(beanstalkd))
    print(f"\n2,000 concurrent puts on one connection: {elapsed * 1000:.1f} ms")
    assert moved == {"cmd-put": 2000, "total-jobs": 2000, "total-connections": 1}
    assert ids == list(range(1, 2001))  # sent (and answered) in the order they were made
    assert beanstalkd.query(b"peek 2000\r\n") == b"FOUND 2000 8\r\njob 1999\r\n"

"""Every Client command against a real beanstalkd, checked through raw server queries.

Server state is read with ``BeanstalkdServer.query``/``stats``/``stats_job``, which use
plain sockets and bypass the client under test.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from rxbeanstalk import (
    DEFAULT_PRIORITY,
    BadFormatError,
    Client,
    DeadlineSoonError,
    DrainingError,
    InvalidArgumentError,
    Job,
    JobState,
    JobTooBigError,
    NotFoundError,
    NotIgnoredError,
    Reply,
    TimedOutError,
    UnknownCommandError,
)
from rxbeanstalk.protocol import Command, Put, ReplyParser, ReserveWithTimeout
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
)

# ----------------------------------------------------------------------------- put and use


def test_put_stores_body_and_arguments(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> list[int]:
        return [
            await client.put(b"hello", priority=10, delay=0, ttr=30),
            await client.put("h\u00e9llo"),
            await client.put(b"later", delay=100),
            await client.put(b"", ttr=0),
        ]

    assert run(main(), client) == [1, 2, 3, 4]
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 5\r\nhello\r\n"
    assert beanstalkd.query(b"peek 2\r\n") == b"FOUND 2 6\r\nh\xc3\xa9llo\r\n"
    assert beanstalkd.query(b"peek 4\r\n") == b"FOUND 4 0\r\n\r\n"
    first = beanstalkd.stats_job(1)
    assert (first["pri"], first["ttr"], first["tube"], first["state"]) == (
        "10",
        "30",
        "default",
        "ready",
    )
    second = beanstalkd.stats_job(2)
    assert (second["pri"], second["ttr"]) == (str(DEFAULT_PRIORITY), "60")
    third = beanstalkd.stats_job(3)
    assert (third["state"], third["delay"]) == ("delayed", "100")
    assert beanstalkd.stats_job(4)["ttr"] == "1"  # the server raises TTR 0 to 1


def test_put_into_a_tube_leaves_the_used_tube(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> tuple[int, int, str]:
        elsewhere = await client.put(b"x", tube="other")
        here = await client.put(b"y")
        return elsewhere, here, await client.list_tube_used()

    elsewhere, here, used = run(main(), client)
    assert beanstalkd.stats_job(elsewhere)["tube"] == "other"
    assert beanstalkd.stats_job(here)["tube"] == "default"
    assert used == "default"
    assert client.used == "default"


def test_use_changes_where_puts_go(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> tuple[str, int, str]:
        tube = await client.use("emails")
        job_id = await client.put(b"x")
        assert stat(beanstalkd, "current-using", "emails") == 1  # the command connection
        return tube, job_id, await client.list_tube_used()

    tube, job_id, used = run(main(), client)
    assert tube == used == client.used == "emails"
    assert beanstalkd.stats_job(job_id)["tube"] == "emails"


def test_client_options_use_and_watch(beanstalkd: BeanstalkdServer) -> None:
    client = make_client(beanstalkd, use="out", watch=["in", "in2"])

    async def main() -> tuple[int, str, list[str], Job]:
        job_id = await client.put(b"x")
        beanstalkd.query(b"use in2\r\nput 0 0 60 2\r\nin\r\n")
        return (
            job_id,
            await client.list_tube_used(),
            await client.list_tubes_watched(),
            await client.reserve(timeout=0),
        )

    job_id, used, watched, job = run(main(), client)
    assert beanstalkd.stats_job(job_id)["tube"] == "out"
    assert used == "out"
    assert sorted(watched) == ["in", "in2"]  # the server's own order
    assert job.body == b"in"


# ----------------------------------------------------------------------------- reserve


def test_reserve_returns_the_job_and_holds_it(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        job_id = await client.put(b"payload")
        job = await client.reserve()
        assert isinstance(job, Job)
        assert (job.id, job.body, job.text) == (job_id, b"payload", "payload")
        assert job.reserved and job.settled is None
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["reserves"]) == ("reserved", "1")
        assert await job.delete() == job_id
        assert job.settled == "delete" and not job.reserved
        assert job_state(beanstalkd, job_id) is None

    run(main(), client)


def test_blocking_reserve_waits_for_a_later_put(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> Job:
        waiting = asyncio.ensure_future(client.reserve())
        await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
        assert not waiting.done()
        assert beanstalkd.query(b"put 0 0 60 3\r\nabc\r\n") == b"INSERTED 1\r\n"
        async with asyncio.timeout(5):
            job = await waiting
        assert job_state(beanstalkd, 1) == "reserved"
        return job

    job = run(main(), client)
    assert (job.id, job.body) == (1, b"abc")
    assert job_state(beanstalkd, 1) == "ready"  # closing the client gave it back


def test_reserve_with_timeout(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> tuple[float, Job, float]:
        with pytest.raises(TimedOutError):
            await client.reserve(timeout=0)
        started = time.monotonic()
        with pytest.raises(TimedOutError):
            await client.reserve(timeout=0.2)  # rounded up to 1 s, never sent as 0
        waited = time.monotonic() - started
        await client.put(b"ready")
        started = time.monotonic()
        job = await client.reserve(timeout=30)
        return waited, job, time.monotonic() - started

    waited, job, took = run(main(), client)
    assert 0.9 <= waited < 3
    assert job.body == b"ready"
    assert took < 1
    assert stat(beanstalkd, "cmd-reserve-with-timeout") == 3


def test_reserve_job_takes_a_job_in_any_state(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        delayed = await client.put(b"d", delay=100)
        job = await client.reserve_job(delayed)
        assert (job.id, job.body, job.reserved) == (delayed, b"d", True)
        assert job_state(beanstalkd, delayed) == "reserved"
        assert await job.release() == delayed
        assert job_state(beanstalkd, delayed) == "ready"
        with pytest.raises(NotFoundError):
            await client.reserve_job(999)

    run(main(), client)


# ----------------------------------------------------------------------------- settling


def test_delete_reserved_ready_and_buried_jobs(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        ready = await client.put(b"ready")
        assert await client.delete(ready) == ready  # by id, on the command connection
        assert job_state(beanstalkd, ready) is None

        held = await client.put(b"held")
        job = await client.reserve(0)
        assert await client.delete(job) == held
        assert job_state(beanstalkd, held) is None

        # The id of a job this client holds goes to the connection that reserved it.
        held = await client.put(b"held by id")
        await client.reserve(0)
        assert await client.delete(held) == held
        assert job_state(beanstalkd, held) is None

        buried = await client.put(b"buried")
        await (await client.reserve(0)).bury()
        assert job_state(beanstalkd, buried) == "buried"
        assert await client.delete(buried) == buried
        assert job_state(beanstalkd, buried) is None

        with pytest.raises(NotFoundError):
            await client.delete(999)

    run(main(), client)
    assert stat(beanstalkd, "cmd-delete") == 5


def test_release_keeps_or_sets_priority_and_delay(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> int:
        job_id = await client.put(b"x", priority=123)

        job = await client.reserve(0)
        assert await job.release() == job_id  # priority=None keeps the job's own
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["pri"], state["releases"]) == ("ready", "123", "1")

        job = await client.reserve(0)
        assert await client.release(job, priority=7) == job_id
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["pri"]) == ("ready", "7")

        job = await client.reserve(0)
        assert await job.release(delay=100) == job_id
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["pri"], state["delay"]) == ("delayed", "7", "100")

        job = await client.reserve_job(job_id)
        assert await job.release(priority=9, delay=50) == job_id
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["pri"], state["delay"]) == ("delayed", "9", "50")
        return job_id

    job_id = run(main(), client)
    assert beanstalkd.stats_job(job_id)["releases"] == "4"


def test_bury_keeps_or_sets_priority_and_kick_job(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        job_id = await client.put(b"x", priority=55)
        job = await client.reserve(0)
        assert await job.bury() == job_id
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["pri"], state["buries"]) == ("buried", "55", "1")

        assert await client.kick_job(job_id) == job_id
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["kicks"]) == ("ready", "1")

        job = await client.reserve(0)
        assert await client.bury(job, priority=5) == job_id
        state = beanstalkd.stats_job(job_id)
        assert (state["state"], state["pri"]) == ("buried", "5")

        assert await client.kick_job(job) == job_id  # a Job is accepted too
        with pytest.raises(NotFoundError):
            await client.kick_job(job_id)  # ready now: nothing to kick

    run(main(), client)


def test_touch_restarts_the_ttr_and_does_not_settle(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        job_id = await client.put(b"x", ttr=100)
        job = await client.reserve(0)
        assert await job.touch() == job_id
        assert await client.touch(job_id) == job_id  # a held id goes to its connection
        assert job.reserved
        state = beanstalkd.stats_job(job_id)
        assert state["state"] == "reserved"
        assert int(state["time-left"]) >= 98
        assert stat(beanstalkd, "cmd-touch") == 2
        assert await job.delete() == job_id

        ready = await client.put(b"ready")
        with pytest.raises(NotFoundError):
            await client.touch(ready)  # only a reserved job can be touched

    run(main(), client)


# ----------------------------------------------------------------------------- tubes


def test_watch_and_ignore(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        assert await client.watch("a") == 2
        assert await client.watch("a") == 2
        assert client.watched == ("default", "a")
        assert await client.list_tubes_watched() == ["default", "a"]

        in_a = await client.put(b"in a", tube="a")
        assert (await client.reserve(0)).id == in_a

        assert await client.ignore("default") == 1
        assert list(client.watched) == ["a"]
        await client.put(b"in default")
        with pytest.raises(TimedOutError):
            await client.reserve(0)  # the reserving connection no longer watches default

        with pytest.raises(NotIgnoredError):
            await client.ignore("a")
        assert list(client.watched) == ["a"]
        assert await client.list_tubes_watched() == ["a"]
        assert stat(beanstalkd, "current-watching", "a") >= 1

    run(main(), client)


def test_peek_commands(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        buried = await client.put(b"buried", priority=0)
        await (await client.reserve(0)).bury()
        ready = await client.put(b"ready")
        delayed = await client.put(b"delayed", delay=100)

        peeked = await client.peek(ready)
        assert (peeked.id, peeked.body, peeked.reserved) == (ready, b"ready", False)
        assert (await client.peek(buried)).body == b"buried"
        assert (await client.peek_ready()).id == ready
        assert (await client.peek_delayed()).id == delayed
        assert (await client.peek_buried()).id == buried
        assert job_state(beanstalkd, ready) == "ready"  # peeking reserves nothing

        with pytest.raises(NotFoundError):
            await client.peek(999)
        await client.use("empty")
        for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
            with pytest.raises(NotFoundError):
                await peek()

    run(main(), client)


def test_kick_buried_then_delayed(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        for i in range(3):
            await client.put(b"%d" % i)
            await (await client.reserve(0)).bury()
        assert await client.kick(2) == 2
        tube = beanstalkd.stats("default")
        assert (tube["current-jobs-buried"], tube["current-jobs-ready"]) == ("1", "2")
        assert await client.kick(10) == 1
        assert await client.kick(10) == 0
        delayed = await client.put(b"d", delay=100)
        assert await client.kick(5) == 1  # nothing buried: delayed jobs are kicked
        assert job_state(beanstalkd, delayed) == "ready"

    run(main(), client)


def test_stats_commands(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        await client.watch("s")
        job_id = await client.put(b"x", priority=5, ttr=30, tube="s")
        job_stats = await client.stats_job(job_id)
        assert (job_stats.id, job_stats.tube, job_stats.state) == (job_id, "s", JobState.READY)
        assert (job_stats.pri, job_stats.ttr, job_stats.reserves) == (5, 30, 0)

        job = await client.reserve(0)
        held = await job.stats()  # asked on the job's own connection
        assert held.state is JobState.RESERVED
        assert 0 < held.time_left <= 30
        with pytest.raises(NotFoundError):
            await client.stats_job(999)

        tube = await client.stats_tube("s")
        raw = beanstalkd.stats("s")
        assert tube.name == "s"
        assert tube.current_jobs_reserved == int(raw["current-jobs-reserved"]) == 1
        assert tube.total_jobs == 1
        with pytest.raises(NotFoundError):
            await client.stats_tube("nope")

        server = await client.stats()
        raw = beanstalkd.stats()
        assert server.pid == beanstalkd.pid
        assert (server.version, server.id) == (raw["version"], raw["id"])
        assert server.current_jobs_reserved == 1
        assert server.draining is False
        assert server.cmd_stats_job == 3  # two from the client, none from the raw stats

    run(main(), client)


def test_list_commands(client: Client) -> None:
    async def main() -> None:
        assert await client.list_tubes() == ["default"]
        await client.use("u")
        await client.watch("w")
        assert await client.list_tubes() == ["default", "u", "w"]
        assert await client.list_tube_used() == "u"
        assert await client.list_tubes_watched() == ["default", "w"]

    run(main(), client)


def test_pause_tube(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        await client.put(b"x", tube="p")
        assert await client.pause_tube("p", 100) == "p"
        with pytest.raises(NotFoundError):
            await client.pause_tube("no-such-tube", 1)

    run(main(), client)
    raw = beanstalkd.stats("p")
    assert raw["pause"] == "100"
    assert 0 < int(raw["pause-time-left"]) <= 100


def test_quit_closes_the_command_connection_and_the_next_command_reconnects(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await client.put(b"x")
        assert stat(beanstalkd, "current-connections") == 2  # the client's and the query's
        opened = stat(beanstalkd, "total-connections")
        await client.quit()  # emits None once the server closed the connection
        await eventually(lambda: stat(beanstalkd, "current-connections") == 1)
        assert await client.put(b"y") == 2
        # one new connection for the put (plus the query asking)
        assert stat(beanstalkd, "total-connections") == opened + 3

    run(main(), client)


# ----------------------------------------------------------------------------- put_many


def test_put_many_emits_5000_ids_in_order(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> tuple[list[int], int]:
        ids = await collect(client.put_many(b"job-%d" % i for i in range(5000)))
        last = await client.put_many([b"a", b"b"])  # await gives the last id
        return ids, last

    before = counters(beanstalkd)
    ids, last = run(main(), client)
    assert ids == list(range(1, 5001))
    assert last == 5002
    moved = activity(before, counters(beanstalkd))
    assert moved == {"cmd-put": 5002, "total-jobs": 5002, "total-connections": 1}
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 5\r\njob-0\r\n"
    assert beanstalkd.query(b"peek 5000\r\n") == b"FOUND 5000 8\r\njob-4999\r\n"


def test_put_many_60kib_bodies_into_a_tube(beanstalkd: BeanstalkdServer, client: Client) -> None:
    bodies = [bytes([i]) * 61440 for i in range(40)]  # 2.4 MiB: several byte-bounded batches

    ids = run(collect(client.put_many(bodies, priority=3, tube="big")), client)
    assert ids == list(range(1, 41))
    assert stat(beanstalkd, "current-jobs-ready", "big") == 40
    for job_id, body in zip(ids, bodies, strict=True):
        assert beanstalkd.query(b"peek %d\r\n" % job_id) == b"FOUND %d 61440\r\n%b\r\n" % (
            job_id,
            body,
        )
    assert beanstalkd.stats_job(40)["pri"] == "3"
    assert stat(beanstalkd, "current-using", "big") == 0  # the used tube is back to default


def test_put_many_stops_at_the_first_error(beanstalkd: BeanstalkdServer, client: Client) -> None:
    bodies = [b"ok", b"x" * 65536, b"never"]

    async def main() -> tuple[list[int], BaseException]:
        values: list[int] = []
        done: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        client.put_many(bodies).subscribe(values.append, done.set_result)
        return values, await done

    values, error = run(main(), client)
    assert isinstance(error, JobTooBigError)
    assert values == [1]
    assert any("1 of 3 jobs were put" in note for note in getattr(error, "__notes__", []))
    # The third body may have been pipelined already, but never emitted: its id is not ours.
    assert stat(beanstalkd, "total-jobs") in (1, 2)


# ----------------------------------------------------------------------------- command()


def test_command_escape_hatch(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        assert await client.command("list-tube-used") == Reply("USING", ("default",), None)
        inserted = await client.command("put", 0, 0, 60, body=b"raw\r\nbody")
        assert inserted.status == "INSERTED"
        job_id = int(inserted.args[0])
        assert beanstalkd.query(b"peek %d\r\n" % job_id) == b"FOUND 1 9\r\nraw\r\nbody\r\n"
        found = await client.command("stats-job", job_id)
        assert found.status == "OK" and found.body is not None
        assert b"state: ready" in found.body

        with pytest.raises(NotFoundError):
            await client.command("delete", 999)
        with pytest.raises(UnknownCommandError):
            await client.command("frobnicate")
        opened = stat(beanstalkd, "total-connections")
        with pytest.raises(BadFormatError):
            await client.command("use", "a*b")
        assert await client.command("delete", job_id) == Reply("DELETED", (), None)
        # BAD_FORMAT on a command without a body keeps the connection (no reconnect)
        assert stat(beanstalkd, "total-connections") == opened + 1

    run(main(), client)


def test_raw_tube_commands_do_not_desync_the_clients_tube_state(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        assert await client.command("use", "raw") == Reply("USING", ("raw",), None)
        inserted = await client.command("put", 0, 0, 60, body=b"r")  # the hatch does as told
        assert beanstalkd.stats_job(int(inserted.args[0]))["tube"] == "raw"
        job_id = await client.put(b"x")  # but put() follows the client's used tube
        assert beanstalkd.stats_job(job_id)["tube"] == "default"
        assert await client.list_tube_used() == client.used == "default"

        assert (await client.command("watch", "w")).status == "WATCHING"
        assert await client.list_tubes_watched() == ["default"]
        await client.watch("mine")
        assert (await client.command("ignore", "mine")).status == "WATCHING"
        assert await client.list_tubes_watched() == ["default", "mine"]

    run(main(), client)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.command("reserve"),
        lambda c: c.command("reserve-with-timeout", 0),
        lambda c: c.command("reserve-job", 1),
        lambda c: c.command("quit"),
        lambda c: c.command("two words"),
        lambda c: c.command("use", "a b"),
        lambda c: c.command("use", "a\r\nput"),
        lambda c: c.command("stats-tube", "t" * 220),
        lambda c: c.command("put", 0, 0, 1, body=42),
    ],
    ids=[
        "reserve",
        "reserve-with-timeout",
        "reserve-job",
        "quit",
        "space-in-name",
        "space-in-arg",
        "crlf-in-arg",
        "line-too-long",
        "bad-body",
    ],
)
def test_command_refusals_happen_at_call_time(
    beanstalkd: BeanstalkdServer, call: Callable[[Client], Any]
) -> None:
    client = make_client(beanstalkd)
    before = counters(beanstalkd)
    with pytest.raises(InvalidArgumentError):
        call(client)
    assert client.loop is None  # never bound, never connected
    assert activity(before, counters(beanstalkd)) == {}
    client.close()


# ----------------------------------------------------------------------------- server errors


def test_job_size_limit(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> int:
        with pytest.raises(JobTooBigError):
            await client.put(b"x" * 65536)
        return await client.put(b"y" * 65535)  # same connection: it stayed in sync

    before = counters(beanstalkd)
    job_id = run(main(), client)
    assert activity(before, counters(beanstalkd)) == {
        "cmd-put": 2,
        "total-jobs": 1,
        "total-connections": 1,
    }
    assert job_id == 1
    assert beanstalkd.stats_job(job_id)["state"] == "ready"
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 65535\r\n" + b"y" * 65535 + b"\r\n"


def test_draining_server_refuses_puts_but_keeps_working(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await client.put(b"before")
        beanstalkd.drain()
        await eventually(lambda: beanstalkd.stats()["draining"] == "true")
        with pytest.raises(DrainingError):
            await client.put(b"during")
        assert (await client.stats()).draining is True
        job = await client.reserve(0)  # consumers keep working
        assert job.body == b"before"
        await job.delete()

    run(main(), client)
    assert stat(beanstalkd, "total-jobs") == 1


def _ask(sock: socket.socket, parser: ReplyParser, command: Command[Any]) -> Any:
    sock.sendall(command.encode())
    while (reply := parser.next_reply()) is None:
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection"
        parser.feed(chunk)
    return command.interpret(reply)


def test_deadline_soon_at_the_protocol_layer(beanstalkd: BeanstalkdServer) -> None:
    # The client reserves on connections that hold no job, so DEADLINE_SOON (a reserve on
    # the connection that holds a job near its TTR) cannot reach it; drive the protocol
    # layer over a raw socket instead.
    with socket.create_connection((beanstalkd.host, beanstalkd.port), timeout=5) as sock:
        parser = ReplyParser()
        assert _ask(sock, parser, Put(b"x", 0, 0, 1)) == 1
        assert _ask(sock, parser, ReserveWithTimeout(0)).id == 1
        with pytest.raises(DeadlineSoonError):
            _ask(sock, parser, ReserveWithTimeout(5))  # ttr=1: inside the 1 s margin at once


# ----------------------------------------------------------------------------- invalid arguments


# The client is typed Any here: most of these calls are wrong on purpose.
INVALID_CALLS: dict[str, Callable[[Any], Any]] = {
    "put-priority-negative": lambda c: c.put(b"x", priority=-1),
    "put-priority-2**32": lambda c: c.put(b"x", priority=2**32),
    "put-delay-negative": lambda c: c.put(b"x", delay=-1),
    "put-ttr-2**32": lambda c: c.put(b"x", ttr=2**32),
    "put-priority-bool": lambda c: c.put(b"x", priority=True),
    "put-priority-float": lambda c: c.put(b"x", priority=1.5),
    "put-body-int": lambda c: c.put(123),
    "put-body-none": lambda c: c.put(None),
    "put-tube-space": lambda c: c.put(b"x", tube="a b"),
    "put-tube-dash": lambda c: c.put(b"x", tube="-x"),
    "put-tube-201": lambda c: c.put(b"x", tube="t" * 201),
    "put-tube-utf8": lambda c: c.put(b"x", tube="caf\u00e9"),
    "put-tube-empty": lambda c: c.put(b"x", tube=""),
    "use-star": lambda c: c.use("a*b"),
    "use-not-str": lambda c: c.use(b"bytes"),
    "watch-empty": lambda c: c.watch(""),
    "ignore-dash": lambda c: c.ignore("-x"),
    "reserve-negative": lambda c: c.reserve(timeout=-1),
    "reserve-2**31": lambda c: c.reserve(timeout=2**31),
    "reserve-nan": lambda c: c.reserve(timeout=float("nan")),
    "reserve-str": lambda c: c.reserve(timeout="1"),
    "reserve-job-0": lambda c: c.reserve_job(0),
    "reserve-job-2**64": lambda c: c.reserve_job(2**64),
    "delete-0": lambda c: c.delete(0),
    "delete-negative": lambda c: c.delete(-1),
    "delete-str": lambda c: c.delete("1"),
    "release-priority": lambda c: c.release(1, priority=-1),
    "release-delay": lambda c: c.release(1, delay=2**32),
    "release-keep-priority-delay": lambda c: c.release(1, delay=-1),
    "bury-priority": lambda c: c.bury(1, priority=2**32),
    "touch-0": lambda c: c.touch(0),
    "kick-negative": lambda c: c.kick(-1),
    "kick-job-0": lambda c: c.kick_job(0),
    "peek-0": lambda c: c.peek(0),
    "stats-job-0": lambda c: c.stats_job(0),
    "stats-tube-space": lambda c: c.stats_tube("a b"),
    "pause-negative": lambda c: c.pause_tube("x", -1),
    "pause-bad-tube": lambda c: c.pause_tube("a b", 1),
    "put-many-bad-body": lambda c: c.put_many([b"a", 1]),
    "put-many-priority": lambda c: c.put_many([b"a"], priority=-1),
    "put-many-tube": lambda c: c.put_many([b"a"], tube="-x"),
}


def test_invalid_arguments_raise_at_call_time_and_send_nothing(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> dict[str, int]:
        await client.put(b"connected")  # a live command connection that could carry bytes
        job = await client.reserve(0)  # and a reserving one
        before = counters(beanstalkd)
        accepted = []
        for name, call in INVALID_CALLS.items():
            try:
                call(client)
            except InvalidArgumentError:
                continue
            accepted.append(name)
        assert accepted == [], "accepted at call time"
        for bad in (-1, 2**32, 1.5, "1"):
            with pytest.raises(InvalidArgumentError):
                job.release(priority=bad)  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                job.bury(priority=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            job.release(delay=-1)
        await client.list_tube_used()  # a round trip: anything queued would be out by now
        return activity(before, counters(beanstalkd))

    assert run(main(), client) == {"cmd-list-tube-used": 1}
    assert stat(beanstalkd, "total-jobs") == 1


@pytest.mark.parametrize(
    "options",
    [
        {"port": 0},
        {"port": 65536},
        {"use": "a b"},
        {"watch": "default"},
        {"watch": ()},
        {"watch": ["ok", "-bad"]},
        {"command_timeout": 0},
        {"connect_timeout": -1},
        {"command_timeout": True},
    ],
    ids=repr,
)
def test_invalid_client_options(beanstalkd: BeanstalkdServer, options: dict[str, Any]) -> None:
    before = counters(beanstalkd)
    with pytest.raises(InvalidArgumentError):
        Client(**{"host": beanstalkd.host, "port": beanstalkd.port, **options})
    assert activity(before, counters(beanstalkd)) == {}


# ----------------------------------------------------------------------------- names and bytes


@pytest.mark.parametrize(
    "name", ["123", "true", "0.5", "null", "1e3", "0x1F", "yes", ".inf", "007"]
)
def test_tube_names_yaml_would_retype_stay_str(
    beanstalkd: BeanstalkdServer, client: Client, name: str
) -> None:
    async def main() -> None:
        assert await client.use(name) == name
        job_id = await client.put(b"x")
        await client.watch(name)
        tubes = await client.list_tubes()
        assert name in tubes and all(type(t) is str for t in tubes)
        used = await client.list_tube_used()
        assert type(used) is str and used == name
        watched = await client.list_tubes_watched()
        assert watched == ["default", name] and all(type(t) is str for t in watched)
        tube = await client.stats_tube(name)
        assert type(tube.name) is str and tube.name == name
        job = await client.stats_job(job_id)
        assert type(job.tube) is str and job.tube == name

    run(main(), client)
    assert beanstalkd.stats_job(1)["tube"] == name


def test_tube_name_limits(beanstalkd: BeanstalkdServer, client: Client) -> None:
    longest = "t" * 200
    punctuation = "a-+/;.$_()"

    async def main() -> None:
        assert await client.use(longest) == longest
        assert await client.list_tube_used() == longest
        job_id = await client.put(b"x", tube=punctuation)
        assert (await client.stats_job(job_id)).tube == punctuation

    run(main(), client)
    assert beanstalkd.stats_job(1)["tube"] == punctuation
    for bad in ("t" * 201, "-leading", "a b", ""):
        with pytest.raises(InvalidArgumentError):
            client.use(bad)


def test_every_byte_value_round_trips(beanstalkd: BeanstalkdServer, client: Client) -> None:
    body = bytes(range(256)) + b"\r\nput 0 0 1 1\r\n\r\n\x00" + bytes(range(255, -1, -1))

    async def main() -> tuple[Job, Job]:
        job_id = await client.put(body)
        peeked = await client.peek(job_id)
        reserved = await client.reserve(0)
        return peeked, reserved

    peeked, reserved = run(main(), client)
    assert peeked.body == body
    assert reserved.body == body
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 %d\r\n%b\r\n" % (len(body), body)
    assert stat(beanstalkd, "total-jobs") == 1  # the CRLF-and-command text stayed a body


def test_wait_until_helper_fails_on_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception):
        wait_until(lambda: False, timeout=0.05, what="never")
    assert time.monotonic() - started < 1

"""Reliability scenarios R01-R14: connection loss, half-open links, stalls, slow links.

These are sections A and B of the catalogue in reliability.md section 6, run against a
real beanstalkd behind the fault proxy.

A. A dropped connection is replaced on the next use, with the used tube and the watch
list restored before anything else; a command that was in flight fails with a typed
error and is never sent again by itself (its outcome is unknown: a ``put`` may have
landed); a job held on the lost connection is never settled on another one; while the
server is unreachable, connect attempts back off.

B. A silent peer (a half-open connection, a stall, a server that accepts and never
answers) is a typed error within the command's deadline (a reserve's: its timeout plus
a grace of ``command_timeout``), then the client recovers on a new connection; a stall
shorter than the deadline and a slow link cost latency only, because the deadline
measures silence, not transfer time.

What is asserted comes from the server (raw queries on sockets of their own, bypassing
the proxy), from the wire (the proxy's byte logs), from exception types, and, for "the
client closed its side", from the sockets this process holds open (``/proc``): never from
the client's own counters. Jobs are put by a producer ``Client`` connected directly to
the server; it also keeps the tube (and its counters) alive.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import reactivex

from rxbeanstalk import (
    Client,
    CommandTimeoutError,
    ConnectError,
    ConnectionLostError,
    Job,
    JobLostError,
    JobSettledError,
    TransportError,
)
from rxbeanstalk.operators import process, retry_with_backoff
from rxbeanstalk.testing import BeanstalkdServer, FaultProxy
from tests.conftest import eventually, make_client, run, stat, within

# Long enough for something that must not happen (a stale settle, a reconnect) to show.
QUIET = 0.3
# Slack on top of a deadline for a loaded 2-core machine.
SLACK = 1.0
# The deadline of most tests: short, so that the tests are fast.
DEADLINE = 0.5
# Channel's defaults (rxbeanstalk/_channel.py): the first and the longest connect backoff.
BACKOFF_BASE, BACKOFF_CAP = 0.05, 2.0
# Each lane's reserve-with-timeout (rxbeanstalk/_lane.py RESERVE_WAIT); its deadline is
# this plus command_timeout, the grace.
LANE_RESERVE_WAIT = 5
# After this long holding a job, a lane asks stats-job for its TTR (_lane.py _FIRST_CHECK).
LANE_FIRST_CHECK = 1.0
JOB_STATES = ("ready", "reserved", "delayed", "buried")


# ----------------------------------------------------------------------------- helpers


def through(proxy: FaultProxy, **options: Any) -> Client:
    """A client that talks to the server through the proxy."""
    return Client("127.0.0.1", proxy.port, **options)


class Recorder:
    """An observer that keeps what a pipeline emits."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.error: Exception | None = None
        self.completed = False

    def subscribe(self, observable: reactivex.Observable[Any]) -> reactivex.abc.DisposableBase:
        return observable.subscribe(self.values.append, self._on_error, self._on_completed)

    def _on_error(self, error: Exception) -> None:
        self.error = error

    def _on_completed(self) -> None:
        self.completed = True


class Gate:
    """A handler whose first ``hold`` deliveries wait until ``open()``; the rest pass."""

    def __init__(self, hold: int = 1) -> None:
        self.hold = hold
        self.seen: list[Job] = []
        self.started = asyncio.Event()
        self._open = asyncio.Event()

    async def handle(self, job: Job) -> None:
        self.seen.append(job)
        if len(self.seen) <= self.hold:
            if len(self.seen) == self.hold:
                self.started.set()
            await self._open.wait()

    def open(self) -> None:
        self._open.set()

    def bodies(self) -> Counter[bytes]:
        return Counter(job.body for job in self.seen)


def consume(
    client: Client, tube: str, handler: Gate, *, max_in_flight: int = 1
) -> tuple[Recorder, reactivex.abc.DisposableBase]:
    """The catalogue's consumer: ``reserve_stream | process | retry_with_backoff``."""
    got = Recorder()
    stream = client.reserve_stream(tubes=[tube], max_in_flight=max_in_flight)
    subscription = got.subscribe(
        stream.pipe(process(handler.handle), retry_with_backoff(base=BACKOFF_BASE))
    )
    return got, subscription


def _tcp_table() -> Iterator[tuple[int, int, str, int, int]]:
    """``(local port, remote port, state, unread bytes, inode)`` of each IPv4 TCP socket."""
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            fields = row.split()
            local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
            yield (
                int(local.rsplit(":", 1)[1], 16),
                int(remote.rsplit(":", 1)[1], 16),
                state,
                int(queues.split(":")[1], 16),
                int(fields[9]),
            )


def _open_socket_inodes() -> set[int]:
    """The inodes of the sockets this process holds open."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            found.add(int(target[8:-1]))
    return found


def client_sockets(proxy: FaultProxy) -> set[int]:
    """Inodes of the sockets this process holds connected to the proxy: the client's side."""
    connected = {inode for _, remote, _, _, inode in _tcp_table() if remote == proxy.port}
    return connected & _open_socket_inodes()


def still_open(inodes: set[int]) -> set[int]:
    """Which of these sockets this process still holds open (closed ones are gone)."""
    return inodes & _open_socket_inodes()


def listening(port: int) -> bool:
    return any(local == port and state == "0A" for local, _, state, _, _ in _tcp_table())


def unread_bytes(port: int) -> int:
    """Bytes waiting unread in the receive queues of the server's connected sockets."""
    return sum(
        unread for local, _, state, unread, _ in _tcp_table() if local == port and state == "01"
    )


def put_lines(proxy: FaultProxy) -> list[bytes]:
    """Every ``put`` command line that crossed the proxy, on every link so far."""
    return [line for link in proxy.links for line in link.commands() if line.startswith(b"put ")]


def deletes_of(proxy: FaultProxy, job_id: int) -> list[int]:
    """The links (by index) on which a ``delete <job_id>`` crossed."""
    return [
        link.index
        for link in proxy.links
        for verb, settled in link.settles()
        if verb == b"delete" and settled == job_id
    ]


def tube_totals(server: BeanstalkdServer, tube: str) -> dict[str, int]:
    stats = server.stats(tube)
    totals = {state: int(stats[f"current-jobs-{state}"]) for state in JOB_STATES}
    totals["total"] = int(stats["total-jobs"])
    totals["deleted"] = int(stats["cmd-delete"])
    return totals


def assert_conserved(server: BeanstalkdServer, tube: str) -> dict[str, int]:
    """The catalogue's accounting: total-jobs == cmd-delete + current-jobs-*."""
    totals = tube_totals(server, tube)
    assert totals["total"] == totals["deleted"] + sum(totals[s] for s in JOB_STATES), totals
    return totals


def deleted(server: BeanstalkdServer, tube: str) -> int:
    return stat(server, "cmd-delete", tube)


def reserved(server: BeanstalkdServer, tube: str | None = None) -> int:
    return stat(server, "current-jobs-reserved", tube)


class Stopped:
    """``SIGSTOP`` on the server while inside, ``SIGCONT`` on exit.

    A stopped server reads nothing, so bytes sent to it wait unread in its socket: a
    command "written, not yet answered".
    """

    def __init__(self, server: BeanstalkdServer) -> None:
        assert server.pid is not None
        self.pid = server.pid

    def __enter__(self) -> Stopped:
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.kill(self.pid, signal.SIGCONT)


async def timed(awaitable: Awaitable[Any], seconds: float = 10.0) -> tuple[Any, float]:
    """Await with a bound; the value or the exception raised, and how long it took."""
    started = time.monotonic()
    try:
        value: Any = await within(awaitable, seconds)
    except Exception as error:  # the caller asserts the type
        value = error
    return value, time.monotonic() - started


# ----------------------------------------------------------------------------- A. loss


@pytest.mark.parametrize("rst", [True, False], ids=["rst", "fin"])
def test_r01_reconnect_restores_use_and_watch_before_any_other_command(
    beanstalkd: BeanstalkdServer, rst: bool
) -> None:
    """R01: an idle client's next op after a drop reconnects once, use/watch/ignore first."""

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy)
            try:
                await within(client.use("r01"))
                await within(client.watch("r01"))
                await within(client.ignore("default"))
                inodes = client_sockets(proxy)
                assert len(inodes) == 1 and proxy.accepted == 1
                assert proxy.drop_all(rst=rst) == 1
                await eventually(lambda: not still_open(inodes), what="the client saw the drop")

                # The next op does not depend on the tube state, and still goes after it.
                stats = await within(client.stats())
                assert stats.current_connections >= 1
                assert proxy.accepted == 2
                assert proxy.links[1].commands() == [
                    b"use r01",
                    b"watch r01",
                    b"ignore default",
                    b"stats",
                ]
                assert await within(client.list_tube_used()) == "r01"
                assert await within(client.list_tubes_watched()) == ["r01"]
                job_id = await within(client.put(b"after the drop"))
                assert beanstalkd.stats_job(job_id)["tube"] == "r01"
                # Nothing was sent twice: the restore went out once, on the new link.
                assert proxy.links[1].commands()[3:] == [
                    b"stats",
                    b"list-tube-used",
                    b"list-tubes-watched",
                    b"put 2147483648 0 60 14",
                ]
                assert proxy.accepted == 2
            finally:
                client.close()

    run(main())


def test_r02_stream_waiting_in_reserve_survives_a_drop(beanstalkd: BeanstalkdServer) -> None:
    """R02: a FIN drop under a waiting stream costs one reconnect; later jobs all arrive once."""
    tube = "r02"
    producer = make_client(beanstalkd)
    handler = Gate(hold=0)

    async def main() -> None:
        await within(producer.use(tube))  # the anchor: keeps the tube and its counters
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = through(proxy, command_timeout=DEADLINE)
            got, subscription = consume(consumer, tube, handler)
            try:
                await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
                assert proxy.drop_all(rst=False) == 1
                await eventually(
                    lambda: proxy.accepted == 2 and stat(beanstalkd, "current-waiting") == 1,
                    what="a new lane waits in reserve",
                )
                await within(producer.put_many([b"r02-%d" % i for i in range(5)]))
                await eventually(lambda: deleted(beanstalkd, tube) == 5 and len(got.values) == 5)
                assert got.error is None and not got.completed
                assert [outcome.ok for outcome in got.values] == [True] * 5
                # The new lane restored its watch list before its first reserve.
                assert proxy.links[1].commands()[:3] == [
                    b"watch r02",
                    b"ignore default",
                    b"reserve-with-timeout 5",
                ]
            finally:
                subscription.dispose()
                consumer.close()
            assert proxy.accepted == 2  # reconnects == 1
        assert handler.bodies() == Counter(b"r02-%d" % i for i in range(5))  # each once
        assert assert_conserved(beanstalkd, tube)["deleted"] == 5

    run(main(), producer)


def test_r03_job_held_at_a_drop_is_never_settled_on_the_new_connection(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R03: J is redelivered; its old handle's delete is JobLostError and never crosses."""
    tube = "r03"
    producer = make_client(beanstalkd)
    handler = Gate(hold=1)

    async def main() -> None:
        await within(producer.use(tube))
        job_id = await within(producer.put(b"J"))
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = through(proxy, command_timeout=DEADLINE)
            got, subscription = consume(consumer, tube, handler)
            try:
                await within(handler.started.wait())  # the handler is processing J
                assert reserved(beanstalkd, tube) == 1
                assert proxy.drop_all(rst=True) == 1
                # The server put J back; a new lane got it and the second delivery
                # (which does not wait) deleted it.
                await eventually(lambda: deleted(beanstalkd, tube) == 1, what="J redelivered")
                stale, fresh = handler.seen
                assert stale.id == fresh.id == job_id
                with pytest.raises(JobLostError):
                    await within(stale.delete())  # the user's settle of the old handle
                handler.open()  # the first handler ends: process tries its delete too
                await asyncio.sleep(QUIET)  # a window for a stale delete to cross
                assert got.error is None and not got.completed
            finally:
                subscription.dispose()
                consumer.close()
            # One delete of J crossed, on the link that reserved J the second time.
            (link,) = deletes_of(proxy, job_id)
            assert link != 0 and job_id in proxy.links[link].reserved_ids()
            assert proxy.links[0].settles() == []
            assert proxy.stale_settles() == []
        assert handler.bodies() == Counter({b"J": 2})  # dups == 1 == jobs in flight at drop
        totals = assert_conserved(beanstalkd, tube)
        assert totals["deleted"] == 1 and totals["reserved"] == 0

    run(main(), producer)


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "never-arrived"])
def test_r04_put_whose_reply_is_lost_is_connection_lost_and_not_retried(
    beanstalkd: BeanstalkdServer, landed: bool
) -> None:
    """R04: a put cut off before its reply is ConnectionLostError, landed or not; never resent.

    This library has no opt-in put retry: the outcome is the caller's to decide.
    """

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=2.0)
            try:
                await within(client.stats())
                if landed:
                    # The put reaches the server's socket; the server is stopped, so its
                    # reply cannot come before the drop. It runs the put after SIGCONT.
                    with Stopped(beanstalkd):
                        put = asyncio.ensure_future(client.put(b"lost reply", priority=0))
                        await eventually(lambda: unread_bytes(beanstalkd.port) > 0)
                        proxy.drop_all(rst=True)
                        error, _ = await timed(put)
                else:
                    # The put crosses the proxy, but only its first bytes reach the server.
                    proxy.set_rate(10)
                    put = asyncio.ensure_future(client.put(b"lost reply", priority=0))
                    await eventually(lambda: len(put_lines(proxy)) == 1)
                    proxy.drop_all(rst=True)
                    error, _ = await timed(put)
                    proxy.set_rate(None)
                assert type(error) is ConnectionLostError, repr(error)
                await eventually(
                    lambda: stat(beanstalkd, "total-jobs") == (1 if landed else 0),
                    what="the server's outcome",
                )
                assert put_lines(proxy) == [b"put 0 0 60 10"]

                # The next put goes on a new connection; the lost one is not sent again.
                job_id = await within(client.put(b"next", priority=0))
                await asyncio.sleep(QUIET)  # a window for a background retry to show
                assert proxy.accepted == 2
                assert put_lines(proxy) == [b"put 0 0 60 10", b"put 0 0 60 4"]
                assert [c for c in proxy.links[1].commands() if c.startswith(b"put")] == [
                    b"put 0 0 60 4"
                ]
                assert stat(beanstalkd, "cmd-put") == (2 if landed else 1)
                assert stat(beanstalkd, "total-jobs") == (2 if landed else 1)
                assert job_id == (2 if landed else 1)
            finally:
                client.close()

    run(main())


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "never-arrived"])
def test_r05_delete_whose_reply_is_lost_is_job_lost_and_the_job_may_come_back(
    beanstalkd: BeanstalkdServer, landed: bool
) -> None:
    """R05: a delete cut off before DELETED is JobLostError; if it did not land, J comes back."""
    producer = make_client(beanstalkd)

    async def main() -> None:
        job_id = await within(producer.put(b"J", priority=0))
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=2.0)
            try:
                job = await within(client.reserve(timeout=0))
                assert job.id == job_id
                if landed:
                    with Stopped(beanstalkd):
                        ack = asyncio.ensure_future(job.delete())
                        await eventually(lambda: unread_bytes(beanstalkd.port) > 0)
                        proxy.drop_all(rst=True)
                        error, _ = await timed(ack)
                else:
                    proxy.set_rate(10)
                    ack = asyncio.ensure_future(job.delete())
                    await eventually(lambda: deletes_of(proxy, job_id) == [0])
                    proxy.drop_all(rst=True)
                    error, _ = await timed(ack)
                    proxy.set_rate(None)
                assert type(error) is JobLostError, repr(error)
                assert isinstance(error, ConnectionLostError)  # the outcome is unknown
                with pytest.raises(JobSettledError):
                    await within(job.delete())  # trying again sends nothing either

                if landed:
                    await eventually(lambda: stat(beanstalkd, "cmd-delete") == 1)
                    assert stat(beanstalkd, "current-jobs-ready") == 0
                else:
                    # J is back: the consumer sees it again and settles it on that link.
                    again = await within(client.reserve(timeout=1))
                    assert again.id == job_id and again.body == b"J"
                    assert await within(again.delete()) == job_id
                assert deletes_of(proxy, job_id) == ([0] if landed else [0, 1])
                assert proxy.stale_settles() == []
                assert stat(beanstalkd, "cmd-delete") == 1  # dups <= unknown acks; no loss
                assert stat(beanstalkd, "current-jobs-reserved") == 0
                assert stat(beanstalkd, "total-jobs") == 1
            finally:
                client.close()

    run(main(), producer)


@pytest.mark.parametrize("fault", ["fin", "rst", "write-after-reset"])
def test_r06_fin_rst_and_a_failed_write_are_the_same_error(
    beanstalkd: BeanstalkdServer, fault: str
) -> None:
    """R06: an in-flight op sees FIN, RST or a failed write as exactly ConnectionLostError."""
    producer = make_client(beanstalkd)

    async def main() -> list[BaseException]:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=5.0)
            try:
                await within(client.stats())
                if fault == "write-after-reset":
                    # The op is written in the same tick as the reset: the client's write
                    # to the reset socket is what fails (ECONNRESET/EPIPE from send).
                    proxy.drop_all(rst=True)
                    error, _ = await timed(client.stats())
                    assert proxy.links[0].commands() == [b"stats"]  # it never crossed
                    return [error]
                # A reserve waiting on the server, and a put the server has not read yet.
                waiting = asyncio.ensure_future(client.reserve(timeout=30))
                await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
                with Stopped(beanstalkd):
                    put = asyncio.ensure_future(client.put(b"in flight"))
                    await eventually(lambda: unread_bytes(beanstalkd.port) > 0)
                    assert proxy.drop_all(rst=fault == "rst") == 2
                    return [(await timed(op))[0] for op in (waiting, put)]
            finally:
                client.close()

    for error in run(main(), producer):
        assert type(error) is ConnectionLostError, repr(error)


@pytest.mark.slow
def test_r07_unreachable_server_is_retried_with_capped_backoff(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R07: connects that fail (reset at once, refused) back off; recovery within the cap."""

    async def retry_loop(client: Client, seconds: float) -> list[tuple[float, Exception]]:
        """A user's loop that tries again as soon as an op fails, with no pause of its own."""
        failures: list[tuple[float, Exception]] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                await within(client.stats(), BACKOFF_CAP + 5)
            except TransportError as error:
                failures.append((time.monotonic(), error))
            else:
                pytest.fail("an op succeeded while the server was unreachable")
        return failures

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=DEADLINE)
            try:
                await within(client.stats())

                # Accepted and reset at once: each op costs one connect attempt.
                proxy.set_accept_mode("reset")
                inodes = client_sockets(proxy)
                proxy.drop_all()
                await eventually(lambda: not still_open(inodes), what="the client saw the drop")
                failures = await retry_loop(client, 1.5)
                attempts = proxy.accept_resets
                assert all(type(e) is ConnectionLostError for _, e in failures)
                # Without backoff this loop makes thousands of attempts; with it the
                # delays double from BACKOFF_BASE (times a jitter of 0.5-1): 5 to 7 fit.
                assert 3 <= attempts <= 9, attempts
                assert attempts == len(failures)
                gaps = [b[0] - a[0] for a, b in itertools.pairwise(failures)]
                assert gaps[-1] > gaps[0], gaps  # growing, not a fixed rate

                # Nothing listens: refused, a typed ConnectError; the backoff keeps growing.
                proxy.set_accept_mode("refuse")
                await eventually(lambda: not listening(proxy.port))
                failures = await retry_loop(client, 1.0)
                assert failures and all(type(e) is ConnectError for _, e in failures)
                assert len(failures) <= 3

                # Back: the loop's next attempt comes within the cap, and succeeds.
                proxy.set_accept_mode("forward")
                await eventually(lambda: listening(proxy.port))
                back = time.monotonic()
                while True:
                    try:
                        await within(client.stats(), BACKOFF_CAP + 5)
                        break
                    except TransportError:
                        continue
                assert time.monotonic() - back <= BACKOFF_CAP + SLACK
                assert proxy.accept_resets == attempts  # no reset-mode attempt since
            finally:
                client.close()

    run(main(), timeout=30)


def test_r08_server_that_accepts_but_never_answers(beanstalkd: BeanstalkdServer) -> None:
    """R08: a server that accepts and never answers is CommandTimeoutError, then recovery.

    There is no handshake to time out: the first command's deadline (command_timeout)
    fires; the client closes that connection and recovers once the server answers.
    """

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            proxy.set_accept_mode("hold")
            client = through(proxy, command_timeout=DEADLINE)
            try:
                started = time.monotonic()
                op = asyncio.ensure_future(client.stats())
                await eventually(lambda: len(client_sockets(proxy)) == 1)
                inodes = client_sockets(proxy)
                error, _ = await timed(op)
                took = time.monotonic() - started
                assert type(error) is CommandTimeoutError, repr(error)
                assert DEADLINE - 0.05 <= took <= DEADLINE + SLACK
                assert proxy.links[0].held and proxy.links[0].commands() == [b"stats"]
                await eventually(lambda: not still_open(inodes), what="the client closed it")

                proxy.set_accept_mode("forward")
                stats, took = await timed(client.stats())
                assert not isinstance(stats, Exception), repr(stats)
                assert took <= BACKOFF_BASE + SLACK  # one failed attempt: a short backoff
                assert proxy.accepted == 2
            finally:
                client.close()

    run(main())


# ----------------------------------------------------------------------------- B. silence


def test_r09_half_open_reserve_fails_within_its_timeout_plus_grace(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R09: reserve(timeout=1) on a half-open link fails by 1 s + grace, then recovers.

    The grace is command_timeout. The next reserve, on a new link, gets the job put
    meanwhile.
    """
    producer = make_client(beanstalkd)

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=DEADLINE)
            try:
                waiting = asyncio.ensure_future(client.reserve(timeout=1))
                await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
                sent = time.monotonic()
                inodes = client_sockets(proxy)
                proxy.drop_all(side="server")  # the server forgets; the client hears nothing
                job_id = await within(producer.put(b"put meanwhile"))
                error, _ = await timed(waiting)
                took = time.monotonic() - sent
                assert type(error) is CommandTimeoutError, repr(error)
                # Not at the timeout alone (the server's TIMED_OUT never comes): after it.
                assert 1.0 + DEADLINE - 0.25 <= took <= 1.0 + DEADLINE + SLACK, took
                await eventually(lambda: not still_open(inodes), what="the half-open link closed")

                job = await within(client.reserve(timeout=1))
                assert (job.id, job.body) == (job_id, b"put meanwhile")
                assert await within(job.delete()) == job_id
                assert proxy.accepted == 2
            finally:
                client.close()

    run(main(), producer)


@pytest.mark.slow
def test_r09_half_open_stream_lane_recovers_within_its_reserve_deadline(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R09 (stream): a half-open lane is noticed by its reserve timeout plus grace.

    The stream reconnects without an error reaching the subscriber, and the job put
    meanwhile is processed once.
    """
    tube = "r09"
    producer = make_client(beanstalkd)
    handler = Gate(hold=0)

    async def main() -> None:
        await within(producer.use(tube))
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = through(proxy, command_timeout=DEADLINE)
            got, subscription = consume(consumer, tube, handler)
            try:
                await eventually(lambda: stat(beanstalkd, "current-waiting") == 1)
                sent = time.monotonic()  # (the lane's reserve went out just before)
                proxy.drop_all(side="server")
                await within(producer.put(b"put meanwhile"))
                await eventually(
                    lambda: deleted(beanstalkd, tube) == 1,
                    what="the job processed after recovery",
                    timeout=LANE_RESERVE_WAIT + DEADLINE + 2 * SLACK,
                )
                took = time.monotonic() - sent
                assert took <= LANE_RESERVE_WAIT + DEADLINE + SLACK, took
                assert got.error is None and not got.completed
                assert proxy.accepted == 2
                assert len(proxy.links[0].commands()) == 3  # watch, ignore, one reserve
            finally:
                subscription.dispose()
                consumer.close()
        assert handler.bodies() == Counter({b"put meanwhile": 1})

    run(main(), producer)


@pytest.mark.parametrize("op", ["put", "delete", "touch"])
def test_r10_op_on_a_half_open_link_times_out_and_the_link_is_not_reused(
    beanstalkd: BeanstalkdServer, op: str
) -> None:
    """R10: put/delete/touch on a half-open link fail after command_timeout; no reuse.

    A held job's settle fails as JobLostError caused by CommandTimeoutError. The link is
    closed, never reused, and a pipeline on the new one gets its own replies in order.
    """
    producer = make_client(beanstalkd)

    async def main() -> None:
        job_id = await within(producer.put(b"held"))
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=DEADLINE)
            try:
                attempt: Callable[[], Awaitable[Any]]
                if op == "put":
                    await within(client.stats())  # the command link
                    attempt = functools.partial(client.put, b"into the void")
                else:
                    job = await within(client.reserve(timeout=0))  # a reserving link
                    assert job.id == job_id
                    attempt = job.delete if op == "delete" else job.touch
                inodes = client_sockets(proxy)
                assert len(inodes) == 1
                proxy.drop_all(side="server")  # the server forgets; the client hears nothing
                error, took = await timed(attempt())
                assert DEADLINE - 0.05 <= took <= DEADLINE + SLACK, took
                if op == "put":
                    assert type(error) is CommandTimeoutError, repr(error)
                else:
                    assert type(error) is JobLostError, repr(error)
                    assert type(error.__cause__) is CommandTimeoutError
                await eventually(lambda: not still_open(inodes), what="the link closed")
                # Nothing reached the server: the job is back to ready, nothing was put.
                assert beanstalkd.stats_job(job_id)["state"] == "ready"
                assert stat(beanstalkd, "total-jobs") == 1

                # A new link; a pipeline on it gets its own replies, in order.
                ids = await within(asyncio.gather(*(client.put(b"r10-%d" % i) for i in range(5))))
                for i, new_id in enumerate(ids):
                    assert beanstalkd.query(b"peek %d\r\n" % new_id).endswith(b"r10-%d\r\n" % i)
                again = await within(client.reserve(timeout=0))
                assert (again.id, again.body) == (job_id, b"held")
                assert await within(again.delete()) == job_id
                assert proxy.accepted == 3  # the dead link, then a command and a reserving one
                # The timed-out command never crossed: nothing read the dead link again.
                first = b"stats" if op == "put" else b"reserve-with-timeout 0"
                assert proxy.links[0].commands() == [first]
                assert proxy.stale_settles() == []
            finally:
                client.close()
                proxy.release_orphans()

    run(main(), producer)


def test_r11_a_stall_shorter_than_the_deadline_costs_latency_only(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R11: stall(1.0) under command_timeout=2.5: every op succeeds ~1 s late, no reconnect."""
    producer = make_client(beanstalkd)
    stall, deadline = 1.0, 2.5

    async def main() -> None:
        await within(producer.put(b"held"))
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=deadline)
            try:
                await within(client.stats())
                job = await within(client.reserve(timeout=0))
                accepted = proxy.accepted
                proxy.stall(stall)
                results, took = await timed(
                    asyncio.gather(client.put(b"a"), client.put(b"b"), client.stats(), job.touch()),
                    deadline + 5,
                )
                assert not isinstance(results, Exception), repr(results)
                assert stall - 0.05 <= took < deadline, took
                a, b, _, touched = results
                assert touched == job.id
                assert beanstalkd.query(b"peek %d\r\n" % a).endswith(b"\r\na\r\n")
                assert beanstalkd.query(b"peek %d\r\n" % b).endswith(b"\r\nb\r\n")
                assert await within(job.delete()) == job.id
                assert proxy.accepted == accepted  # no reconnect
                assert not any(link.closed for link in proxy.links)
            finally:
                client.close()

    run(main(), producer)


@pytest.mark.parametrize("holder", ["idle", "acking"])
def test_r12_stall_longer_than_the_deadline_while_holding_a_job(
    beanstalkd: BeanstalkdServer, holder: str
) -> None:
    """R12: a stall past the deadline while holding a job: timeout, close, reconnect.

    Once the proxy lets the old server half go, the held job is settled exactly once.

    ``idle``: the handler still runs; the lane's own TTR check (stats-job after 1 s) is the
    command that times out, and the job is redelivered once the server half closes.
    ``acking``: the handler finished; its delete times out (outcome unknown, JobLostError
    inside process) and lands late, when the stall ends: no redelivery.
    """
    tube = "r12"
    producer = make_client(beanstalkd)
    handler = Gate(hold=1)

    async def main() -> None:
        await within(producer.use(tube))
        job_id = await within(producer.put(b"J"))
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = through(proxy, command_timeout=DEADLINE)
            got, subscription = consume(consumer, tube, handler)
            try:
                await within(handler.started.wait())
                inodes = client_sockets(proxy)
                assert len(inodes) == 1
                proxy.stall()
                stalled = time.monotonic()
                if holder == "acking":
                    handler.open()  # its delete goes into the stall
                    detect = DEADLINE
                else:
                    detect = LANE_FIRST_CHECK + DEADLINE
                await eventually(
                    lambda: not still_open(inodes),
                    what="the client closed its side",
                    timeout=detect + 2 * SLACK,
                )
                assert time.monotonic() - stalled <= detect + SLACK
                await eventually(lambda: proxy.accepted >= 2, what="a reconnect")
                # The old server half still holds J while the proxy keeps it.
                assert beanstalkd.stats_job(job_id)["state"] == "reserved"
                handler.open()  # (idle) the first handler ends; its delete sends nothing

                proxy.resume()
                resumed = time.monotonic()
                await eventually(
                    lambda: deleted(beanstalkd, tube) == 1 and reserved(beanstalkd, tube) == 0,
                    what="J settled once the server half is released",
                    timeout=2 * BACKOFF_CAP,
                )
                assert time.monotonic() - resumed <= BACKOFF_CAP
                await asyncio.sleep(QUIET)  # a window for a second delete to cross
                assert got.error is None and not got.completed
            finally:
                subscription.dispose()
                consumer.close()
            assert proxy.stale_settles() == []
            (link,) = deletes_of(proxy, job_id)
            if holder == "acking":
                assert link == 0  # the late delete, on the link that reserved J
                assert handler.bodies() == Counter({b"J": 1})
            else:
                assert link != 0 and job_id in proxy.links[link].reserved_ids()
                assert handler.bodies() == Counter({b"J": 2})  # redelivered once
        totals = assert_conserved(beanstalkd, tube)
        assert totals["deleted"] == 1 and totals["total"] == 1

    run(main(), producer)


def test_r13_orphaned_connections_keep_their_jobs_until_reaped(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R13: after a client-side drop the stream goes on; orphans hold jobs until reaped.

    The orphans' two jobs stay reserved (a plateau) until release_orphans, then are
    redelivered: nothing lost, dups == 2.
    """
    tube = "r13"
    bodies = [b"r13-%d" % i for i in range(6)]
    producer = make_client(beanstalkd)
    handler = Gate(hold=2)

    async def main() -> None:
        await within(producer.use(tube))
        await within(producer.put_many(bodies))
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = through(proxy, command_timeout=DEADLINE)
            got, subscription = consume(consumer, tube, handler, max_in_flight=2)
            try:
                await within(handler.started.wait())  # two jobs held
                orphaned = {job.id for job in handler.seen}
                assert proxy.drop_all(side="client") == 2
                # The stream reconnects and works through the other four.
                await eventually(lambda: deleted(beanstalkd, tube) == 4, what="the rest done")
                await eventually(lambda: stat(beanstalkd, "current-waiting") == 2)
                handler.open()  # the orphaned jobs' handlers end; their deletes send nothing
                for _ in range(5):  # the plateau: the orphans hold their jobs
                    await asyncio.sleep(QUIET / 5)
                    assert reserved(beanstalkd, tube) == 2
                assert all(beanstalkd.stats_job(j)["state"] == "reserved" for j in orphaned)

                assert proxy.release_orphans() == 2  # what keepalive would do, hours later
                await eventually(lambda: deleted(beanstalkd, tube) == 6, what="redelivered")
                assert got.error is None and not got.completed
            finally:
                subscription.dispose()
                consumer.close()
            assert proxy.accepted == 4  # two lanes, then two new ones
            assert proxy.stale_settles() == []
            for job_id in orphaned:
                (link,) = deletes_of(proxy, job_id)
                assert link >= 2
        seen = handler.bodies()
        assert set(seen) == set(bodies)  # no loss
        assert sum(seen.values()) - len(bodies) == 2  # dups == jobs held by the orphans
        totals = assert_conserved(beanstalkd, tube)
        assert totals["deleted"] == 6 and totals["reserved"] == totals["ready"] == 0

    run(main(), producer)


@pytest.mark.slow
def test_r14_slow_link_delivers_a_60k_body_within_an_inactivity_deadline(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R14: a 60 KiB body at 20 KB/s (3 s) arrives byte-exact under command_timeout=1."""
    body = random.Random(14).randbytes(60 * 1024)
    producer = make_client(beanstalkd)

    async def main() -> None:
        job_id = await within(producer.put(body, tube="r14"))
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy, command_timeout=1.0, watch=["r14"])
            try:
                proxy.set_rate(20_000)
                job, took = await timed(client.reserve(timeout=0))
                assert isinstance(job, Job), repr(job)
                assert took > 2.5  # much longer than the deadline: it measures silence
                assert job.id == job_id
                assert hashlib.sha256(job.body).digest() == hashlib.sha256(body).digest()
                assert await within(job.delete()) == job_id
                assert proxy.accepted == 1  # reconnects == 0
            finally:
                client.close()

    run(main(), producer)


@pytest.mark.slow
def test_r14_slow_link_uploads_a_60k_body_within_the_default_deadline(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R14 (put): at 20 KB/s a 60 KiB put lands byte-exact under the default 5 s deadline.

    The client cannot see its upload's progress (the bytes leave its socket at once), so a
    put's silence is counted from its write: command_timeout must cover the upload.
    """
    body = random.Random(41).randbytes(60 * 1024)

    async def main() -> int:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = through(proxy)
            try:
                proxy.set_rate(20_000)
                job_id, took = await timed(client.put(body))
                assert isinstance(job_id, int), repr(job_id)
                assert took > 2.5
                assert proxy.accepted == 1
                return job_id
            finally:
                client.close()

    job_id = run(main())
    found = beanstalkd.query(b"peek %d\r\n" % job_id)
    assert found.startswith(b"FOUND %d %d\r\n" % (job_id, len(body)))
    assert hashlib.sha256(found.split(b"\r\n", 1)[1][:-2]).digest() == (
        hashlib.sha256(body).digest()
    )

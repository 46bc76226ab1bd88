"""``Cluster`` and ``JobRef`` against three real beanstalkd processes (issue 7).

What is asserted comes from the servers (raw ``stats``/``stats-job`` over sockets of
their own) or from the wire (a ``FaultProxy`` in front of a server), never from the
cluster's own bookkeeping alone. Waiting for a condition polls with a deadline; the few
short sleeps give something that must *not* happen the chance to happen.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from rxbeanstalk import (
    Client,
    Cluster,
    ClusterSummary,
    ConnectError,
    ConnectionLostError,
    InvalidArgumentError,
    Job,
    JobRef,
    NotFoundError,
    NotIgnoredError,
    TimedOutError,
)
from rxbeanstalk.operators import Action, Outcome, process
from rxbeanstalk.testing import BeanstalkdServer, FaultProxy
from rxbeanstalk.testing.pytest_plugin import BeanstalkdFactory
from tests.conftest import eventually, job_state, stat, wait_until, within

T = TypeVar("T")

# Long enough for something that should not happen to have happened if it were going to.
QUIET = 0.2
# Short backoffs, so a restarted server is found again quickly.
FAST: dict[str, Any] = {"retry_base": 0.05, "retry_cap": 0.3}


# ----------------------------------------------------------------------------- helpers


def run(main: Awaitable[T], timeout: float = 9.0) -> T:
    """Run ``main`` in a fresh event loop, bounded by ``timeout`` seconds in all."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await main

    return asyncio.run(bounded())


def three(factory: BeanstalkdFactory, **options: Any) -> list[BeanstalkdServer]:
    return [factory(**options) for _ in range(3)]


def jobs_on(server: BeanstalkdServer) -> int:
    """Jobs the server holds now, in any state."""
    stats = server.stats()
    return sum(
        int(stats[f"current-jobs-{state}"]) for state in ("ready", "reserved", "delayed", "buried")
    )


def key_for(cluster: Cluster, address: str) -> str:
    """A key whose server, while all are up, is ``address``."""
    return next(f"key-{n}" for n in range(10_000) if cluster.server_for(f"key-{n}") == address)


async def put_all(cluster: Cluster, bodies: list[str], **options: Any) -> list[JobRef]:
    """One ``cluster.put`` per body, all in flight at once."""
    return list(await within(asyncio.gather(*(_await(cluster.put(b, **options)) for b in bodies))))


async def _await(observable: Awaitable[T]) -> T:
    return await observable


class Sink:
    """Collects a stream's values and its end."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.errors: list[Exception] = []
        self.completed = False

    def on_next(self, value: Any) -> None:
        self.values.append(value)

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)

    def on_completed(self) -> None:
        self.completed = True


# ----------------------------------------------------------------------------- spreading


def test_round_robin_spreads_puts_evenly(beanstalkd_factory: BeanstalkdFactory) -> None:
    servers = three(beanstalkd_factory)

    async def main() -> tuple[list[JobRef], list[JobRef]]:
        async with Cluster([s.address for s in servers]) as cluster:
            singles = await put_all(cluster, [f"one-{i}" for i in range(300)])
            many: list[JobRef] = []
            cluster.put_many([f"many-{i}" for i in range(30)]).subscribe(many.append)
            await eventually(lambda: len(many) == 30)
            return singles, many

    singles, many = run(main())
    by_server = collections.Counter(ref.server for ref in singles)
    assert by_server == {s.address: 100 for s in servers}
    assert collections.Counter(ref.server for ref in many) == {s.address: 10 for s in servers}
    for server in servers:
        assert stat(server, "total-jobs") == 110
        assert stat(server, "cmd-put") == 110
        ids = sorted(ref.id for ref in singles + many if ref.server == server.address)
        assert ids == list(range(1, 111))  # each server numbers its own jobs


def test_hash_keeps_a_key_on_one_server_and_spreads_keys(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    servers = three(beanstalkd_factory)
    addresses = [s.address for s in servers]

    async def main() -> tuple[list[JobRef], list[JobRef], str]:
        async with Cluster(addresses, strategy="hash") as cluster:
            with pytest.raises(InvalidArgumentError):
                cluster.put(b"no key")  # strategy="hash" wants one, at call time
            home = cluster.server_for("customer-42")
            same = await put_all(cluster, ["order"] * 20, key="customer-42")
            spread = [await within(cluster.put(f"k{i}", key=f"user-{i}")) for i in range(300)]
            return same, spread, home

    same, spread, home = run(main())
    assert {ref.server for ref in same} == {home}
    for server in servers:
        assert stat(server, "total-jobs") == (20 if server.address == home else 0) + sum(
            1 for ref in spread if ref.server == server.address
        )
    shares = collections.Counter(ref.server for ref in spread)
    assert set(shares) == set(addresses)
    assert all(60 <= share <= 140 for share in shares.values()), shares
    # The ring depends on the servers, not on the order they are listed in, so every
    # producer agrees where a key lives.
    reordered = Cluster(list(reversed(addresses)))
    same_place = [(f"user-{i}", ref.server) for i, ref in enumerate(spread)]
    assert all(reordered.server_for(key) == server for key, server in same_place)
    reordered.close()


# ----------------------------------------------------------------------------- routing


def test_job_commands_go_to_the_jobs_own_server(beanstalkd_factory: BeanstalkdFactory) -> None:
    a, b, c = servers = three(beanstalkd_factory)

    async def main() -> None:
        async with Cluster([s.address for s in servers]) as cluster:
            refs = await put_all(cluster, ["A", "B", "C"])
            # Every server numbered its job 1: only the server in the JobRef tells them
            # apart.
            assert sorted(refs) == sorted(JobRef(s.address, 1) for s in servers)
            with pytest.raises(InvalidArgumentError):
                cluster.delete(1)  # type: ignore[arg-type]
            with pytest.raises(InvalidArgumentError):
                cluster.delete(JobRef("127.0.0.1:1", 1))
            with pytest.raises(InvalidArgumentError):
                cluster.stats_job(("x", 1))  # type: ignore[arg-type]
            outsider = Client(a.host, a.port)
            with pytest.raises(InvalidArgumentError):
                cluster.delete(Job(1, b"", outsider))
            outsider.close()

            assert await within(cluster.delete(JobRef(b.address, 1))) == 1
            stats = await within(cluster.stats_job(JobRef(c.address, 1)))
            assert stats.state.value == "ready"
            peeked = await within(cluster.peek(JobRef(a.address, 1)))
            assert peeked.body == b"A" and JobRef.of(peeked) == JobRef(a.address, 1)

            # A reserved Job is settled on its own server, over its own connection.
            job = await within(cluster.reserve_job(JobRef(c.address, 1)))
            assert JobRef.of(job) == JobRef(c.address, 1)
            await within(cluster.bury(job))
            assert await within(cluster.kick_job(JobRef(c.address, 1))) == 1

    run(main())
    assert job_state(a, 1) == "ready"
    assert job_state(b, 1) is None
    assert job_state(c, 1) == "ready"
    assert [stat(s, "cmd-delete") for s in servers] == [0, 1, 0]
    assert [stat(s, "cmd-bury") for s in servers] == [0, 0, 1]


# ----------------------------------------------------------------------------- streams


def test_merged_stream_drains_every_server_and_settles_each_job_at_home(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    servers = three(beanstalkd_factory)
    per_server, lanes = 20, 2
    busy: collections.Counter[str] = collections.Counter()
    peak: collections.Counter[str] = collections.Counter()

    async def handler(job: Job) -> None:
        home = JobRef.of(job).server
        busy[home] += 1
        peak[home] = max(peak[home], busy[home])
        try:
            await asyncio.sleep(0.002)  # some work, so that lanes overlap
        finally:
            busy[home] -= 1

    async def main() -> None:
        proxies = [await FaultProxy(s.port).start() for s in servers]
        try:
            addresses = [f"127.0.0.1:{p.port}" for p in proxies]
            async with Cluster(addresses) as cluster:
                refs = await put_all(cluster, [f"job-{i}" for i in range(3 * per_server)])
                placed = {f"job-{i}".encode(): ref for i, ref in enumerate(refs)}
                got = Sink()
                subscription = (
                    cluster.reserve_stream(max_in_flight=lanes)
                    .pipe(process(handler))
                    .subscribe(got.on_next, got.on_error)
                )
                try:
                    await eventually(lambda: len(got.values) == 3 * per_server, timeout=8)
                finally:
                    subscription.dispose()
                outcomes: list[Outcome] = got.values
                assert got.errors == []
                assert {o.action for o in outcomes} == {Action.DELETED}
                # Each job was handled as the job of the server it was put on.
                assert {o.job.body: JobRef.of(o.job) for o in outcomes} == placed
                for proxy, address in zip(proxies, addresses, strict=True):
                    # On the wire: every settle went over the connection that reserved
                    # its job, and each of this server's jobs was deleted here.
                    assert proxy.stale_settles() == []
                    deleted = [
                        i for link in proxy.links for v, i in link.settles() if v == b"delete"
                    ]
                    assert sorted(deleted) == sorted(r.id for r in refs if r.server == address)
        finally:
            for proxy in proxies:
                await proxy.stop()

    run(main())
    for server in servers:
        assert stat(server, "cmd-delete") == per_server == stat(server, "total-jobs")
        assert jobs_on(server) == 0
    assert len(peak) == 3  # every server's lanes had jobs in progress...
    assert all(1 <= n <= lanes for n in peak.values()), peak  # ...never over the credit


def test_a_server_stopped_mid_run_and_restarted_loses_nothing(
    beanstalkd_factory: BeanstalkdFactory, tmp_path: Path
) -> None:
    # With a binlog the stopped server keeps its jobs, including the ones its lanes held.
    a, b, c = servers = [beanstalkd_factory(binlog_dir=tmp_path / n) for n in "abc"]
    lanes = 2

    async def main() -> None:
        hold_a = asyncio.Event()
        outcomes: list[Outcome] = []
        errors: list[Exception] = []

        async def handler(job: Job) -> None:
            if JobRef.of(job).server == a.address and not hold_a.is_set():
                await hold_a.wait()  # A's jobs stay in progress until A has gone

        async with Cluster([s.address for s in servers], **FAST) as cluster:
            # patience=0.3: the stream would fail if "some server down" counted as an
            # outage; it must not, as long as one server is up.
            stream = cluster.reserve_stream(max_in_flight=lanes, patience=0.3)
            subscription = stream.pipe(process(handler)).subscribe(outcomes.append, errors.append)

            def deleted() -> list[Outcome]:
                return [o for o in outcomes if o.action is Action.DELETED]

            try:
                first: list[JobRef] = []
                cluster.put_many([f"p1-{i}" for i in range(30)]).subscribe(first.append)
                await eventually(lambda: len(first) == 30)
                assert collections.Counter(r.server for r in first) == {
                    s.address: 10 for s in servers
                }
                await eventually(
                    lambda: len(deleted()) == 20 and stat(a, "current-jobs-reserved") == lanes,
                    what="B and C drained, A's lanes holding their jobs",
                )

                a.stop()
                await eventually(lambda: cluster.down == [a.address], what="A marked down")
                second = await put_all(cluster, [f"p2-{i}" for i in range(30)])
                assert collections.Counter(r.server for r in second) == {
                    b.address: 15,
                    c.address: 15,
                }
                await eventually(lambda: len(deleted()) == 50, what="B and C drain on")
                hold_a.set()  # A's held jobs: their reservations died with A
                await eventually(lambda: len(outcomes) == 52)
                lost = [o for o in outcomes if o.action is Action.LOST]
                assert len(lost) == lanes
                assert {JobRef.of(o.job).server for o in lost} == {a.address}
                assert errors == []

                a.restart()
                await eventually(lambda: not cluster.down, what="A marked up again")
                await eventually(lambda: len(deleted()) == 60, what="A's jobs drained")
                third = await put_all(cluster, [f"p3-{i}" for i in range(30)])
                assert collections.Counter(r.server for r in third) == {
                    s.address: 10 for s in servers
                }
                await eventually(lambda: len(deleted()) == 90)
            finally:
                subscription.dispose()
            assert errors == []

        # Nothing lost, nothing doubled, each job settled on the server it was put on.
        placed: dict[bytes, str] = {}
        for phase, refs in (("p1", first), ("p2", second), ("p3", third)):
            placed.update({f"{phase}-{i}".encode(): ref.server for i, ref in enumerate(refs)})
        done = deleted()
        assert collections.Counter(o.job.body for o in done) == collections.Counter(list(placed))
        assert all(JobRef.of(o.job).server == placed[o.job.body] for o in done)
        # The servers agree: B and C deleted every job they ever had; A (restarted from
        # its binlog) deleted the 10 jobs it got back plus those put after the restart.
        for server in (b, c):
            put_here = sum(1 for s in placed.values() if s == server.address)
            assert stat(server, "total-jobs") == put_here == stat(server, "cmd-delete")
        assert stat(a, "cmd-delete") == 10 + stat(a, "total-jobs") == 20
        assert [jobs_on(s) for s in servers] == [0, 0, 0]

    run(main())


def test_stream_fails_only_after_every_server_was_down_for_its_patience(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    servers = three(beanstalkd_factory)

    async def main() -> None:
        async with Cluster([s.address for s in servers], **FAST) as cluster:
            waiting, patient = Sink(), Sink()
            impatient = cluster.reserve_stream(patience=0.5).subscribe(
                waiting.on_next, waiting.on_error
            )
            forever = cluster.reserve_stream(patience=None).subscribe(
                patient.on_next, patient.on_error
            )
            await eventually(lambda: all(stat(s, "current-waiting") == 2 for s in servers))
            for server in servers:
                server.stop()
            await eventually(lambda: len(cluster.down) == 3)
            started = asyncio.get_running_loop().time()
            await eventually(lambda: waiting.errors, what="the impatient stream fails")
            assert asyncio.get_running_loop().time() - started >= 0.4
            assert isinstance(waiting.errors[0], ConnectError)
            assert "every server" in str(waiting.errors[0])
            assert patient.errors == []
            impatient.dispose()

            # The patient one picks up again when a server comes back.
            servers[1].restart()
            await eventually(lambda: stat(servers[1], "current-waiting") == 1)
            await within(cluster.put(b"back"))
            await eventually(lambda: len(patient.values) == 1)
            assert patient.errors == []
            forever.dispose()

    run(main())


def test_a_consumer_that_raises_ends_the_merged_stream(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    servers = three(beanstalkd_factory)

    async def main() -> None:
        async with Cluster([s.address for s in servers]) as cluster:
            await put_all(cluster, [f"j{i}" for i in range(6)])
            got = Sink()
            calls = 0

            def broken(job: Job) -> None:
                nonlocal calls
                calls += 1
                raise RuntimeError("consumer bug")

            cluster.reserve_stream(max_in_flight=2, drain_timeout=0.1).subscribe(
                broken, got.on_error
            )
            await eventually(lambda: got.errors)
            assert isinstance(got.errors[0], RuntimeError) and calls >= 1
            # Every server's lanes close and hand their jobs back.
            await eventually(
                lambda: (
                    all(stat(s, "current-jobs-ready") == 2 for s in servers)
                    and all(stat(s, "current-workers") == 0 for s in servers)
                ),
                what="all six jobs ready again, no lane left",
            )
            await asyncio.sleep(QUIET)
            assert len(got.errors) == 1

    run(main())


# ----------------------------------------------------------------------------- failures


def test_put_falls_through_only_when_nothing_was_sent(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    a, b, c = servers = three(beanstalkd_factory)
    a.stop()  # refused from the start: the cluster has not heard of it yet

    async def main() -> None:
        async with Cluster([s.address for s in servers], **FAST) as cluster:
            assert cluster.down == []
            # A's turn first: refused (nothing sent), so the put moves on to B.
            first = await within(cluster.put(b"discover"))
            assert first == JobRef(b.address, 1) and cluster.down == [a.address]
            # From now on A is skipped without a try, and puts spread over B and C.
            refs = await put_all(cluster, [f"rr-{i}" for i in range(6)])
            assert collections.Counter(r.server for r in refs) == {b.address: 3, c.address: 3}
            # A key whose server is down falls through along the ring, to one server.
            key = key_for(cluster, a.address)
            keyed = [await within(cluster.put(f"k-{i}", key=key)) for i in range(5)]
            assert len({r.server for r in keyed}) == 1 and keyed[0].server != a.address

            a.restart()
            await eventually(lambda: cluster.down == [], what="the probe finds A again")
            home = await within(cluster.put(b"home", key=key))
            assert home == JobRef(a.address, 1)

            for server in servers:
                server.stop()
            with pytest.raises(ConnectError):
                await within(cluster.stats())  # no server answers: each is marked down
            assert len(cluster.down) == 3
            # Every server known down: the put fails at once, having sent nothing.
            with pytest.raises(ConnectError, match="no job was made"):
                await within(cluster.put(b"nowhere"))

    run(main())


def test_a_draining_server_sends_puts_to_the_others(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    a, b, c = servers = three(beanstalkd_factory)
    a.drain()
    wait_until(lambda: a.stats()["draining"] == "true")

    async def main() -> None:
        async with Cluster([s.address for s in servers]) as cluster:
            key = key_for(cluster, a.address)
            # DRAINING says no job was made, so the put moves on along the ring.
            keyed = await within(cluster.put(b"keyed", key=key))
            assert keyed.server != a.address
            refs = await put_all(cluster, [f"rr-{i}" for i in range(6)])
            many: list[JobRef] = []
            cluster.put_many([f"many-{i}" for i in range(9)]).subscribe(many.append)
            await eventually(lambda: len(many) == 9)
            assert a.address not in {r.server for r in [*refs, *many]}
            assert cluster.down == []  # draining is not down: A still answers

    run(main())
    assert stat(a, "total-jobs") == 0 and stat(a, "cmd-put") >= 2
    assert stat(b, "total-jobs") + stat(c, "total-jobs") == 16


def test_a_put_whose_reply_was_lost_is_never_put_again(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    a, b, c = servers = three(beanstalkd_factory)

    async def main() -> None:
        async with FaultProxy(a.port) as proxy:
            addresses = [f"127.0.0.1:{proxy.port}", b.address, c.address]
            async with Cluster(addresses, command_timeout=0.5, **FAST) as cluster:
                key = key_for(cluster, addresses[0])
                await put_all(cluster, ["warm-a", "warm-b", "warm-c"])  # connections open
                puts_before = [stat(s, "cmd-put") for s in servers]

                # 1. The put's bytes reach the proxy, which holds them: no reply comes.
                proxy.stall()
                with pytest.raises(ConnectionLostError) as lost:
                    await within(cluster.put(b"reply-lost", key=key))
                assert any("may exist" in note for note in lost.value.__notes__)
                proxy.resume()  # ...and the held bytes arrive after all: the job exists
                await eventually(lambda: stat(a, "cmd-put") == puts_before[0] + 1)
                await asyncio.sleep(QUIET)
                assert [stat(s, "cmd-put") for s in servers] == [
                    puts_before[0] + 1,
                    puts_before[1],
                    puts_before[2],
                ]
                assert proxy.c2s.count(b"reply-lost") == 1

                # 2. The connection drops while the put is out: the error, nothing more.
                await eventually(lambda: cluster.down == [])
                await within(cluster.put(b"reconnect", key=key))
                proxy.stall()
                pending = asyncio.ensure_future(_await(cluster.put(b"dropped", key=key)))
                await eventually(lambda: proxy.held_bytes > 0, "the put reached the proxy")
                proxy.drop_all()
                with pytest.raises(ConnectionLostError):
                    await within(pending)
                proxy.resume()
                await asyncio.sleep(QUIET)
                assert [stat(s, "cmd-put") for s in servers] == [
                    puts_before[0] + 2,
                    puts_before[1],
                    puts_before[2],
                ]
                assert b"dropped" not in proxy.c2s

    run(main())


# ----------------------------------------------------------------------------- every server


def test_tube_commands_apply_to_every_server(beanstalkd_factory: BeanstalkdFactory) -> None:
    a, b, c = servers = three(beanstalkd_factory)

    async def main() -> None:
        async with Cluster([s.address for s in servers], **FAST) as cluster:
            key_a = key_for(cluster, a.address)
            await within(cluster.put(b"wake", key=key_a))  # A's command connection opens
            a.stop()
            stats = await within(cluster.stats())  # A fails to answer: marked down
            assert list(stats) == [b.address, c.address] and cluster.down == [a.address]
            # Tube state is recorded for A too, and reaches it when it comes back.
            assert await within(cluster.use("emails")) == "emails"
            assert await within(cluster.watch("emails")) == 2
            assert await within(cluster.ignore("default")) == 1
            with pytest.raises(NotIgnoredError):
                await within(cluster.ignore("emails"))
            assert cluster.used == "emails" and cluster.watched == ("emails",)
            for server in (b, c):
                assert stat(server, "current-using", "emails") == 1
                assert stat(server, "current-watching", "emails") == 1

            a.restart()
            await eventually(lambda: cluster.down == [])
            ref = await within(cluster.put(b"to-a", key=key_a))
            assert ref.server == a.address
            assert a.stats_job(ref.id)["tube"] == "emails"

            for i in range(6):
                await within(cluster.put(f"b{i}", priority=5))
            for server in servers:
                assert stat(server, "current-jobs-ready", "emails") >= 1
            # Bury three jobs, wherever they come from, then kick them all back at once.
            for _ in servers:
                job = await within(cluster.reserve(timeout=1))
                await within(job.bury())
            assert (await within(cluster.summary())).current_jobs_buried == 3
            assert await within(cluster.kick(10)) == 3
            assert await within(cluster.pause_tube("emails", 60)) == "emails"
            for server in servers:
                assert int(server.stats("emails")["pause"]) == 60
                assert stat(server, "current-jobs-buried") == 0
            tubes = await within(cluster.stats_tube("emails"))
            assert list(tubes) == list(cluster.addresses)
            assert sum(t.current_jobs_ready for t in tubes.values()) == 7
            with pytest.raises(NotFoundError):
                await within(cluster.stats_tube("nowhere"))
            assert "emails" in await within(cluster.list_tubes())
            assert await within(cluster.list_tubes_watched()) == ["emails"]
            assert await within(cluster.list_tube_used()) == "emails"
            ready = await within(cluster.peek_ready())
            assert ready.body.startswith(b"b") or ready.body == b"to-a"

    run(main())


def test_stats_and_summary_cover_the_servers_that_answered(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    a, b, c = servers = three(beanstalkd_factory)

    async def main() -> None:
        async with Cluster([s.address for s in servers], **FAST) as cluster:
            await put_all(cluster, [f"s{i}" for i in range(9)])
            stats = await within(cluster.stats())
            assert list(stats) == list(cluster.addresses)
            assert [st.pid for st in stats.values()] == [s.pid for s in servers]
            summary = await within(cluster.summary())
            assert isinstance(summary, ClusterSummary)
            assert summary.servers == cluster.addresses and summary.down == ()
            assert summary.current_jobs_ready == summary.current_jobs == 9
            assert summary.total_jobs == sum(stat(s, "total-jobs") for s in servers) == 9

            b.stop()
            stats = await within(cluster.stats())
            assert list(stats) == [a.address, c.address]
            assert cluster.down == [b.address]
            summary = await within(cluster.summary())
            assert summary.down == (b.address,) and summary.current_jobs_ready == 6

            a.stop()
            c.stop()
            with pytest.raises(ConnectError):
                await within(cluster.stats())

    run(main())


# ----------------------------------------------------------------------------- loops


def test_plain_script_runs_the_whole_cluster_on_one_loop_thread(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    servers = three(beanstalkd_factory)

    def loop_threads() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "rxbeanstalk-loop"}

    before = loop_threads()
    got: queue.Queue[JobRef] = queue.Queue()
    with Cluster([s.address for s in servers]) as cluster:
        refs = [cluster.put(f"script-{i}").run() for i in range(3)]
        assert {r.server for r in refs} == set(cluster.addresses)
        started = loop_threads() - before
        assert len(started) == 1  # one private loop for three servers
        assert all(client.loop is cluster.loop for client in cluster.clients.values())

        def on_job(job: Job) -> None:  # on the loop thread: subscribe, never .run()
            cluster.delete(job).subscribe(lambda _: got.put(JobRef.of(job)))

        subscription = cluster.reserve_stream().subscribe(on_job)
        wait_until(lambda: got.qsize() == 3)
        subscription.dispose()
    wait_until(lambda: not any(t.is_alive() for t in started))
    assert sorted(got.queue) == sorted(refs)
    assert [stat(s, "cmd-delete") for s in servers] == [1, 1, 1]

    async def main() -> None:
        async with Cluster([s.address for s in servers]) as cluster:
            await within(cluster.put(b"async"))
            assert cluster.loop is asyncio.get_running_loop()
            assert all(c.loop is cluster.loop for c in cluster.clients.values())
            assert loop_threads() <= before  # no private thread in asyncio code

    run(main())


def test_reserve_takes_the_first_job_of_any_server(beanstalkd_factory: BeanstalkdFactory) -> None:
    servers = three(beanstalkd_factory)
    c = servers[2]

    async def main() -> None:
        async with Cluster([s.address for s in servers]) as cluster:
            with pytest.raises(TimedOutError):
                await within(cluster.reserve(timeout=0))
            key = key_for(cluster, c.address)
            ref = await within(cluster.put(b"only-on-c", key=key))
            job = await within(cluster.reserve(timeout=2))
            assert JobRef.of(job) == ref and job.body == b"only-on-c"
            await within(job.delete())
            await eventually(lambda: all(stat(s, "current-waiting") == 0 for s in servers))

    run(main())
    assert [stat(s, "cmd-delete") for s in servers] == [0, 0, 1]
    assert [jobs_on(s) for s in servers] == [0, 0, 0]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([[]], {}),
        (["127.0.0.1:11300"], {}),
        ([["127.0.0.1:11300", "127.0.0.1:11300"]], {}),
        ([["127.0.0.1:x"]], {}),
        ([[""]], {}),
        ([["127.0.0.1:11300"]], {"strategy": "random"}),
        ([["127.0.0.1:11300"]], {"retry_base": 0}),
        ([["127.0.0.1:11300"]], {"use": "-bad"}),
    ],
)
def test_bad_arguments_are_rejected_at_once(args: list[Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        Cluster(*args, **kwargs)


def test_bad_command_arguments_are_rejected_at_call_time() -> None:
    cluster = Cluster(["127.0.0.1:11300", "[::1]:11301", "/tmp/beanstalkd.sock", "localhost"])
    assert cluster.addresses == (
        "127.0.0.1:11300",
        "::1:11301",
        "/tmp/beanstalkd.sock",
        "localhost:11300",
    )
    calls: list[Callable[[], object]] = [
        lambda: cluster.put(b"x", key=42),  # type: ignore[arg-type]
        lambda: cluster.put(b"x", priority=-1),
        lambda: cluster.put_many([b"x", 3]),  # type: ignore[list-item]
        lambda: cluster.reserve(timeout=-1),
        lambda: cluster.reserve_stream(patience=0),
        lambda: cluster.reserve_stream(max_in_flight=0),
        lambda: cluster.kick(-1),
        lambda: cluster.use("-x"),
        lambda: cluster.touch(7),  # type: ignore[arg-type]
        lambda: JobRef.of(7),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError):
            call()
    cluster.close()

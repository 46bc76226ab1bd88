"""Reliability scenarios R15-R23 (reliability.md section 6, parts C and D).

Protocol integrity and server behaviours, against a real beanstalkd behind the fault
proxy.

C. A reply that is cut, garbled or flooded never reaches user code as a job: the command
fails with a typed error, the connection it arrived on is closed and replaced (never
resynchronised), the server puts a reserved job back, and a pipeline on the new
connection stays correlated. Invalid arguments never put a byte on the wire.

D. A ``kill -9`` restart without a binlog invalidates every job handle (no stale settle
crosses the wire); with a binlog, no acknowledged put is lost; drain mode is a typed
error that nothing retries by itself.

What is asserted comes from the server (raw queries on sockets of their own, bypassing
the proxy), from the wire (the proxy's byte logs) and from exception types. Bodies carry
their ``seq`` and the sha256 of their payload, so loss, duplication and corruption are
measured from content.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import tracemalloc
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from reactivex import Observable
from reactivex import operators as ops

from rxbeanstalk import (
    DEFAULT_PRIORITY,
    Client,
    ConnectError,
    ConnectionLostError,
    DrainingError,
    InvalidArgumentError,
    Job,
    JobLostError,
    JobTooBigError,
    ProtocolError,
    TransportError,
)
from rxbeanstalk import operators as bops
from rxbeanstalk.operators import Action, Outcome
from rxbeanstalk.testing import BeanstalkdServer, FaultProxy
from rxbeanstalk.testing.pytest_plugin import BeanstalkdFactory
from tests.conftest import collect, eventually, job_state, make_client, run, stat, within
from tests.fakeserver import FakeServer, reply

# Long enough for something that should not happen (a retry, a reconnect) to show up.
QUIET = 0.3
# The body size of the catalogue's R15 job.
BIG = 40_000


# ----------------------------------------------------------------------------- helpers


def hashed(seq: int, size: int = BIG) -> bytes:
    """A body ``b"<seq> <sha256 of payload> <payload>"``; the payload is hex (no CRLF)."""
    payload = random.Random(seq).randbytes(size // 2).hex().encode()
    return b"%d %s %s" % (seq, hashlib.sha256(payload).hexdigest().encode(), payload)


def intact(body: bytes) -> int | None:
    """The seq of a body whose hash checks out; ``None`` for a damaged one."""
    parts = body.split(b" ", 2)
    if len(parts) != 3 or hashlib.sha256(parts[2]).hexdigest().encode() != parts[1]:
        return None
    return int(parts[0])


def raw_put(server: BeanstalkdServer, body: bytes, tube: str = "default") -> int:
    """Put a job over a plain socket of its own (not through the client or the proxy)."""
    data = b"use %s\r\nput 0 0 60 %d\r\n%s\r\n" % (tube.encode(), len(body), body)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"\r\n") < 2:
            chunk = sock.recv(4096)
            assert chunk, f"server closed the connection after {received!r}"
            received += chunk
    inserted = received.split(b"\r\n")[1]
    assert inserted.startswith(b"INSERTED "), received
    return int(inserted.split()[1])


def put_lines(proxy: FaultProxy) -> int:
    """How many ``put`` command lines crossed the proxy, on every link so far."""
    return sum(line.startswith(b"put ") for link in proxy.links for line in link.commands())


def reserved(server: BeanstalkdServer, tube: str | None = None) -> int:
    return stat(server, "current-jobs-reserved", tube)


def drained(server: BeanstalkdServer) -> bool:
    """No job left in any state."""
    stats = server.stats()
    return all(
        stats[f"current-jobs-{state}"] == "0"
        for state in ("ready", "reserved", "delayed", "buried")
    )


def tap_errors(errors: list[Exception]) -> Callable[[Observable[Outcome]], Observable[Outcome]]:
    """Record each error that passes (the ones a retry further down swallows)."""
    return ops.do_action(on_error=errors.append)


def proxied(proxy: FaultProxy, **options: Any) -> Client:
    """A client that talks to the server through the proxy."""
    return Client(**{**proxy.client_kwargs(), **options})


# Each damaged-reply fault, armed on the proxy, and the exact error type it must give.
DAMAGE: dict[str, tuple[Callable[[FaultProxy], None], type[Exception]]] = {
    "r15-cut-mid-body": (lambda proxy: proxy.cut_mid_body(0.5), ConnectionLostError),
    "r16-garbage-before": (lambda proxy: proxy.inject_garbage(mode="before"), ProtocolError),
    "r17-garbage-corrupt": (lambda proxy: proxy.inject_garbage(mode="corrupt"), ProtocolError),
    "r18-garbage-in-body": (lambda proxy: proxy.inject_garbage(mode="raw"), ProtocolError),
}
DAMAGE_ERRORS = (ConnectionLostError, ProtocolError)


# ----------------------------------------------------------------------------- C. R15-R18


@pytest.mark.parametrize("fault", sorted(DAMAGE))
def test_r15_to_r18_a_damaged_reserve_reply_is_a_typed_error_and_the_job_comes_back(
    beanstalkd: BeanstalkdServer, fault: str
) -> None:
    """R15-R18: a cut or garbled 40 KB reserve reply is a typed error, never a job.

    The damaged connection is closed, and the intact job is redelivered on a new one.
    """
    arm, expected = DAMAGE[fault]
    job_id = raw_put(beanstalkd, hashed(7))

    async def main() -> FaultProxy:
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = proxied(proxy)
            try:
                arm(proxy)
                with pytest.raises(DAMAGE_ERRORS) as error:
                    await within(consumer.reserve(timeout=5))
                assert type(error.value) is expected, repr(error.value)
                # The client closed the damaged connection, so the server put the job back.
                await eventually(lambda: job_state(beanstalkd, job_id) == "ready")
                job = await within(consumer.reserve(timeout=5))  # reconnects by itself
                assert job.id == job_id
                assert intact(job.body) == 7 and len(job.body) == len(hashed(7))
                await within(job.delete())
            finally:
                consumer.close()
            return proxy

    proxy = run(main())
    first, second = proxy.links
    # The server handed the job out on the damaged link; the client sent nothing more
    # there (no skipping ahead to resynchronise) and closed it; the redelivery came on
    # a new link.
    assert first.reserved_ids() == [job_id]
    assert first.commands() == [b"reserve-with-timeout 5"]
    assert first.closed and not first.dropped
    assert second.reserved_ids() == [job_id]
    assert job_state(beanstalkd, job_id) is None
    assert stat(beanstalkd, "cmd-delete") == 1


@pytest.mark.parametrize("fault", sorted(DAMAGE))
def test_r15_to_r18_a_stream_delivers_only_intact_bodies_each_once(
    beanstalkd: BeanstalkdServer, fault: str
) -> None:
    """R15-R18: a stream recovers from a cut or garbled job; user code sees each job once.

    The stream runs through retry_with_backoff; every body that reaches the handler
    passes its hash.
    """
    arm, expected = DAMAGE[fault]
    total = 5
    ids = [raw_put(beanstalkd, hashed(seq)) for seq in range(total)]
    bodies_seen: list[bytes] = []

    async def handler(job: Job) -> None:
        bodies_seen.append(job.body)

    async def main() -> tuple[FaultProxy, list[Exception], list[Outcome]]:
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = proxied(proxy)
            errors: list[Exception] = []
            outcomes: list[Outcome] = []
            try:
                arm(proxy)
                # One lane: the damaged job is the only one in flight when it breaks, so
                # no other job is redelivered and every job must reach the handler once.
                stream = consumer.reserve_stream(max_in_flight=1, drain_timeout=0.5)
                subscription = stream.pipe(
                    bops.process(handler),
                    tap_errors(errors),  # what the retry swallows
                    bops.retry_with_backoff(base=0.02, cap=0.2),
                ).subscribe(outcomes.append)
                await eventually(
                    lambda: len(outcomes) == total and stat(beanstalkd, "cmd-delete") == total
                )
                subscription.dispose()
            finally:
                consumer.close()
            return proxy, errors, outcomes

    proxy, errors, outcomes = run(main())
    assert [type(error) for error in errors] == [expected], errors
    assert [intact(body) for body in bodies_seen] == list(range(total))  # each once, whole
    assert sorted(outcome.job.id for outcome in outcomes) == ids
    assert all(outcome.action is Action.DELETED for outcome in outcomes)
    first = proxy.links[0]
    assert first.reserved_ids() == [ids[0]] and first.closed and not first.dropped
    # The damaged job was handed out twice by the server, and delivered once to the handler.
    assert sum(link.reserved_ids().count(ids[0]) for link in proxy.links) == 2
    assert proxy.stale_settles() == []
    assert drained(beanstalkd)


@pytest.mark.parametrize("mode", ["before", "corrupt"])
def test_r16_r17_garbage_fails_the_pipeline_typed_then_a_new_connection_stays_correlated(
    beanstalkd: BeanstalkdServer, mode: str
) -> None:
    """R16/R17: garbage fails a pipeline typed; the new connection stays correlated.

    Garbage before (or over) a pipelined put's reply is a ProtocolError for that put and
    ConnectionLostError for those behind it; nothing is resent, the connection is
    replaced, and on the new one 200 concurrent puts and peeks match their requests.
    """
    burst = 20

    async def put(client: Client, body: bytes) -> int:
        return await within(client.put(body))

    async def peek(client: Client, job_id: int) -> Job:
        return await within(client.peek(job_id))

    async def main() -> tuple[FaultProxy, list[int], list[bytes]]:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = proxied(proxy)
            try:
                assert await within(client.put(b"warm-up")) == 1
                proxy.inject_garbage(mode=mode)  # type: ignore[arg-type]
                results = await asyncio.gather(
                    *(put(client, b"burst-%d" % i) for i in range(burst)), return_exceptions=True
                )
                assert type(results[0]) is ProtocolError, results[0]
                assert all(type(r) is ConnectionLostError for r in results[1:]), results
                await eventually(lambda: proxy.links[0].closed, "the client closed the link")

                # Pipeline correlation on the fresh connection: each reply is its own.
                bodies = [b"distinct-%d-%s" % (i, b"x" * (i % 7)) for i in range(200)]
                ids = await asyncio.gather(*(put(client, body) for body in bodies))
                jobs = await asyncio.gather(*(peek(client, job_id) for job_id in ids))
                assert [(job.id, job.body) for job in jobs] == list(zip(ids, bodies, strict=True))
            finally:
                client.close()
            return proxy, ids, bodies

    proxy, ids, bodies = run(main())
    first, second = proxy.links
    # The garbled connection carried the puts and nothing after them: no resend, no
    # attempt to skip the garbage and carry on.
    assert first.commands() == [b"put %d 0 60 %d" % (DEFAULT_PRIORITY, len(b"warm-up"))] + [
        b"put %d 0 60 %d" % (DEFAULT_PRIORITY, len(b"burst-%d" % i)) for i in range(burst)
    ]
    assert proxy.accepted == 2
    assert sum(line.startswith(b"put ") for line in second.commands()) == 200
    # The failed puts' outcome is unknown, not negative: the server runs what it read
    # before the connection closed, which may be all of them or only some. None of them
    # was sent again, so at most ``burst`` landed.
    landed = stat(beanstalkd, "total-jobs") - 1 - 200
    assert 0 <= landed <= burst
    assert len(set(ids)) == 200
    for job_id, body in zip(ids, bodies, strict=True):  # the server agrees, directly
        assert beanstalkd.query(b"peek %d\r\n" % job_id) == b"FOUND %d %d\r\n%s\r\n" % (
            job_id,
            len(body),
            body,
        )


# ----------------------------------------------------------------------------- C. R19


def test_r19_a_1_mib_line_without_crlf_stops_at_the_line_cap_with_bounded_memory() -> None:
    """R19: 1 MiB without CRLF is a ProtocolError at the line cap; memory stays bounded.

    The hostile peer's flood stops at the 224-byte line cap, and the client's traced
    memory grows by less than 1 MiB meanwhile.
    """
    flood = b"A" * (1 << 20)  # built before measuring; sendall sends it without a copy
    fake = FakeServer(
        lambda line: reply(flood) if line == b"stats" else reply(b"USING default\r\n")
    ).start()
    client = Client(fake.host, fake.port)

    async def main() -> tuple[int, ProtocolError]:
        assert await within(client.list_tube_used()) == "default"  # connected and warm
        # The peer runs in a thread of this process, but sends from the prebuilt buffer,
        # so what tracemalloc sees growing is the client's reading of the flood.
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            with pytest.raises(ProtocolError) as error:
                await within(client.stats())
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert await within(client.list_tube_used()) == "default"  # a new connection
        return peak - base, error.value

    try:
        growth, error = run(main(), client)
    finally:
        fake.stop()
    print(f"\nclient memory growth while flooded with 1 MiB: {growth / 1024:.0f} KiB")
    assert type(error) is ProtocolError
    assert "224" in str(error)
    assert growth < 1 << 20
    assert fake.accepted == 2


def test_r19_a_1_mib_flood_through_the_proxy_replaces_the_connection(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R19 on the real stack: a 1 MiB flood before a reply replaces the connection.

    The command gets a ProtocolError, the flooded connection is closed, and the next
    command works on a new one.
    """

    async def main() -> FaultProxy:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = proxied(proxy)
            try:
                assert await within(client.list_tube_used()) == "default"
                proxy.inject_garbage(b"\x00Z" * (1 << 19), mode="before")
                with pytest.raises(ProtocolError) as error:
                    await within(client.stats())
                assert type(error.value) is ProtocolError and "224" in str(error.value)
                await eventually(lambda: proxy.links[0].closed, "the client closed the link")
                assert await within(client.put(b"after")) == 1
            finally:
                client.close()
            return proxy

    proxy = run(main())
    assert proxy.accepted == 2
    assert proxy.links[0].commands() == [b"list-tube-used", b"stats"]
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 5\r\nafter\r\n"


# ----------------------------------------------------------------------------- C. R20

BAD_TUBES = {"space": "a b", "dash": "-x", "201-bytes": "t" * 201, "utf8": "caf\u00e9"}


def invalid_calls(client: Any, job: Job, port: int) -> dict[str, Callable[[], object]]:
    """Every R20 input, through each public entry point that takes it."""
    calls: dict[str, Callable[[], object]] = {
        "put priority 2**32": lambda: client.put(b"x", priority=2**32),
        "put_many priority 2**32": lambda: client.put_many([b"x"], priority=2**32),
        "release priority 2**32": lambda: client.release(job, priority=2**32),
        "bury priority 2**32": lambda: client.bury(job, priority=2**32),
        "job.release priority 2**32": lambda: job.release(priority=2**32),
        "job.bury priority 2**32": lambda: job.bury(priority=2**32),
        "put delay -1": lambda: client.put(b"x", delay=-1),
        "put_many delay -1": lambda: client.put_many([b"x"], delay=-1),
        "release delay -1": lambda: client.release(job, priority=1, delay=-1),
        "job.release delay -1": lambda: job.release(delay=-1),
        "reserve timeout 2**31": lambda: client.reserve(timeout=2**31),
        "reserve timeout 2**31 - 0.5 (rounds up)": lambda: client.reserve(timeout=2**31 - 0.5),
        "reserve timeout -1": lambda: client.reserve(timeout=-1),
        "raw command, tube with a space": lambda: client.command("use", "a b"),
    }
    for name, tube in BAD_TUBES.items():
        calls.update(
            {
                f"put tube {name}": partial(client.put, b"x", tube=tube),
                f"put_many tube {name}": partial(client.put_many, [b"x"], tube=tube),
                f"use {name}": partial(client.use, tube),
                f"watch {name}": partial(client.watch, tube),
                f"ignore {name}": partial(client.ignore, tube),
                f"stats_tube {name}": partial(client.stats_tube, tube),
                f"pause_tube {name}": partial(client.pause_tube, tube, 1),
                f"reserve_stream tubes {name}": partial(client.reserve_stream, tubes=[tube]),
                f"reserve_iter tubes {name}": partial(client.reserve_iter, tubes=[tube]),
                f"Client use {name}": partial(Client, "127.0.0.1", port, use=tube),
                f"Client watch {name}": partial(Client, "127.0.0.1", port, watch=[tube]),
            }
        )
    return calls


def test_r20_invalid_inputs_are_rejected_before_a_byte_crosses_the_wire(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R20: every invalid input is refused at call time; not one byte crosses the wire.

    Live connections that could carry it are open, yet the proxy sees no byte of it
    and no new connection. (test_client_commands.py checks the same through the
    server's counters.)
    """

    async def main() -> tuple[FaultProxy, int]:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = proxied(proxy)
            try:
                await within(client.put(b"held"))  # the command connection
                job = await within(client.reserve(timeout=0))  # a reserving one, holding a job
                accepted = proxy.accepted
                calls = invalid_calls(client, job, proxy.port)
                for name, call in calls.items():
                    before = [len(link.c2s) for link in proxy.links]
                    with pytest.raises(InvalidArgumentError):
                        call()
                    # A round trip on the command connection: anything queued by the
                    # call would have been written ahead of it.
                    await within(client.list_tube_used())
                    sent = [
                        bytes(link.c2s[n:]) for link, n in zip(proxy.links, before, strict=True)
                    ]
                    assert sent == [b"list-tube-used\r\n", b""], name
                assert proxy.accepted == accepted == 2
                assert job.reserved  # the held job was not touched either
            finally:
                client.close()
            return proxy, len(calls)

    _, checked = run(main())
    assert checked == 14 + 11 * len(BAD_TUBES)
    assert stat(beanstalkd, "total-jobs") == 1
    assert stat(beanstalkd, "cmd-release") == stat(beanstalkd, "cmd-bury") == 0


def test_r20_a_body_over_max_job_size_is_a_typed_error_sent_at_most_once(
    beanstalkd_factory: BeanstalkdFactory,
) -> None:
    """R20, body > max-job-size: JobTooBigError after at most one upload, never retried.

    No reconnect either: the connection stays in step for the next put.
    """
    server = beanstalkd_factory(max_job_size=100)

    async def main() -> FaultProxy:
        async with FaultProxy(server.port) as proxy:
            client = proxied(proxy)
            try:
                assert await within(client.put(b"w" * 100)) == 1  # the limit is inclusive
                with pytest.raises(JobTooBigError):
                    await within(client.put(b"x" * 101))
                await asyncio.sleep(QUIET)  # a window in which a retry would show
                assert await within(client.put(b"y")) == 2
            finally:
                client.close()
            return proxy

    proxy = run(main())
    # The client cannot know the server's -z without asking, so the oversized body
    # crosses once (the server answers JOB_TOO_BIG only after reading it all); it is
    # never sent again, and the same connection carries on.
    assert proxy.accepted == 1
    assert [line.split()[-1] for line in proxy.links[0].commands()] == [b"100", b"101", b"1"]
    assert stat(server, "total-jobs") == 2


# ----------------------------------------------------------------------------- D. R21


def test_r21_restart_without_binlog_invalidates_handles_and_sends_no_stale_settle(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R21: after kill -9 and a restart without binlog, no old handle settles anything.

    Every held handle (plain reserve or stream) raises JobLostError and sends nothing;
    the new jobs that reuse the old ids stay untouched; the stream recovers by itself.
    """
    work, other = "work", "other"
    old_ids = [raw_put(beanstalkd, b"old-%d" % i, work) for i in range(3)]
    old_instance = beanstalkd.stats()["id"]

    async def main() -> tuple[FaultProxy, int, int, list[Exception], list[Exception]]:
        gate = asyncio.Event()
        in_handler: list[Job] = []
        errors: list[Exception] = []
        final_errors: list[Exception] = []

        async def handler(job: Job) -> None:
            in_handler.append(job)
            if job.body.startswith(b"old"):
                await gate.wait()  # still in progress when the server dies

        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = proxied(proxy, watch=[work])
            try:
                held = await within(consumer.reserve(timeout=0))
                subscription = (
                    consumer.reserve_stream(tubes=[work], max_in_flight=2)
                    .pipe(
                        bops.process(handler),
                        tap_errors(errors),
                        bops.retry_with_backoff(base=0.05, cap=0.5),
                    )
                    .subscribe(on_error=final_errors.append)
                )
                await eventually(lambda: len(in_handler) == 2 and reserved(beanstalkd) == 3)
                old_links = len(proxy.links)

                await within(asyncio.to_thread(beanstalkd.kill))
                await eventually(lambda: all(link.closed for link in proxy.links[:old_links]))
                await within(asyncio.to_thread(beanstalkd.restart), 10)
                assert beanstalkd.stats()["id"] != old_instance
                # Ids restart at 1: new jobs (in a tube the consumer does not watch) get
                # exactly the ids the old handles carry.
                assert [raw_put(beanstalkd, b"new-%d" % i, other) for i in range(3)] == old_ids

                gate.set()  # the old handlers finish now, and process() tries to delete
                after = raw_put(beanstalkd, b"after", work)
                # The recovered stream processes a new job (and by then the old handlers'
                # delete attempts, which need no round trip, are long over).
                await eventually(lambda: job_state(beanstalkd, after) is None, timeout=10)
                for job in [held, *in_handler[:2]]:
                    for settle in (job.delete, job.release, job.bury, job.touch):
                        with pytest.raises(JobLostError):
                            await within(settle())
                subscription.dispose()
            finally:
                consumer.close()
            return proxy, old_links, after, errors, final_errors

    proxy, old_links, after, errors, final_errors = run(main(), timeout=30)
    assert errors and all(isinstance(error, TransportError) for error in errors), errors
    assert final_errors == []
    # No settle of an old id crossed on any connection opened after the crash; the only
    # settle at all is the recovered stream's delete of its own new job.
    assert [link.settles() for link in proxy.links[:old_links]] == [[]] * old_links
    settles = [settle for link in proxy.links[old_links:] for settle in link.settles()]
    assert settles == [(b"delete", after)]
    assert proxy.stale_settles() == []
    for job_id in old_ids:  # the new jobs that reuse the old ids are all still there
        assert beanstalkd.stats_job(job_id)["state"] == "ready"
        assert beanstalkd.stats_job(job_id)["tube"] == other
    assert stat(beanstalkd, "cmd-delete") == 1


def test_r21_a_handle_whose_connection_looks_alive_cannot_reach_the_new_process(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R21, half-open: a handle unaware of the restart still cannot reach the new process.

    Nothing told the client that its connection died with the old process, yet a stale
    delete cannot reach the new one (TCP connections do not survive a process): the
    settle fails with JobLostError and the new job with the same id stays.
    """
    job_id = raw_put(beanstalkd, b"old")

    async def main() -> tuple[FaultProxy, bool]:
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = proxied(proxy, command_timeout=0.5)
            try:
                held = await within(consumer.reserve(timeout=0))
                proxy.drop_all(side="server")  # the client is left half-open, unaware
                await within(asyncio.to_thread(beanstalkd.kill))
                await within(asyncio.to_thread(beanstalkd.restart), 10)
                assert raw_put(beanstalkd, b"new") == job_id
                looked_reserved = held.reserved
                with pytest.raises(JobLostError):
                    await within(held.delete())
                proxy.release_orphans()
            finally:
                consumer.close()
            return proxy, looked_reserved

    proxy, looked_reserved = run(main())
    assert looked_reserved  # the handle had no way to know before it tried
    assert proxy.links[0].commands() == [b"reserve-with-timeout 0"]
    assert beanstalkd.stats_job(job_id)["state"] == "ready"
    assert stat(beanstalkd, "cmd-delete") == 0


# ----------------------------------------------------------------------------- D. R22


def test_r22_binlog_kill_restart_mid_run_loses_no_acknowledged_put(
    beanstalkd_factory: BeanstalkdFactory, tmp_path: Path
) -> None:
    """R22: with -b, a kill -9 restart mid-run loses no acknowledged put.

    A producer and a reserve_stream consumer run through the crash; the jobs reserved
    at the crash are redelivered.
    """
    server = beanstalkd_factory(binlog_dir=tmp_path / "binlog")
    total, tube = 200, "durable"
    hold = {20, 21, 22, 23}  # one per lane: what the lanes hold when the server dies

    async def main() -> dict[str, Any]:
        gate = asyncio.Event()
        acked: list[int] = []
        delivered: Counter[int] = Counter()
        handled: Counter[int] = Counter()
        holding: set[int] = set()
        errors: list[Exception] = []
        final_errors: list[Exception] = []
        producer = make_client(server)

        async def handler(job: Job) -> None:
            seq = int(job.body)
            delivered[seq] += 1
            if seq in hold and not gate.is_set():
                holding.add(seq)
                await gate.wait()
            handled[seq] += 1

        async def produce() -> None:
            for seq in range(total):
                if seq >= total // 2:
                    await asyncio.sleep(0.005)  # pace the second half: the crash lands in it
                while True:
                    try:
                        await within(producer.put(b"%d" % seq, tube=tube))
                    except (ConnectionLostError, ConnectError):
                        # Server down: put again (a put whose reply was lost may land twice).
                        await asyncio.sleep(0.01)
                        continue
                    acked.append(seq)
                    break

        async with FaultProxy(server.port) as proxy:
            consumer = proxied(proxy)
            subscription = (
                consumer.reserve_stream(tubes=[tube], max_in_flight=len(hold))
                .pipe(
                    bops.process(handler),
                    tap_errors(errors),
                    bops.retry_with_backoff(base=0.05, cap=0.5),
                )
                .subscribe(on_error=final_errors.append)
            )
            producing = asyncio.ensure_future(produce())
            try:
                await eventually(lambda: holding == hold and reserved(server) == len(hold))
                acked_at_crash = len(acked)
                await within(asyncio.to_thread(server.kill))
                await within(asyncio.to_thread(server.restart), 10)
                gate.set()
                await within(producing, 20)
                await eventually(
                    lambda: set(acked) <= set(handled) and drained(server),
                    "every acknowledged seq handled and the server drained",
                    timeout=15,
                )
            finally:
                producing.cancel()
                subscription.dispose()
                consumer.close()
                producer.close()
            return {
                "acked": acked,
                "acked_at_crash": acked_at_crash,
                "delivered": delivered,
                "handled": handled,
                "errors": errors,
                "final_errors": final_errors,
                "stale": proxy.stale_settles(),
            }

    result = run(main(), timeout=40)
    acked, delivered = result["acked"], result["delivered"]
    duplicates = sum(delivered.values()) - total
    print(f"\nR22: {len(acked)} acked, crash after {result['acked_at_crash']}, dups {duplicates}")
    assert max(hold) < result["acked_at_crash"] < total  # the crash came mid-run
    assert sorted(set(acked)) == list(range(total))
    assert set(acked) <= set(result["handled"])  # no acknowledged put lost
    for seq in hold:  # reserved at the crash: the binlog gave them back, redelivered
        assert delivered[seq] >= 2, (seq, delivered[seq])
    assert duplicates >= len(hold)
    assert result["errors"], "the crash never reached the stream"
    assert all(isinstance(error, TransportError) for error in result["errors"])
    assert result["final_errors"] == []
    assert result["stale"] == []


# ----------------------------------------------------------------------------- D. R23


def test_r23_drain_mode_put_is_typed_nothing_retries_and_consumers_continue(
    beanstalkd: BeanstalkdServer,
) -> None:
    """R23: in drain mode put is a typed DrainingError, never a hot loop; consumers go on.

    Each put sends exactly one put line; nothing retries on its own (put_many stops
    after one window, retry_with_backoff passes the error through); the connection
    stays; stats says draining.
    """
    ready_before = 4

    async def main() -> tuple[FaultProxy, list[Outcome]]:
        gate = asyncio.Event()
        outcomes: list[Outcome] = []

        async def handler(job: Job) -> None:
            await gate.wait()

        async with FaultProxy(beanstalkd.port) as proxy:
            producer = proxied(proxy)
            consumer = proxied(proxy)
            try:
                await collect(producer.put_many([b"before-%d" % i for i in range(ready_before)]))
                subscription = (
                    consumer.reserve_stream(max_in_flight=2)
                    .pipe(bops.process(handler))
                    .subscribe(outcomes.append)
                )
                await eventually(lambda: reserved(beanstalkd) == 2)

                beanstalkd.drain()
                await eventually(lambda: beanstalkd.stats()["draining"] == "true")
                accepted, puts = proxy.accepted, put_lines(proxy)
                for _ in range(3):
                    with pytest.raises(DrainingError):
                        await within(producer.put(b"refused"))
                assert put_lines(proxy) == puts + 3  # one line per call, no hidden retry

                # A policy wrapped around put does not turn DRAINING into a hot loop.
                with pytest.raises(DrainingError):
                    await collect(producer.put(b"policy").pipe(bops.retry_with_backoff(base=0.01)))
                assert put_lines(proxy) == puts + 4

                # put_many gives up at the first DRAINING: at most one window crosses.
                with pytest.raises(DrainingError) as many:
                    await collect(producer.put_many([b"refused-%d" % i for i in range(2500)]))
                assert any("0 of 2500" in note for note in getattr(many.value, "__notes__", []))
                many_lines = put_lines(proxy) - puts - 4
                assert 1 <= many_lines <= 1000, many_lines

                crossed = put_lines(proxy)
                await asyncio.sleep(QUIET)  # a window in which a background retry would show
                assert put_lines(proxy) == crossed
                assert proxy.accepted == accepted  # DRAINING left every connection in step

                assert (await within(producer.stats())).draining is True
                gate.set()  # consumers carry on during the drain
                await eventually(
                    lambda: (
                        len(outcomes) == ready_before
                        and stat(beanstalkd, "cmd-delete") == ready_before
                    )
                )
                subscription.dispose()
            finally:
                producer.close()
                consumer.close()
            return proxy, outcomes

    _, outcomes = run(main())
    assert sorted(outcome.job.body for outcome in outcomes) == [
        b"before-%d" % i for i in range(ready_before)
    ]
    assert all(outcome.action is Action.DELETED for outcome in outcomes)
    assert stat(beanstalkd, "total-jobs") == ready_before
    assert drained(beanstalkd)

"""The fault proxy itself, driven with raw asyncio streams against a real beanstalkd.

The reliability tests trust the proxy to do exactly the fault it was asked for; these
tests check each fault from the raw bytes a plain socket receives and from server state.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from rxbeanstalk.testing import BeanstalkdServer, FaultProxy
from rxbeanstalk.testing._proxy import parse_commands, parse_reserved_ids
from tests.conftest import eventually, run, wait_until

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(proxy: FaultProxy) -> Streams:
    async with asyncio.timeout(5):
        return await asyncio.open_connection("127.0.0.1", proxy.port)


async def ask(streams: Streams, line: bytes, *, want: int | None = None) -> bytes:
    """Send one line and read one reply line (plus ``want`` body bytes)."""
    reader, writer = streams
    writer.write(line + b"\r\n")
    async with asyncio.timeout(5):
        reply = await reader.readline()
        if want is not None:
            reply += await reader.readexactly(want)
    return reply


def test_forwards_and_records_both_directions(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> FaultProxy:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            assert await ask(streams, b"use t") == b"USING t\r\n"
            assert await ask(streams, b"put 0 0 10 3\r\nabc") == b"INSERTED 1\r\n"
            assert await ask(streams, b"watch t") == b"WATCHING 2\r\n"
            assert await ask(streams, b"reserve", want=5) == b"RESERVED 1 3\r\nabc\r\n"
            assert await ask(streams, b"delete 1") == b"DELETED\r\n"
            streams[1].close()
            return proxy

    proxy = run(main())
    assert proxy.accepted == 1
    assert proxy.links[0].commands() == [
        b"use t",
        b"put 0 0 10 3",
        b"watch t",
        b"reserve",
        b"delete 1",
    ]
    assert proxy.links[0].reserved_ids() == [1]
    assert proxy.stale_settles() == []
    assert beanstalkd.stats()["cmd-delete"] == "1"


@pytest.mark.parametrize("rst", [True, False], ids=["rst", "fin"])
def test_drop_all_closes_both_sides_and_the_server_releases_the_job(
    beanstalkd: BeanstalkdServer, rst: bool
) -> None:
    beanstalkd.query(b"put 0 0 60 1\r\nx\r\n")

    async def main() -> bytes:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            assert (await ask(streams, b"reserve", want=3)).startswith(b"RESERVED 1 1")
            assert beanstalkd.stats()["current-jobs-reserved"] == "1"
            assert proxy.drop_all(rst=rst) == 1
            async with asyncio.timeout(5):
                try:
                    return await streams[0].read()
                except ConnectionResetError:
                    return b"<reset>"

    assert run(main()) in (b"", b"<reset>")
    wait_until(lambda: beanstalkd.stats()["current-jobs-ready"] == "1", "job back to ready")


def test_server_side_drop_leaves_the_client_half_open(beanstalkd: BeanstalkdServer) -> None:
    beanstalkd.query(b"put 0 0 60 1\r\nx\r\n")

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            await ask(streams, b"reserve", want=3)
            proxy.drop_all(side="server")
            # The server forgot the connection and put the job back ...
            await eventually(
                lambda: beanstalkd.stats()["current-jobs-ready"] == "1", "job back to ready"
            )
            # ... while the client's side stays open and silent.
            streams[1].write(b"stats\r\n")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await streams[0].read(1)
            assert proxy.release_orphans() == 1

    run(main())


def test_client_side_drop_leaves_an_orphan_holding_the_job(beanstalkd: BeanstalkdServer) -> None:
    beanstalkd.query(b"put 0 0 60 1\r\nx\r\n")

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            await ask(streams, b"reserve", want=3)
            proxy.drop_all(rst=False, side="client")
            async with asyncio.timeout(5):
                assert await streams[0].read() == b""
            # The server still has the connection, so the job stays reserved.
            assert beanstalkd.stats()["current-jobs-reserved"] == "1"
            assert proxy.release_orphans() == 1
            await eventually(
                lambda: beanstalkd.stats()["current-jobs-ready"] == "1", "job back to ready"
            )

    run(main())


def test_stall_holds_bytes_until_resumed(beanstalkd: BeanstalkdServer) -> None:
    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            proxy.stall()
            assert proxy.stalled
            streams[1].write(b"list-tube-used\r\n")
            await eventually(lambda: proxy.held_bytes == len(b"list-tube-used\r\n"), "held")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await streams[0].readline()
            proxy.resume()
            async with asyncio.timeout(5):
                assert await streams[0].readline() == b"USING default\r\n"
            assert proxy.held_bytes == 0
            proxy.stall(0.2)
            started = time.monotonic()
            assert await ask(streams, b"list-tube-used") == b"USING default\r\n"
            assert time.monotonic() - started >= 0.15

    run(main())


def test_set_rate_trickles_a_body(beanstalkd: BeanstalkdServer) -> None:
    body = bytes(range(256)) * 40  # 10,240 bytes
    beanstalkd.query(b"put 0 0 60 %d\r\n%s\r\n" % (len(body), body))

    async def main() -> float:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            proxy.set_rate(40_000)
            started = time.monotonic()
            reply = await ask(streams, b"peek-ready", want=len(body) + 2)
            assert reply == b"FOUND 1 %d\r\n%s\r\n" % (len(body), body)
            return time.monotonic() - started

    # 10 KiB at 40 KB/s takes about a quarter of a second; at full speed, microseconds.
    assert run(main()) >= 0.2


def test_cut_mid_body_forwards_half_a_body_then_resets(beanstalkd: BeanstalkdServer) -> None:
    body = b"x" * 1000
    beanstalkd.query(b"put 0 0 60 1000\r\n%s\r\n" % body)

    async def main() -> bytes:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            proxy.cut_mid_body(0.5)
            assert proxy.armed
            streams[1].write(b"reserve\r\n")
            got = b""
            async with asyncio.timeout(5):
                try:
                    while chunk := await streams[0].read(65536):
                        got += chunk
                except ConnectionResetError:
                    pass
            assert proxy.links[0].closed
            assert not proxy.armed
            return got

    assert run(main()) == b"RESERVED 1 1000\r\n" + b"x" * 500
    wait_until(lambda: beanstalkd.stats()["current-jobs-ready"] == "1", "job back to ready")


@pytest.mark.parametrize(
    ("mode", "junk", "expected"),
    [
        ("before", b"JUNK\r\n", b"JUNK\r\nFOUND 1 3\r\nabc\r\n"),
        ("corrupt", b"#?!", b"#?!ND 1 3\r\nabc\r\n"),
        ("raw", b"\xff\x00", b"FOUND 1 3\r\na\xff\x00bc\r\n"),
    ],
)
def test_inject_garbage(
    beanstalkd: BeanstalkdServer, mode: str, junk: bytes, expected: bytes
) -> None:
    beanstalkd.query(b"put 0 0 60 3\r\nabc\r\n")

    async def main() -> bytes:
        async with FaultProxy(beanstalkd.port) as proxy:
            streams = await connect(proxy)
            assert await ask(streams, b"list-tube-used") == b"USING default\r\n"
            proxy.inject_garbage(junk, mode=mode)  # type: ignore[arg-type]
            streams[1].write(b"peek-ready\r\n")
            async with asyncio.timeout(5):
                return await streams[0].readexactly(len(expected))

    assert run(main()) == expected


def test_accept_modes(beanstalkd: BeanstalkdServer) -> None:
    before = int(beanstalkd.stats()["total-connections"])

    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            proxy.set_accept_mode("refuse")
            await eventually(lambda: _refused(proxy.port), "refused")
            proxy.set_accept_mode("reset")
            await eventually(lambda: not _refused(proxy.port), "listening")
            streams = await connect(proxy)
            async with asyncio.timeout(5):
                with pytest.raises(ConnectionResetError):
                    await streams[0].read(1)
            assert proxy.accept_resets >= 1
            proxy.set_accept_mode("hold")
            streams = await connect(proxy)
            streams[1].write(b"stats\r\n")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await streams[0].read(1)
            assert proxy.links[-1].held
            assert proxy.links[-1].c2s == b"stats\r\n"
            proxy.set_accept_mode("forward")
            assert await ask(await connect(proxy), b"list-tube-used") == b"USING default\r\n"

    run(main())
    # Only the forwarded connection (plus this stats query) reached the server.
    assert int(beanstalkd.stats()["total-connections"]) == before + 2


def _refused(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_wire_parsers_skip_bodies_and_stop_at_a_cut() -> None:
    sent = b"put 0 0 1 10\r\ndelete 9\r\n\r\nuse a\r\nput 0 0 1 5\r\nab"
    assert parse_commands(sent) == [b"put 0 0 1 10", b"use a", b"put 0 0 1 5"]
    received = (
        b"RESERVED 3 2\r\nok\r\nOK 9\r\nRESERVED 4 2\r\nRESERVED 5 1\r\nx\r\nRESERVED 6 9\r\nab"
    )
    assert parse_reserved_ids(received) == [3, 5, 6]

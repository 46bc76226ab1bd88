"""RAW: the smallest pipelined asyncio client, which defines the ceiling of every ratio.

It is a bare ``asyncio.Protocol`` on one connection that writes a whole batch of commands
(at most 1,000, or 1 MiB of bodies) in one write and waits until every reply of the batch
has arrived. It validates nothing and builds no objects per reply beyond the job ids, so
what limits it is the server and the machine, not Python. Every rxbeanstalk number in the
suite is reported as a fraction of RAW measured in the same run.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import cast

CRLF = b"\r\n"
# A pipelined batch holds at most this many commands, or this many body bytes. The byte
# cap keeps big bodies from piling up megabytes in socket buffers on both sides, which
# makes a pipelined client slower than request/response at 60 KiB.
BATCH_COMMANDS = 1000
BATCH_BYTES = 1 << 20

DEFAULT_PRIORITY = 1 << 31
DEFAULT_TTR = 60

# Replies that carry neither a job id nor a body.
_PLAIN_REPLIES = frozenset({b"DELETED", b"USING", b"WATCHING"})


class RawError(RuntimeError):
    """The server answered something RAW did not ask for, or the connection closed."""


def put_command(body: bytes, priority: int = DEFAULT_PRIORITY, ttr: int = DEFAULT_TTR) -> bytes:
    """Encode one ``put`` (header and body) for the used tube.

    Args:
        body: The job body.
        priority: The job's priority.
        ttr: The job's time to run, in seconds.

    Returns:
        The bytes to send.
    """
    return b"put %d 0 %d %d\r\n%b\r\n" % (priority, ttr, len(body), body)


def batch_size(body_size: int) -> int:
    """How many commands carrying ``body_size`` bytes each fit in one batch.

    Args:
        body_size: Body bytes per command (0 for commands without a body).

    Returns:
        At least 1, at most ``BATCH_COMMANDS``.
    """
    if body_size <= 0:
        return BATCH_COMMANDS
    return max(1, min(BATCH_COMMANDS, BATCH_BYTES // body_size))


class RawProtocol(asyncio.Protocol):
    """Matches replies to the batches written, in order, and keeps their job ids.

    Args:
        loop: The event loop the connection runs on.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        # Batches written and not fully answered: (ids so far, future, replies expected).
        self._batches: deque[tuple[list[int], asyncio.Future[list[int]], int]] = deque()
        self._left = 0  # replies the oldest batch still waits for
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Single commands (the latency cells) must not wait for Nagle's timer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or RawError("beanstalkd closed the connection")
        self._fail(self._lost)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        batches = self._batches
        if not batches:
            self._fail(RawError(f"reply with no command pending: {bytes(buffer)!r}"))
            return
        ids = batches[0][0]
        left = self._left
        pos = 0
        while True:
            end = buffer.find(CRLF, pos)
            if end < 0:
                break
            space = buffer.find(b" ", pos, end)
            word = bytes(buffer[pos : end if space < 0 else space])
            if word == b"INSERTED":
                ids.append(int(buffer[space + 1 : end]))
                pos = end + 2
            elif word == b"RESERVED":
                job_id, size = buffer[space + 1 : end].split()
                stop = end + 2 + int(size) + 2
                if len(buffer) < stop:
                    break  # the body is still on its way
                ids.append(int(job_id))
                pos = stop
            elif word in _PLAIN_REPLIES:
                pos = end + 2
            else:
                self._fail(RawError(f"unexpected reply {bytes(buffer[pos:end])!r}"))
                return
            left -= 1
            if left == 0:
                _, done, _ = batches.popleft()
                if not done.done():
                    done.set_result(ids)
                if not batches:
                    break
                ids, _, left = batches[0]
        self._left = left
        del buffer[:pos]

    def _fail(self, error: BaseException) -> None:
        batches, self._batches = self._batches, deque()
        for _, done, _ in batches:
            if not done.done():
                done.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, data: bytes, replies: int) -> asyncio.Future[list[int]]:
        """Write ``data``; return a future of the job ids in its ``replies`` replies.

        Several batches may be in flight; replies go to them in the order they were sent.

        Args:
            data: One or more encoded commands.
            replies: How many replies they get (at least 1).

        Returns:
            A future that ends with the job ids (from ``INSERTED`` and ``RESERVED``), in
            order, once every reply of the batch arrived.

        Raises:
            RawError: The connection is closed.
        """
        if self.transport is None or self._lost is not None:
            raise RawError("the RAW connection is not open")
        done: asyncio.Future[list[int]] = self._loop.create_future()
        if not self._batches:
            self._left = replies
        self._batches.append(([], done, replies))
        self.transport.write(data)
        return done

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int) -> RawProtocol:
    """Open a RAW connection.

    Args:
        host: Server host.
        port: Server port.

    Returns:
        The connected protocol.

    Raises:
        OSError: The connection failed.
    """
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: RawProtocol(loop), host, port)
    return protocol


async def put_all(conn: RawProtocol, jobs: int, body: bytes) -> None:
    """Put ``jobs`` copies of ``body`` in pipelined batches, one batch in flight.

    Args:
        conn: An open RAW connection.
        jobs: How many jobs.
        body: Each job's body.

    Raises:
        RawError: An unexpected reply or a lost connection.
    """
    command = put_command(body)
    per_batch = batch_size(len(body))
    full = command * per_batch
    left = jobs
    while left:
        count = min(per_batch, left)
        await conn.send(full if count == per_batch else command * count, count)
        left -= count


async def drain(conn: RawProtocol, jobs: int, body_size: int = 100) -> None:
    """Reserve and delete ``jobs`` ready jobs in pipelined batches, one batch in flight.

    Each write carries the deletes of the previous batch and the reserves of the next
    one, so a job costs two commands and a batch one round trip.
    ``reserve-with-timeout 0`` never blocks: a queue that holds fewer jobs than expected
    shows up as an error.

    Args:
        conn: An open RAW connection that watches the tube holding the jobs.
        jobs: How many jobs to drain.
        body_size: Body size of the jobs, to cap a batch at ``BATCH_BYTES``.

    Raises:
        RawError: An unexpected reply (``TIMED_OUT`` included) or a lost connection.
    """
    per_batch = batch_size(body_size)
    reserve = b"reserve-with-timeout 0\r\n"
    reserved: list[int] = []
    left = jobs
    while left or reserved:
        count = min(per_batch, left)
        deletes = b"".join(b"delete %d\r\n" % job_id for job_id in reserved)
        reserved = await conn.send(deletes + reserve * count, len(reserved) + count)
        left -= count


async def fill(host: str, port: int, jobs: int, body: bytes, tube: str = "default") -> None:
    """Put ``jobs`` jobs into ``tube`` on a connection of its own (setup, not measured).

    Args:
        host: Server host.
        port: Server port.
        jobs: How many jobs.
        body: Each job's body.
        tube: The tube to fill.

    Raises:
        RawError: An unexpected reply or a lost connection.
        OSError: The connection failed.
    """
    conn = await connect(host, port)
    try:
        if tube != "default":
            await conn.send(b"use %s\r\n" % tube.encode(), 1)
        await put_all(conn, jobs, body)
    finally:
        conn.close()


async def watch_only(conn: RawProtocol, tube: str) -> None:
    """Make ``conn`` watch ``tube`` alone.

    Args:
        conn: An open RAW connection.
        tube: The tube to watch instead of ``default``.

    Raises:
        RawError: An unexpected reply or a lost connection.
    """
    if tube != "default":
        await conn.send(b"watch %s\r\nignore default\r\n" % tube.encode(), 2)


class _IdleProtocol(asyncio.Protocol):
    """A connection that waits in a blocking ``reserve`` and never expects an answer."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        cast(asyncio.Transport, transport).write(b"reserve\r\n")


async def open_idle(host: str, port: int, count: int, chunk: int = 500) -> list[asyncio.Protocol]:
    """Open ``count`` connections that each wait in a ``reserve`` (the memory baseline).

    Connections open ``chunk`` at a time so the server's listen backlog never overflows
    (an overflow costs a one-second SYN retry and says nothing about memory).

    Args:
        host: Server host.
        port: Server port.
        count: How many connections.
        chunk: How many connect at once.

    Returns:
        The protocols; close them with :func:`close_idle`.

    Raises:
        OSError: A connection failed.
    """
    loop = asyncio.get_running_loop()
    protocols: list[asyncio.Protocol] = []
    for start in range(0, count, chunk):
        opened = await asyncio.gather(
            *(
                loop.create_connection(_IdleProtocol, host, port)
                for _ in range(min(chunk, count - start))
            )
        )
        protocols.extend(protocol for _, protocol in opened)
    return protocols


def close_idle(protocols: list[asyncio.Protocol]) -> None:
    """Close connections opened by :func:`open_idle`.

    Args:
        protocols: What :func:`open_idle` returned.
    """
    for protocol in protocols:
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.close()

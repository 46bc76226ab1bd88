"""A loopback TCP proxy that forwards client <-> server bytes and can drop connections.

The proxy runs inside the test's event loop and listens on 127.0.0.1 only. It records
every byte each client sent (``c2s``) and every byte the server answered, per proxied
connection (a ``Link``), so a test can check from the wire what a client did:

- ``drop_all()`` closes every proxied connection on both sides (RST by default, FIN with
  ``rst=False``); the server then puts the jobs those connections held back to ready;
- ``accepted`` counts the connections the proxy accepted (reconnects show up here);
- ``Link.commands()`` and ``Link.reserved_ids()`` parse what crossed one connection, and
  ``stale_settles()`` lists every ``delete``/``release``/``bury``/``touch`` of a job that
  was not reserved on the connection it was sent on (a job reserved on a connection that
  was dropped, say).

``start`` and ``stop`` are bounded: a proxy never hangs a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct

__all__ = ["Link", "Proxy", "parse_commands", "parse_reserved_ids"]

_HOST = "127.0.0.1"
_CHUNK = 65536
# Replies followed by a body whose length is the reply's last word.
_BODY_REPLIES = (b"RESERVED", b"FOUND", b"OK")
_SETTLES = (b"delete", b"release", b"bury", b"touch")
_PUT = re.compile(rb"^put \d+ \d+ \d+ (\d+)$")


def parse_commands(data: bytes) -> list[bytes]:
    """Split what a client sent into command lines (``put`` bodies are skipped).

    An incomplete tail (a line without CRLF, a cut body) is ignored.
    """
    lines: list[bytes] = []
    at = 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return lines
        line = data[at:end]
        at = end + 2
        lines.append(line)
        match = _PUT.match(line)
        if match is not None:
            at += int(match.group(1)) + 2
            if at > len(data):
                return lines


def parse_reserved_ids(data: bytes) -> list[int]:
    """The job ids of every ``RESERVED <id> <bytes>`` reply in what a server sent."""
    ids: list[int] = []
    at = 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return ids
        words = data[at:end].split()
        at = end + 2
        if words and words[0] in _BODY_REPLIES:
            if words[0] == b"RESERVED" and len(words) == 3:
                ids.append(int(words[1]))
            at += int(words[-1]) + 2
            if at > len(data):
                return ids


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Link:
    """One proxied connection: the client's side, the server's side, and their bytes.

    Attributes:
        index: The link's number, in order of acceptance (0 is the first).
        c2s: Every byte the client sent, in order.
        s2c: Every byte the server sent back, in order.
        dropped: Whether ``drop_all`` closed it (rather than one of the peers).
        closed: Whether it is closed, however that happened.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.dropped = False
        self.closed = False
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []

    def commands(self) -> list[bytes]:
        """The command lines the client sent on this connection."""
        return parse_commands(bytes(self.c2s))

    def reserved_ids(self) -> list[int]:
        """The ids of the jobs the server handed out on this connection."""
        return parse_reserved_ids(bytes(self.s2c))

    def settles(self) -> list[tuple[bytes, int]]:
        """``(verb, job id)`` of each delete/release/bury/touch sent on this connection."""
        found = []
        for line in self.commands():
            words = line.split()
            if len(words) >= 2 and words[0] in _SETTLES and words[1].isdigit():
                found.append((words[0], int(words[1])))
        return found

    def close(self, *, rst: bool) -> None:
        """Close both sides now (RST with ``rst``, else FIN); stop forwarding."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            if rst:
                _linger_zero(writer)
                writer.transport.abort()
            else:
                writer.close()


class Proxy:
    """A fault-injecting TCP proxy on 127.0.0.1 in front of ``target_host:target_port``.

    Use it as ``async with Proxy(port) as proxy:`` inside the test's event loop, and point
    the client at ``proxy.port``.

    Args:
        target_port: The server's port.
        target_host: The server's host (loopback).
        timeout: Bound, in seconds, on starting, stopping and each upstream connect.

    Attributes:
        accepted: How many client connections the proxy accepted.
        links: Every proxied connection so far, in order of acceptance.
        drops: How many times ``drop_all`` ran.
    """

    def __init__(self, target_port: int, target_host: str = _HOST, *, timeout: float = 5.0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.timeout = timeout
        self.accepted = 0
        self.drops = 0
        self.links: list[Link] = []
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port the proxy listens on (after ``start``)."""
        if self._port is None:
            raise RuntimeError("the proxy has not been started")
        return self._port

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments that point a ``Client`` at the proxy."""
        return {"host": _HOST, "port": self.port}

    @property
    def c2s(self) -> bytes:
        """Every byte any client sent through the proxy, link after link."""
        return b"".join(bytes(link.c2s) for link in self.links)

    @property
    def open_links(self) -> list[Link]:
        """The proxied connections that are still open."""
        return [link for link in self.links if not link.closed]

    async def start(self) -> Proxy:
        """Start listening on a free port of 127.0.0.1."""
        async with asyncio.timeout(self.timeout):
            self._server = await asyncio.start_server(self._accept, _HOST, 0)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and close every link (bounded by ``timeout``)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in self.links:
            link.close(rst=True)
        tasks = [task for link in self.links for task in link._tasks if not task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await server.wait_closed()

    async def __aenter__(self) -> Proxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def drop_all(self, *, rst: bool = True) -> int:
        """Close every open proxied connection on both sides at once.

        Args:
            rst: Reset the connections (``SO_LINGER`` 0) rather than close them with FIN.

        Returns:
            How many connections were dropped.
        """
        self.drops += 1
        dropped = 0
        for link in self.links:
            if not link.closed:
                link.dropped = True
                link.close(rst=rst)
                dropped += 1
        return dropped

    def stale_settles(self) -> list[tuple[int, bytes, int]]:
        """Settles of jobs that were not reserved on the link they were sent on.

        Returns:
            ``(link index, verb, job id)`` for each; empty when every delete, release,
            bury and touch went over the connection that reserved its job.
        """
        stale = []
        for link in self.links:
            reserved = set(link.reserved_ids())
            for verb, job_id in link.settles():
                if job_id not in reserved:
                    stale.append((link.index, verb, job_id))
        return stale

    # -- forwarding -------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(len(self.links))
        self.links.append(link)
        self.accepted += 1
        link._writers.append(writer)
        try:
            async with asyncio.timeout(self.timeout):
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
        except (OSError, TimeoutError):
            link.close(rst=True)
            return
        if link.closed:  # dropped while connecting upstream
            _linger_zero(up_writer)
            up_writer.transport.abort()
            return
        link._writers.append(up_writer)
        loop = asyncio.get_running_loop()
        link._tasks = [
            loop.create_task(self._pump(link, reader, up_writer, link.c2s)),
            loop.create_task(self._pump(link, up_reader, writer, link.s2c)),
        ]

    @staticmethod
    async def _pump(
        link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray
    ) -> None:
        try:
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data or link.closed:
                    break
                log += data
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # One peer closed (or failed): close the whole link with a FIN.
        link.close(rst=False)

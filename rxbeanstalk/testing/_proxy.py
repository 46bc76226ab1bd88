"""``FaultProxy``: a loopback TCP proxy that injects network faults between client and server.

It runs inside the caller's event loop, listens on 127.0.0.1 only, and forwards bytes to a
beanstalkd. Every proxied connection is a :class:`Link` that records what each side sent,
so a test can check from the wire what a client did, whatever the client itself reports.

The faults, each a method:

==========================  ===========================================================
``drop_all(rst, side)``     close every connection: RST or FIN; both sides, or only the
                            server's side (the client is left half-open, talking to
                            nobody) or only the client's side (the server keeps an
                            orphan that still holds its jobs; ``release_orphans`` ends it)
``stall(seconds)``          stop forwarding, for ``seconds`` or until ``resume()``
``set_rate(bps)``           forward at most ``bps`` bytes per second in each direction
``cut_mid_body(fraction)``  forward the next reply that has a body only up to
                            ``fraction`` of the body, then reset the connection
``inject_garbage(...)``     bytes the server never sent: ``before`` the next reply,
                            ``corrupt`` its first bytes, or ``raw`` inside its body
``set_accept_mode(mode)``   new connections are ``forward``-ed, ``refuse``-d (nothing
                            listens), ``reset`` at once, or ``hold``-ed (accepted, never
                            answered)
==========================  ===========================================================

Faults armed for "the next reply" apply once, on the first link that carries one.
``start`` and ``stop`` are bounded by ``timeout``: a proxy never hangs its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from dataclasses import dataclass
from typing import Literal

__all__ = ["FaultProxy", "Link", "parse_commands", "parse_reserved_ids"]

_HOST = "127.0.0.1"
_CHUNK = 65536
# Replies followed by a body whose length is the reply's last word.
_BODY_REPLIES = (b"RESERVED", b"FOUND", b"OK")
_SETTLES = (b"delete", b"release", b"bury", b"touch")
_PUT = re.compile(rb"^put \d+ \d+ \d+ (\d+)$")

Side = Literal["both", "client", "server"]
AcceptMode = Literal["forward", "refuse", "reset", "hold"]
GarbageMode = Literal["before", "corrupt", "raw"]


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


@dataclass(frozen=True, slots=True)
class _Frame:
    """Where one reply lies in a server's byte log (absolute offsets)."""

    start: int
    words: tuple[bytes, ...]
    body_start: int
    body_len: int  # -1: the reply has no body


def _frames(data: bytes | bytearray, at: int = 0) -> tuple[list[_Frame], int]:
    """The replies whose status line is complete in ``data`` from ``at`` on.

    Returns:
        The frames, and where to look next time: the start of the last frame when its
        body is not complete yet (so it is seen again once it is), else the end.
    """
    found: list[_Frame] = []
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return found, at
        words = tuple(bytes(data[at:end]).split())
        has_body = bool(words) and words[0] in _BODY_REPLIES and words[-1].isdigit()
        body_len = int(words[-1]) if has_body else -1
        found.append(_Frame(at, words, end + 2, body_len))
        nxt = end + 2 + (body_len + 2 if has_body else 0)
        if nxt > len(data):
            return found, at
        at = nxt


def parse_reserved_ids(data: bytes) -> list[int]:
    """The job ids of every ``RESERVED <id> <bytes>`` reply in what a server sent."""
    frames, _ = _frames(data)
    return [
        int(frame.words[1])
        for frame in frames
        if frame.words[:1] == (b"RESERVED",) and len(frame.words) == 3 and frame.words[1].isdigit()
    ]


def _linger_zero(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _shut(writer: asyncio.StreamWriter, *, rst: bool) -> None:
    if rst:
        _linger_zero(writer)
        writer.transport.abort()
    else:
        writer.close()


class Link:
    """One proxied connection: the client's side, the server's side, and their bytes.

    Attributes:
        index: The link's number, in order of acceptance (0 is the first).
        c2s: Every byte the client sent, in order.
        s2c: Every byte the server sent back, in order (before any injected fault).
        dropped: Whether ``drop_all`` closed it (rather than one of the peers).
        closed: Whether it stopped forwarding, however that happened.
        held: Whether it was accepted in ``hold`` mode (never connected to the server).
        kept: The side ``drop_all(side=...)`` left open (``"client"`` or ``"server"``),
            until ``release_orphans``.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.c2s = bytearray()
        self.s2c = bytearray()
        self.dropped = False
        self.closed = False
        self.held = False
        self.kept: str | None = None
        self._client: asyncio.StreamWriter | None = None
        self._server: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._forwarded = 0  # bytes of s2c written to the client
        self._next_reply = 0  # offset in s2c where the next unframed reply starts

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<Link {self.index} {state} c2s={len(self.c2s)} s2c={len(self.s2c)}>"

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

    def close(self, *, rst: bool, keep: str | None = None) -> None:
        """Stop forwarding and close the sides (RST with ``rst``, else FIN).

        Args:
            rst: Reset rather than close with FIN.
            keep: ``"client"`` or ``"server"``: leave that side open and silent.
        """
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        self.kept = keep
        if self._client is not None and keep != "client":
            _shut(self._client, rst=rst)
        if self._server is not None and keep != "server":
            _shut(self._server, rst=rst)

    def release(self) -> bool:
        """Reset the side ``close(keep=...)`` left open. Returns whether there was one."""
        kept, self.kept = self.kept, None
        writer = {"client": self._client, "server": self._server}.get(kept or "")
        if writer is None:
            return False
        _shut(writer, rst=True)
        return True


class FaultProxy:
    """A fault-injecting TCP proxy on 127.0.0.1 in front of ``target_host:target_port``.

    Use it as ``async with FaultProxy(port) as proxy:`` inside the event loop that runs
    the test, and point the client at ``proxy.port`` (``Client(**proxy.client_kwargs())``).

    Args:
        target_port: The server's port.
        target_host: The server's host (loopback).
        timeout: Bound, in seconds, on starting, stopping and each upstream connect.

    Attributes:
        accepted: How many client connections the proxy accepted (resets included).
        accept_resets: How many of those ``reset`` mode reset at once.
        held_bytes: Bytes read from either side that a ``stall`` keeps from being
            forwarded (not yet in ``c2s``/``s2c``), so a test can wait until a command
            reached the proxy.
        links: Every proxied connection so far, in order of acceptance.
        drops: How many times ``drop_all`` ran.
    """

    def __init__(self, target_port: int, target_host: str = _HOST, *, timeout: float = 5.0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.timeout = timeout
        self.accepted = 0
        self.accept_resets = 0
        self.held_bytes = 0
        self.drops = 0
        self.links: list[Link] = []
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._mode: AcceptMode = "forward"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._resume_timer: asyncio.TimerHandle | None = None
        self._rate: int | None = None
        self._cut: float | None = None
        self._garbage: tuple[GarbageMode, bytes] | None = None

    def __repr__(self) -> str:
        return f"<FaultProxy :{self._port} -> {self.target_host}:{self.target_port} {self._mode}>"

    # -- lifecycle --------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the proxy listens on (after ``start``).

        Raises:
            RuntimeError: The proxy was not started.
        """
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
        """The proxied connections that still forward."""
        return [link for link in self.links if not link.closed]

    async def start(self) -> FaultProxy:
        """Start listening on a free port of 127.0.0.1 (the same port after a restart).

        Raises:
            OSError: The port could not be bound.
            TimeoutError: Listening took longer than ``timeout``.
        """
        async with asyncio.timeout(self.timeout):
            self._server = await asyncio.start_server(
                self._accept, _HOST, self._port or 0, reuse_address=True
            )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and close every link and kept half (bounded by ``timeout``)."""
        await self._stop_listening()
        self.resume()
        for link in self.links:
            link.close(rst=True)
            link.release()
        tasks = [task for link in self.links for task in link._tasks if not task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- faults -----------------------------------------------------------------------

    def drop_all(self, *, rst: bool = True, side: Side = "both") -> int:
        """Drop every open proxied connection at once.

        Args:
            rst: Reset (``SO_LINGER`` 0) rather than close with FIN.
            side: ``"both"`` closes both sides. ``"server"`` closes only the server's
                side: the server forgets the connection (and puts its jobs back) while
                the client's stays open and never hears anything again, a half-open
                connection. ``"client"`` closes only the client's side: the server keeps
                an orphan connection that still holds its reserved jobs.

        Returns:
            How many connections were dropped.
        """
        keep = {"both": None, "server": "client", "client": "server"}[side]
        self.drops += 1
        dropped = 0
        for link in self.links:
            if not link.closed:
                link.dropped = True
                link.close(rst=rst, keep=keep)
                dropped += 1
        return dropped

    def release_orphans(self) -> int:
        """Reset every side ``drop_all(side=...)`` left open (and every held connection).

        Stands in for the TCP keepalive that would end them, hours later, in real life.

        Returns:
            How many half-open sides were closed.
        """
        released = 0
        for link in self.links:
            if link.held and not link.closed:
                link.close(rst=True)
                released += 1
            released += link.release()
        return released

    def stall(self, seconds: float | None = None) -> None:
        """Stop forwarding in both directions; bytes wait in the proxy.

        Args:
            seconds: Resume by itself after this long; ``None`` waits for ``resume()``.
        """
        self._flowing.clear()
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        if seconds is not None:
            self._resume_timer = asyncio.get_running_loop().call_later(seconds, self.resume)

    def resume(self) -> None:
        """Forward again after ``stall``."""
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        """Whether forwarding is stalled."""
        return not self._flowing.is_set()

    @property
    def armed(self) -> bool:
        """Whether a ``cut_mid_body`` or ``inject_garbage`` still waits for its reply."""
        return self._cut is not None or self._garbage is not None

    def set_rate(self, bytes_per_second: int | None) -> None:
        """Forward at most ``bytes_per_second`` in each direction (``None``: full speed)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be > 0, got {bytes_per_second}")
        self._rate = bytes_per_second

    def cut_mid_body(self, fraction: float = 0.5) -> None:
        """Arm a cut: the next reply with a body is forwarded up to ``fraction`` of it.

        The link is then reset on both sides, so the server puts a reserved job back.
        """
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        self._cut = fraction

    def inject_garbage(self, data: bytes | None = None, *, mode: GarbageMode = "before") -> None:
        """Arm garbage for the next reply a server sends on any link.

        Args:
            data: The bytes; by default a short line no beanstalkd ever sends.
            mode: ``"before"`` sends ``data`` ahead of the reply; ``"corrupt"`` writes it
                over the reply's first bytes; ``"raw"`` slips it into the middle of the
                next reply that has a body, so the body's length no longer matches.
        """
        default = {"before": b"HELLO THERE\r\n", "corrupt": b"#?!", "raw": b"\xffGARBAGE\x00"}
        self._garbage = (mode, data if data is not None else default[mode])

    def set_accept_mode(self, mode: AcceptMode) -> None:
        """How new connections are treated from now on.

        ``forward`` proxies them; ``refuse`` stops listening, so connecting fails with
        ``ECONNREFUSED``; ``reset`` accepts and resets at once (each counts in
        ``accept_resets``); ``hold`` accepts and never forwards or answers anything.
        Connections already open are not affected.
        """
        if mode not in ("forward", "refuse", "reset", "hold"):
            raise ValueError(f"unknown accept mode {mode!r}")
        previous, self._mode = self._mode, mode
        if mode == "refuse" and previous != "refuse":
            asyncio.get_running_loop().create_task(self._stop_listening())
        elif mode != "refuse" and previous == "refuse":
            asyncio.get_running_loop().create_task(self.start())

    # -- wire checks --------------------------------------------------------------------

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
        link._client = writer
        if self._mode == "reset":
            self.accept_resets += 1
            link.close(rst=True)
            return
        if self._mode == "hold":
            link.held = True
            link._tasks = [asyncio.get_running_loop().create_task(self._swallow(link, reader))]
            return
        try:
            async with asyncio.timeout(self.timeout):
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
        except (OSError, TimeoutError):
            link.close(rst=True)
            return
        if link.closed:  # dropped while connecting upstream
            _shut(up_writer, rst=True)
            return
        link._server = up_writer
        loop = asyncio.get_running_loop()
        link._tasks = [
            loop.create_task(self._pump(link, reader, up_writer, to_server=True)),
            loop.create_task(self._pump(link, up_reader, writer, to_server=False)),
        ]

    @staticmethod
    async def _swallow(link: Link, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(_CHUNK):
                link.c2s += data

    async def _pump(
        self,
        link: Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        to_server: bool,
    ) -> None:
        try:
            while not link.closed:
                data = await reader.read(_CHUNK)
                if not data or link.closed:
                    break
                if not self._flowing.is_set():
                    self.held_bytes += len(data)
                    try:
                        await self._flowing.wait()
                    finally:
                        self.held_bytes -= len(data)
                if to_server:
                    link.c2s += data
                    await self._write(writer, data)
                else:
                    link.s2c += data
                    if not await self._forward_replies(link, writer):
                        return
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # One peer closed (or failed): close the whole link with a FIN.
        link.close(rst=False)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes | bytearray) -> None:
        rate = self._rate
        if rate is None:
            writer.write(data)
            await writer.drain()
            return
        # Small slices, so a throttled link trickles steadily instead of in bursts.
        step = max(1, rate // 50)
        for at in range(0, len(data), step):
            piece = data[at : at + step]
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(len(piece) / rate)
            await self._flowing.wait()

    async def _forward_replies(self, link: Link, writer: asyncio.StreamWriter) -> bool:
        """Forward what the server sent since last time, applying armed faults.

        Returns:
            False when a fault closed the link.
        """
        log = link.s2c
        frames, link._next_reply = _frames(log, link._next_reply)
        out = bytearray()
        at = link._forwarded
        for frame in frames:
            if self._garbage is not None:
                mode, junk = self._garbage
                if frame.start < at and mode != "raw":
                    pass  # its first bytes are gone already: wait for the next reply
                elif mode == "before":
                    out += log[at : frame.start] + junk
                    at = frame.start
                    self._garbage = None
                elif mode == "corrupt":
                    out += log[at : frame.start] + junk
                    at = min(frame.start + len(junk), frame.body_start - 2)
                    self._garbage = None
                elif frame.body_len >= 0 and at <= (
                    middle := frame.body_start + frame.body_len // 2
                ) <= len(log):
                    out += log[at:middle] + junk
                    at = middle
                    self._garbage = None
            if self._cut is not None and frame.body_len >= 0:
                cut_at = frame.body_start + int(frame.body_len * self._cut)
                if at <= cut_at <= len(log):
                    self._cut = None
                    out += log[at:cut_at]
                    link._forwarded = cut_at
                    await self._write(writer, out)
                    await writer.drain()
                    link.close(rst=True)
                    return False
        out += log[at:]
        link._forwarded = len(log)
        await self._write(writer, out)
        return True

"""The anchor: a plain connection to beanstalkd that bypasses the proxy and the client.

It is the soak's source of truth about the server. It watches the soak's tube for the
whole run, so the server never garbage-collects the tube (an empty tube nobody uses or
watches is dropped, and its counters with it) while the proxied connections come and
go. It reads ``stats-tube`` and ``stats`` with nothing from rxbeanstalk but the server
address; after a server restart it reconnects and watches again.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["Anchor", "AnchorError"]

_CRLF = b"\r\n"


class AnchorError(RuntimeError):
    """The anchor could not get an answer from the server in time."""


class Anchor:
    """A raw connection that watches ``tube`` and answers stats queries.

    Args:
        host: The server's host (not the proxy's).
        port: The server's port.
        tube: The tube to keep alive and report on.
        timeout: Bound, in seconds, on each query including reconnects.
    """

    def __init__(self, host: str, port: int, tube: str, *, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.tube = tube
        self.timeout = timeout
        self.connections = 0
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def stats_tube(self) -> dict[str, str]:
        """``stats-tube <tube>``, every value a string.

        Raises:
            AnchorError: no answer within ``timeout`` (reconnecting as needed).
        """
        return await self._query(b"stats-tube " + self.tube.encode())

    async def stats(self) -> dict[str, str]:
        """``stats``, every value a string.

        Raises:
            AnchorError: no answer within ``timeout`` (reconnecting as needed).
        """
        return await self._query(b"stats")

    async def close(self) -> None:
        """Close the connection."""
        await self._drop()

    async def _query(self, command: bytes) -> dict[str, str]:
        async with self._lock:
            last: BaseException | None = None
            try:
                async with asyncio.timeout(self.timeout):
                    while True:
                        try:
                            return await self._ask(command)
                        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                            last = error
                            await self._drop()
                            await asyncio.sleep(0.05)
            except TimeoutError:
                raise AnchorError(
                    f"{command.decode()!r}: no answer from {self.host}:{self.port} within "
                    f"{self.timeout:g} s (last error: {last!r})"
                ) from None

    async def _ask(self, command: bytes) -> dict[str, str]:
        reader, writer = await self._connect()
        writer.write(command + _CRLF)
        line = await reader.readuntil(_CRLF)
        words = line.split()
        if len(words) != 2 or words[0] != b"OK" or not words[1].isdigit():
            raise ValueError(f"{command.decode()!r} answered {line!r}")
        body = await reader.readexactly(int(words[1]) + 2)
        return _parse(body[:-2])

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is not None:
            return self._streams
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._streams = (reader, writer)
        writer.write(b"watch " + self.tube.encode() + _CRLF)
        line = await reader.readuntil(_CRLF)
        if not line.startswith(b"WATCHING "):
            raise ValueError(f"watch {self.tube} answered {line!r}")
        self.connections += 1
        return reader, writer

    async def _drop(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await streams[1].wait_closed()


def _parse(body: bytes) -> dict[str, str]:
    """``key: value`` lines of a stats body, values unquoted strings."""
    result: dict[str, str] = {}
    for line in body.decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("---"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            result[key.strip()] = value
    return result

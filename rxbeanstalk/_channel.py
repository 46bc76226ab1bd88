"""A logical connection that reconnects on its next use and restores tube state.

A ``Channel`` owns at most one open ``Connection`` at a time. When that connection is
gone, the next command opens a new one, with capped exponential backoff after failed
attempts (none before the first, so a wrong address fails fast). A connection that
closes before any reply arrived (reset at once, silent) counts as a failed attempt too,
else a server that accepts and resets would be reconnected to in a hot loop. Commands
that were in flight on the lost connection already failed with ``ConnectionLostError``;
nothing is ever sent again by itself.

Tube state is applied strictly before it matters: every command states the used tube
and the watch list it depends on, and the channel sends ``use``, ``watch`` and
``ignore`` first when the connection's state differs. A fresh connection starts at
``default``; a channel given its owner's ``state`` restores it on every reconnect as
the first thing sent, before any other command (so even a command that does not
depend on it, like ``stats``, never runs ahead of the restore).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from types import EllipsisType
from typing import Any, NamedTuple

from ._connection import Connection, Sink, open_connection
from .errors import ConnectError, ConnectionLostError
from .protocol import Command, Ignore, Use, Watch


class Address(NamedTuple):
    """Where the server is and how to talk to it."""

    host: str
    port: int
    unix_path: str | None
    connect_timeout: float
    command_timeout: float
    max_body: int

    def __str__(self) -> str:
        return self.unix_path if self.unix_path is not None else f"{self.host}:{self.port}"


class _Queued(NamedTuple):
    command: Command[Any]
    sink: Sink
    timeout: float | None
    used: str | None
    watch: tuple[str, ...] | None


class _StateSink:
    """Sink of a ``use``/``watch``/``ignore`` sent on the channel's own account."""

    __slots__ = ()

    def resolve(self, value: Any) -> None:
        pass

    def reject(self, error: BaseException) -> None:
        # The connection closes itself when such a command fails (tube state unknown),
        # so the commands behind it fail too; nothing more to do here.
        pass


_STATE_SINK = _StateSink()


class Channel:
    """A reconnecting connection with tube-state restore.

    Args:
        address: Server address and timeouts.
        backoff_base: First delay after a failed connect, in seconds.
        backoff_cap: Longest delay between connect attempts, in seconds.
        state: The owner's ``(used tube, watch list)`` now, restored first on every
            reconnect; ``None`` applies it only before the commands that depend on it.
    """

    def __init__(
        self,
        address: Address,
        *,
        backoff_base: float = 0.05,
        backoff_cap: float = 2.0,
        state: Callable[[], tuple[str, tuple[str, ...]]] | None = None,
    ) -> None:
        self.address = address
        self._command_timeout = address.command_timeout
        self._state = state
        self._connected_before = False
        self.connection: Connection | None = None
        self.closed = False
        self._waiting: list[_Queued] = []
        self._connecting: asyncio.Task[None] | None = None
        self._failures = 0
        self._failed_at = 0.0
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap

    @property
    def connected(self) -> bool:
        """Whether an open connection is in place now."""
        conn = self.connection
        return conn is not None and not conn.closed

    def send(
        self,
        command: Command[Any],
        sink: Sink,
        *,
        timeout: float | EllipsisType | None = ...,
        used: str | None = None,
        watch: tuple[str, ...] | None = None,
    ) -> None:
        """Send ``command`` once its connection is open and its tube state applied.

        Must be called on the channel's event loop.

        Args:
            command: The command.
            sink: Receives its outcome.
            timeout: Seconds of silence before it fails; ``...`` (the default) for the
                address's ``command_timeout``; ``None`` to wait forever (a blocking reserve).
            used: The tube the connection must be using first, if it matters.
            watch: The watch list the connection must have first, if it matters.
        """
        if timeout is ...:
            timeout = self.address.command_timeout
        conn = self.connection
        if conn is not None and not conn.closed:
            self._send_on(conn, command, sink, timeout, used, watch)
            return
        if self.closed:
            sink.reject(ConnectionLostError("the client is closed"))
            return
        self._waiting.append(_Queued(command, sink, timeout, used, watch))
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_task(self._connect(loop))

    def send_in(self, command: Command[Any], sink: Sink, used: str) -> None:
        """``send(command, sink, used=used)`` with the default timeout, only cheaper.

        The per-command producer path (``put``): when the connection is open and already
        uses ``used``, the command goes straight to it.
        """
        conn = self.connection
        if conn is not None and conn.used == used and not conn.closed:
            conn.send(command, sink, self._command_timeout)
        else:
            self.send(command, sink, used=used)

    def _send_on(
        self,
        conn: Connection,
        command: Command[Any],
        sink: Sink,
        timeout: float | None,
        used: str | None,
        watch: tuple[str, ...] | None,
    ) -> None:
        self._apply_state(conn, used, watch)
        conn.send(command, sink, timeout)

    def _apply_state(
        self, conn: Connection, used: str | None, watch: tuple[str, ...] | None
    ) -> None:
        state_timeout = self.address.command_timeout
        if used is not None and conn.used != used:
            conn.send(Use(used), _STATE_SINK, state_timeout)
        if watch is not None and conn.watched != watch:
            # Watch the new tubes before ignoring old ones, so the list is never empty.
            for tube in watch:
                if tube not in conn.watched:
                    conn.send(Watch(tube), _STATE_SINK, state_timeout)
            for tube in conn.watched:
                if tube not in watch:
                    conn.send(Ignore(tube), _STATE_SINK, state_timeout)
            conn.watched = watch  # same set; keep the caller's order for the next compare

    def _backoff(self, now: float) -> float:
        if self._failures == 0:
            return 0.0
        delay = min(self._backoff_cap, self._backoff_base * 2.0 ** (self._failures - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter, so many clients do not retry in step
        return max(0.0, self._failed_at + delay - now)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        address = self.address
        try:
            delay = self._backoff(loop.time())
            if delay:
                await asyncio.sleep(delay)
            conn = await open_connection(
                loop,
                host=address.host,
                port=address.port,
                unix_path=address.unix_path,
                connect_timeout=address.connect_timeout,
                max_body=address.max_body,
            )
        except ConnectError as error:
            self._failures += 1
            self._failed_at = loop.time()
            self._fail_waiting(error)
            return
        except asyncio.CancelledError:
            self._fail_waiting(ConnectionLostError("the client is closed"))
            raise
        finally:
            self._connecting = None
        if self.closed:
            conn.close()
            self._fail_waiting(ConnectionLostError("the client is closed"))
            return
        conn.on_close(self._connection_closed)
        self.connection = conn
        if self._connected_before and self._state is not None:
            # A reconnect: the used tube and the watch list go first, ahead of anything
            # queued, as the server would otherwise run those commands in ``default``.
            self._apply_state(conn, *self._state())
        self._connected_before = True
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            self._send_on(conn, *item)

    def _connection_closed(self, conn: Connection) -> None:
        # Only a connection that got a reply proves the server is back: one reset at
        # once (or silent until its deadline) is a failed attempt, so the next connect
        # backs off instead of looping hot.
        if conn.replied:
            self._failures = 0
        else:
            self._failures += 1
            self._failed_at = conn.loop.time()

    def _fail_waiting(self, error: BaseException) -> None:
        waiting, self._waiting = self._waiting, []
        for item in waiting:
            item.sink.reject(error)

    def drop(self) -> None:
        """Close the current connection (if any); the next command opens a new one."""
        conn = self.connection
        self.connection = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close for good: the connection, and every command still waiting for one."""
        self.closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        self._fail_waiting(ConnectionLostError("the client is closed"))
        self.drop()

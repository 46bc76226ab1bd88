"""One TCP or unix-socket connection: a FIFO of pending replies, pipelined writes, deadlines.

Replies come back in request order, so each command's ``Sink`` waits in a FIFO and the
next reply belongs to the oldest one. Commands issued in the same loop tick are joined
into one write. Nothing ever tries to resynchronise: a bad reply, a missed deadline or an
EOF in the middle of a reply closes the connection and fails every pending command.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .errors import (
    BadFormatError,
    CommandError,
    CommandTimeoutError,
    ConnectError,
    ConnectionLostError,
    InvalidArgumentError,
    NotIgnoredError,
    ProtocolError,
)
from .protocol import DEFAULT_TUBE, Command, Ignore, Quit, RawCommand, ReplyParser, Use, Watch

_TUBE_STATE = frozenset({Use, Watch, Ignore})
_RAW_TUBE_STATE: dict[str, type[Use | Watch | Ignore]] = {
    "use": Use,
    "watch": Watch,
    "ignore": Ignore,
}


def _tube_state(command: Command[Any]) -> Use | Watch | Ignore | None:
    """The tube-state change ``command`` makes, if any.

    A raw ``use``/``watch``/``ignore`` sent through ``Client.command`` changes the state as
    much as the typed command does; without this record the client would believe a tube
    state the server no longer has (a later ``put`` would land in the raw ``use``'s tube).
    A raw one whose argument is no valid tube name is refused by the server: no change.
    """
    if type(command) in _TUBE_STATE:
        return command  # type: ignore[return-value]
    if isinstance(command, RawCommand) and len(command.args) == 1:
        typed = _RAW_TUBE_STATE.get(command.name)
        if typed is not None:
            try:
                return typed(str(command.args[0]))
            except InvalidArgumentError:
                return None
    return None


class Sink(Protocol):
    """Where the outcome of one command goes."""

    def resolve(self, value: Any) -> None:
        """The command succeeded with ``value``."""

    def reject(self, error: BaseException) -> None:
        """The command failed with ``error``."""


class _Pending:
    __slots__ = ("command", "sink", "timeout")

    def __init__(self, command: Command[Any], sink: Sink, timeout: float | None) -> None:
        self.command = command
        self.sink = sink
        self.timeout = timeout


def _set_keepalive(sock: socket.socket | None, idle: int) -> None:
    # A vanished server (no FIN, no RST) would otherwise hold a blocking reserve for the
    # kernel default of more than two hours.
    if sock is None or sock.family == socket.AF_UNIX:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", max(1, idle // 3)),
        ("TCP_KEEPCNT", 3),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Connection(asyncio.Protocol):
    """One open connection to beanstalkd.

    It also records the tube state it has applied on the server (``used``, ``watched``),
    so that the layer above can send ``use``/``watch``/``ignore`` only when needed.

    Args:
        loop: The event loop it runs on.
        max_body: Largest reply body accepted.
        keepalive: TCP keepalive idle seconds.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, max_body: int, keepalive: int = 15
    ) -> None:
        self.loop = loop
        self.used = DEFAULT_TUBE
        self.watched: tuple[str, ...] = (DEFAULT_TUBE,)
        self.closed = False
        self.close_reason: BaseException | None = None
        # Whether a reply ever arrived: a connection that closes without one (reset at
        # once, silent, garbage) was a failed attempt, and the channel backs off.
        self.replied = False
        self._parser = ReplyParser(max_body=max_body)
        self._pending: deque[_Pending] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._keepalive = keepalive
        self._head_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._on_close: list[Callable[[Connection], None]] = []

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # create_connection gives one
        self._transport = transport
        _set_keepalive(transport.get_extra_info("socket"), self._keepalive)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        pending = self._pending
        # Any byte is progress: the deadline measures silence, not transfer time.
        self._head_since = self.loop.time()
        try:
            while True:
                reply = parser.next_reply()
                if reply is None:
                    break
                if not pending:
                    raise ProtocolError(f"unexpected reply {reply.status} with no command pending")
                item = pending.popleft()
                self.replied = True
                command = item.command
                try:
                    value = command.interpret(reply)
                except CommandError as error:
                    state = _tube_state(command)
                    if state is not None:
                        self._state_failed(state, error)
                    item.sink.reject(error)
                    if self.closed:
                        return
                    if isinstance(error, BadFormatError) and command.desyncs_on_bad_format:
                        # The server now reads the body as a command: the stream is lost.
                        self.abort(
                            ProtocolError(
                                f"{command.describe()!r} got BAD_FORMAT; the server read its "
                                "body as a command, so the connection was closed"
                            )
                        )
                        return
                    continue
                except Exception as error:
                    # A reply word this command cannot get (ProtocolError), or a failure
                    # to read the reply: the stream cannot be trusted. Put the command back
                    # at the head so that closing fails it with this error (it was popped
                    # already and would otherwise never hear back).
                    pending.appendleft(item)
                    if isinstance(error, ProtocolError):
                        raise
                    raise ProtocolError(
                        f"{command.describe()!r}: could not read its {reply.status} reply "
                        f"({error!r})"
                    ) from error
                item.sink.resolve(value)
                if self.closed:  # a sink closed it (a disposed reserve, say)
                    return
        except ProtocolError as error:
            self.abort(error)
            return
        if pending:
            self._arm()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        if self._pending and isinstance(self._pending[0].command, Quit):
            self._pending.popleft().sink.resolve(None)
        if exc is not None:
            reason: BaseException = ConnectionLostError(f"connection lost: {exc}")
        elif self._parser.in_reply:
            reason = ConnectionLostError("connection closed by the server in the middle of a reply")
        else:
            reason = ConnectionLostError("connection closed by the server")
        self._finish(reason)

    # -- sending ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Number of commands waiting for their reply."""
        return len(self._pending)

    def send(self, command: Command[Any], sink: Sink, timeout: float | None) -> None:
        """Queue ``command``; its outcome goes to ``sink``.

        Args:
            command: The command to send.
            sink: Receives the value or the error.
            timeout: Seconds of silence after which the command fails with
                ``CommandTimeoutError`` and the connection is closed; ``None`` waits forever.
        """
        if self.closed:
            sink.reject(self._lost())
            return
        state = _tube_state(command)
        if state is not None:
            self._track(state)
        if not self._out:
            self.loop.call_soon(self._flush)
        self._out.append(command.encode())
        if not self._pending:
            self._head_since = self.loop.time()
            self._pending.append(_Pending(command, sink, timeout))
            self._arm()
        else:
            self._pending.append(_Pending(command, sink, timeout))

    def _track(self, command: Command[Any]) -> None:
        # The server handles commands in order, so the state after everything sent so
        # far is known when it is sent; the layer above relies on this to send a
        # use/watch/ignore only when it changes something.
        if isinstance(command, Use):
            self.used = command.tube
        elif isinstance(command, Watch):
            if command.tube not in self.watched:
                self.watched = (*self.watched, command.tube)
        elif isinstance(command, Ignore):
            self.watched = tuple(t for t in self.watched if t != command.tube)

    def _state_failed(self, command: Command[Any], error: CommandError) -> None:
        if isinstance(error, NotIgnoredError) and isinstance(command, Ignore):
            # The server kept the tube: put it back in the record.
            self.watched = (*self.watched, command.tube)
        else:
            # Unknown server-side tube state: never guess, start over on a new connection.
            self.abort(
                ProtocolError(f"{command.describe()!r} failed ({error}); tube state unknown")
            )

    def _flush(self) -> None:
        if self._out and self._transport is not None and not self.closed:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            self._transport.write(data)
        else:
            self._out.clear()

    # -- deadlines --------------------------------------------------------------------

    def _arm(self) -> None:
        timeout = self._pending[0].timeout
        if timeout is None:
            return
        due = self._head_since + timeout
        if self._timer is not None:
            if self._timer_at <= due:
                return  # it fires first and re-arms for the real due time
            self._timer.cancel()
        self._timer_at = due
        self._timer = self.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._pending or self.closed:
            return
        head = self._pending[0]
        if head.timeout is None:
            return
        if self.loop.time() >= self._head_since + head.timeout:
            self.abort(
                CommandTimeoutError(
                    f"no reply to {head.command.describe()!r} within {head.timeout:g} s; "
                    "the connection was closed"
                )
            )
        else:
            self._arm()

    # -- closing ----------------------------------------------------------------------

    def on_close(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(connection)`` once, when the connection closes."""
        if self.closed:
            callback(self)
        else:
            self._on_close.append(callback)

    def abort(self, reason: BaseException) -> None:
        """Close at once and fail every pending command.

        The first pending command gets ``reason``; the others get ``ConnectionLostError``
        caused by it.
        """
        if self.closed:
            return
        transport = self._transport
        self._finish(reason)
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        """Close, failing pending commands with ``ConnectionLostError``."""
        self.abort(ConnectionLostError("connection closed by the client"))

    def _lost(self) -> ConnectionLostError:
        reason = self.close_reason
        error = ConnectionLostError(f"connection is closed ({reason})")
        error.__cause__ = reason
        return error

    def _finish(self, reason: BaseException) -> None:
        self.closed = True
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._out.clear()
        pending, self._pending = self._pending, deque()
        first = True
        for item in pending:
            if first:
                item.sink.reject(reason)
                first = False
            else:
                item.sink.reject(self._lost())
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback(self)


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    *,
    host: str,
    port: int,
    unix_path: str | None,
    connect_timeout: float,
    max_body: int,
) -> Connection:
    """Open a connection to beanstalkd.

    Args:
        loop: The loop to run it on (the running loop).
        host: Server host, when ``unix_path`` is ``None``.
        port: Server port.
        unix_path: Path of a unix socket, instead of TCP.
        connect_timeout: Seconds to wait for the connection.
        max_body: Largest reply body accepted.

    Returns:
        The open connection.

    Raises:
        ConnectError: refused, timed out, or no such socket.
    """
    where = unix_path if unix_path is not None else f"{host}:{port}"

    def factory() -> Connection:
        return Connection(loop, max_body=max_body)

    try:
        async with asyncio.timeout(connect_timeout):
            if unix_path is not None:
                _, conn = await loop.create_unix_connection(factory, unix_path)
            else:
                _, conn = await loop.create_connection(factory, host, port)
    except TimeoutError:
        raise ConnectError(f"could not connect to {where} within {connect_timeout:g} s") from None
    except OSError as error:
        raise ConnectError(f"could not connect to {where}: {error.strerror or error}") from error
    return conn

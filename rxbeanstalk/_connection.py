"""One TCP or unix-socket connection: a FIFO of pending replies, pipelined writes, deadlines.

Replies come back in request order, so each command's ``Sink`` waits in a FIFO and the
next reply belongs to the oldest one. A lone command (nothing in flight, no other
callback due in this loop turn) is written at once; other commands are joined into one
write at the end of the loop turn (or after the replies being read), and at most about
1 MiB of commands is written ahead of its replies: the rest waits its turn, in order.
Nothing ever
tries to resynchronise: a bad reply, a missed deadline or an EOF in the middle of a
reply closes the connection and fails every pending command.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

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
_DEFAULT_WATCH = (DEFAULT_TUBE,)

# Bytes of commands written and not answered yet, beyond which further commands wait
# for replies before they are written (a command is always written when nothing else
# is). Piling up megabytes in the socket buffers makes pipelined 60 KiB puts slower
# than request/response; 1 MiB keeps the server busy without that.
WRITE_AHEAD = 1 << 20
# The pending FIFO is one flat list, ``_STRIDE`` entries per command: the command, its
# sink, its timeout, and the bytes it takes on the wire. (A tuple per command would cost
# 72 bytes more on every idle connection, and an allocation per command.) Answered
# entries at the front are dropped once there are this many and they are at least half
# of the list; the list is also emptied whenever it drains.
_STRIDE = 4
_COMPACT_PENDING = 1024 * _STRIDE
# Put in place of an answered command's entries, so that the list holds on to no
# command (a body) or sink; never read (entries before the head index are dead).
_SPENT = (None, None, None, 0)


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


def _last_in_turn(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether no other callback is due before the loop polls for I/O again.

    Then a command sent now can be written now: a flush deferred with ``call_soon``
    would run next, alone, after one more poll of the selector, and nothing could join
    it meanwhile. While other callbacks are due (the other tasks of an
    ``asyncio.gather``, say), they may send too, and the command waits to go out with
    theirs in one write. This reads asyncio's own ready queue, ``BaseEventLoop._ready``
    (private, but there since Python 3.4); on a loop without one (uvloop) commands
    always wait for the end of the turn.
    """
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


class Sink(Protocol):
    """Where the outcome of one command goes."""

    def resolve(self, value: Any) -> None:
        """The command succeeded with ``value``."""

    def reject(self, error: BaseException) -> None:
        """The command failed with ``error``."""


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


# Reads land in one buffer per thread, lent to the transport through
# ``asyncio.BufferedProtocol``. With a plain ``Protocol`` the selector transport makes a
# fresh bytes object per read at its 256 KiB ``max_size`` and shrinks it: glibc serves
# that size with mmap, so every read also costs an mmap, an mremap and a munmap (measured
# on loopback: ~11 us per small read against ~2.5 us). A reserve_stream lane reads once
# per job, so this was most of its client CPU. The selector and uvloop transports fill
# the buffer and call ``buffer_updated`` before they return to the loop, so one buffer
# per thread is never lent to two reads at once (the Windows proactor would; POSIX only).
_READ_SIZE = 256 * 1024
_read_buffers = threading.local()


def _read_buffer() -> memoryview:
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(_READ_SIZE))
    return view


class Connection(asyncio.BufferedProtocol):
    """One open connection to beanstalkd.

    It also records the tube state it has applied on the server (``used``, ``watched``),
    so that the layer above can send ``use``/``watch``/``ignore`` only when needed.

    Slotted and lean: a process may hold ten thousand of these waiting in a reserve, so
    what an idle connection does not need (a write queue, a parser buffer, a list of
    close callbacks) is made only when it is.

    Args:
        loop: The event loop it runs on.
        max_body: Largest reply body accepted.
        keepalive: TCP keepalive idle seconds.
    """

    __slots__ = (
        "_head",
        "_head_since",
        "_keepalive",
        "_on_close",
        "_out",
        "_parser",
        "_pending",
        "_pending_bytes",
        "_timer",
        "_transport",
        "close_reason",
        "closed",
        "loop",
        "replied",
        "used",
        "watched",
    )

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, max_body: int, keepalive: int = 15
    ) -> None:
        self.loop = loop
        self.used = DEFAULT_TUBE
        self.watched: tuple[str, ...] = _DEFAULT_WATCH
        self.closed = False
        self.close_reason: BaseException | None = None
        # Whether a reply ever arrived: a connection that closes without one (reset at
        # once, silent, garbage) was a failed attempt, and the channel backs off.
        self.replied = False
        self._parser = ReplyParser(max_body=max_body)
        # The FIFO of commands waiting for replies: ``_STRIDE`` entries per command,
        # from ``_head`` on. A list and an index rather than a deque: an empty deque
        # costs 600 bytes more, on every idle connection.
        self._pending: list[Any] = []
        self._head = 0
        self._pending_bytes = 0  # wire bytes of the pending commands
        # Encoded commands not written yet (the tail of the pending ones), or None.
        self._out: list[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._keepalive = keepalive
        self._head_since = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._on_close: Callable[[Connection], None] | list[Callable[[Connection], None]] | None
        self._on_close = None

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # create_connection gives one
        self._transport = transport
        _set_keepalive(transport.get_extra_info("socket"), self._keepalive)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(_read_buffer()[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        pending = self._pending
        try:
            while True:
                replies = parser.replies()
                for reply in replies:
                    head = self._head
                    if head == len(pending):
                        raise ProtocolError(
                            f"unexpected reply {reply.status} with no command pending"
                        )
                    command: Command[Any] = pending[head]
                    sink: Sink = pending[head + 1]
                    self._pending_bytes -= pending[head + 3]
                    if head + _STRIDE == len(pending):
                        pending.clear()
                        head = 0
                    else:
                        pending[head : head + _STRIDE] = _SPENT
                        head += _STRIDE
                    # Stored before any sink runs: a sink may send, or close the connection.
                    self._head = head
                    self.replied = True
                    try:
                        value = command.interpret(reply)
                    except CommandError as error:
                        self._command_failed(command, sink, error)
                    except Exception as error:
                        self._unreadable(command, sink, reply.status, error)
                    else:
                        sink.resolve(value)
                    if self.closed:  # a sink closed it (a disposed reserve, say)
                        return
                if not replies or not parser.buffered:
                    break
                # Bytes are left after replies: a partial reply, or bad bytes, which
                # the next call raises for.
        except ProtocolError as error:
            self.abort(error)
            return
        head = self._head
        if head >= _COMPACT_PENDING and head * 2 >= len(pending):
            del pending[:head]
            self._head = head = 0
        if self._out is not None:
            # Commands the sinks sent, and any held back for want of room: the room
            # the replies made is theirs now, in one write.
            self._flush()
        if head != len(pending):
            # Any byte is progress: the deadline measures silence, not transfer time.
            self._head_since = self.loop.time()
            self._arm(pending[head + 2])

    def _command_failed(self, command: Command[Any], sink: Sink, error: CommandError) -> None:
        if command.may_change_tubes:
            state = _tube_state(command)
            if state is not None:
                self._state_failed(state, error)
        sink.reject(error)
        if not self.closed and isinstance(error, BadFormatError) and command.desyncs_on_bad_format:
            # The server now reads the body as a command: the stream is lost.
            self.abort(
                ProtocolError(
                    f"{command.describe()!r} got BAD_FORMAT; the server read its body as a "
                    "command, so the connection was closed"
                )
            )

    def _unreadable(
        self, command: Command[Any], sink: Sink, status: str, error: Exception
    ) -> NoReturn:
        # A reply word this command cannot get (ProtocolError), or a failure to read the
        # reply: the stream cannot be trusted. Put the command back at the head so that
        # closing fails it with this error (it was taken already and would otherwise
        # never hear back).
        self._pending[self._head : self._head] = (command, sink, None, 0)
        if isinstance(error, ProtocolError):
            raise error
        raise ProtocolError(
            f"{command.describe()!r}: could not read its {status} reply ({error!r})"
        ) from error

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        pending, head = self._pending, self._head
        if head < len(pending) and isinstance(pending[head], Quit):
            self._head = head + _STRIDE
            pending[head + 1].resolve(None)
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
        return (len(self._pending) - self._head) // _STRIDE

    def send(
        self, command: Command[Any], sink: Sink, timeout: float | None, *, join: bool = False
    ) -> None:
        """Queue ``command``; its outcome goes to ``sink``.

        Written at once when nothing is in flight; else with the other commands of this
        loop tick, in one write, once the bytes written ahead of it leave room.

        Args:
            command: The command to send.
            sink: Receives the value or the error.
            timeout: Seconds of silence after which the command fails with
                ``CommandTimeoutError`` and the connection is closed; ``None`` waits forever.
            join: Only queue it: the caller queues what goes with it and then calls
                ``flush`` (a stream lane's settle and its next reserve: one write now,
                one read on the server, and no loop turn in between).
        """
        if self.closed:
            sink.reject(self._lost())
            return
        if command.may_change_tubes:
            state = _tube_state(command)
            if state is not None:
                self._track(state)
        data = command.encode()
        size = len(data)
        pending = self._pending
        if self._head == len(pending):
            # Nothing in flight: this is the head now, and its deadline starts.
            pending += (command, sink, timeout, size)
            self._pending_bytes = size
            if timeout is not None:
                self._head_since = self.loop.time()
                self._arm(timeout)
            if not join and self._out is None and _last_in_turn(self.loop):
                # And nothing waits to be written (only a server answering what it was
                # never sent could leave some), and nothing else can send before the
                # loop's turn ends: write now, a lone command need not wait for the
                # next turn.
                transport = self._transport
                if transport is not None:
                    transport.write(data)
                return
        else:
            pending += (command, sink, timeout, size)
            self._pending_bytes += size
        out = self._out
        if out is None:
            self._out = [data]
            if not join:
                self.loop.call_soon(self._flush)
        else:
            # A flush is on its way already (or the caller's, with join), or these wait
            # behind commands held back for room, which the next replies write.
            out.append(data)

    def flush(self) -> None:
        """Write what is queued now, as far as the room ahead of the replies allows."""
        self._flush()

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
        out = self._out
        if out is None:
            return
        transport = self._transport
        if self.closed or transport is None:
            self._out = None
            return
        if self._pending_bytes <= WRITE_AHEAD:
            # The usual case: everything pending fits, so all of it can be on the wire.
            self._out = None
            transport.write(b"".join(out) if len(out) > 1 else out[0])
            return
        # Write the oldest commands that fit ahead of the replies still due; the rest
        # stay queued, in order, for the replies to make room.
        written = self._pending_bytes - sum(len(data) for data in out)
        count = 0
        for data in out:
            if written and written + len(data) > WRITE_AHEAD:
                break
            written += len(data)
            count += 1
        if count == 0:
            return
        if count == len(out):
            self._out = None
        else:
            self._out = out[count:]
        transport.write(b"".join(out[:count]) if count > 1 else out[0])

    # -- deadlines --------------------------------------------------------------------

    def _arm(self, timeout: float | None) -> None:
        # ``timeout`` is the head command's; the timer is left armed when it would fire
        # first anyway (it then looks again and re-arms for the real due time).
        if timeout is None:
            return
        due = self._head_since + timeout
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._timer = self.loop.call_at(due, _on_timer, self)

    def _on_timer(self) -> None:
        self._timer = None
        pending, head = self._pending, self._head
        if self.closed or head == len(pending):
            return
        timeout = pending[head + 2]
        if timeout is None:
            return
        if self.loop.time() >= self._head_since + timeout:
            command: Command[Any] = pending[head]
            self.abort(
                CommandTimeoutError(
                    f"no reply to {command.describe()!r} within {timeout:g} s; "
                    "the connection was closed"
                )
            )
        else:
            self._arm(timeout)

    # -- closing ----------------------------------------------------------------------

    def on_close(self, callback: Callable[[Connection], None]) -> None:
        """Call ``callback(connection)`` once, when the connection closes."""
        if self.closed:
            callback(self)
            return
        callbacks = self._on_close
        if callbacks is None:
            self._on_close = callback  # most connections get one: no list for it
        elif isinstance(callbacks, list):
            callbacks.append(callback)
        else:
            self._on_close = [callbacks, callback]

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
        self._out = None
        pending, head = self._pending, self._head
        self._pending, self._head, self._pending_bytes = [], 0, 0
        first = True
        for sink in pending[head + 1 :: _STRIDE]:
            if first:
                sink.reject(reason)
                first = False
            else:
                sink.reject(self._lost())
        callbacks, self._on_close = self._on_close, None
        if isinstance(callbacks, list):
            for callback in callbacks:
                callback(self)
        elif callbacks is not None:
            callbacks(self)


def _on_timer(connection: Connection) -> None:
    # The deadline timer's callback: a function and an argument rather than a bound
    # method, which would be one more object on every idle connection.
    connection._on_timer()


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

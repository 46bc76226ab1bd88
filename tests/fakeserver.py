r"""A fake beanstalkd for what a real one cannot be made to do.

``FakeServer`` listens on 127.0.0.1 (a free port) in a background thread. For each command
line it receives (a ``put``'s body is read and kept with it) it asks ``respond(line)`` what
to do: send some bytes, send them and hang up, or stay silent. That covers garbage
replies, replies cut off in the middle of a body, and a server that never answers.

Example::

    with FakeServer(lambda line: Response(b"GARBAGE\r\n")) as fake:
        client = Client(fake.host, fake.port)
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self


@dataclass(frozen=True)
class Response:
    """What the fake server does after a command.

    Attributes:
        data: Bytes to send back (may be empty: silence).
        close: Close the connection after sending ``data``.
    """

    data: bytes = b""
    close: bool = False


SILENT = Response()
"""Answer nothing and keep the connection open."""


def reply(data: bytes) -> Response:
    """Send ``data`` and keep the connection open."""
    return Response(data)


def hang_up(data: bytes = b"") -> Response:
    """Send ``data`` (perhaps a truncated reply), then close the connection."""
    return Response(data, close=True)


class FakeServer:
    """A scripted TCP server speaking just enough beanstalkd to read commands.

    Args:
        respond: Called with each command line (without CRLF) on the connection's thread;
            returns the ``Response``.

    Attributes:
        commands: Every command line received, in order, over all connections.
        bodies: The body of each ``put`` received, in order.
        accepted: How many connections were accepted.
        closed_by_client: How many connections the client closed.
    """

    def __init__(self, respond: Callable[[bytes], Response]) -> None:
        self._respond = respond
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._stopping = threading.Event()
        self.commands: list[bytes] = []
        self.bodies: list[bytes] = []
        self.accepted = 0
        self.closed_by_client = 0
        self.host = "127.0.0.1"
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Listen on a free port and start accepting."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(16)
        listener.settimeout(0.05)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        """Close every socket and wait for the threads (idempotent)."""
        self._stopping.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            _close(conn)
        if self._listener is not None:
            _close(self._listener)
            self._listener = None
        for thread in self._threads:
            thread.join(2.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving ----------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="fakeserver", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(0.05)
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while not self._stopping.is_set():
                end = buffer.find(b"\r\n")
                if end >= 0:
                    line = buffer[:end]
                    need = end + 2
                    words = line.split(b" ")
                    has_body = words[0] == b"put" and len(words) == 5 and words[4].isdigit()
                    if has_body:
                        need += int(words[4]) + 2
                    if len(buffer) >= need:
                        body = buffer[end + 2 : need - 2]
                        buffer = buffer[need:]
                        with self._lock:
                            self.commands.append(line)
                            if has_body:
                                self.bodies.append(body)
                        response = self._respond(line)
                        if response.data:
                            conn.sendall(response.data)
                        if response.close:
                            return
                        continue
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                if not chunk:
                    with self._lock:
                        self.closed_by_client += 1
                    return
                buffer += chunk
        except OSError:
            return
        finally:
            _close(conn)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()

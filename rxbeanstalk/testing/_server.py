"""Start, stop and inspect a real beanstalkd process for tests.

:class:`BeanstalkdServer` runs the system's ``beanstalkd`` binary on ``127.0.0.1`` with a free
port (or on a unix socket in a private temporary directory), waits until it answers, and stops
it again without leaving zombies or orphans behind.

Its raw helpers (:meth:`BeanstalkdServer.query`, :meth:`~BeanstalkdServer.stats`,
:meth:`~BeanstalkdServer.stats_job`) speak to the server over a fresh plain socket and use
nothing else from rxbeanstalk, so a test gets a view of the server's state that is independent
of the client under test.

This module uses only the standard library.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

__all__ = ["BeanstalkdNotFoundError", "BeanstalkdServer"]

_HOST = "127.0.0.1"
_CRLF = b"\r\n"
# Replies followed by "<bytes> CRLF <body> CRLF"; the body length is the reply's last word.
_BODY_REPLIES = frozenset({b"OK", b"FOUND", b"RESERVED"})
_PORT_ATTEMPTS = 5
# How long one readiness probe waits for the answer of a server that accepted the connection.
_PROBE_TIMEOUT = 0.5
# Longest pause between two readiness probes (the pause starts at 5 ms and doubles).
_MAX_PROBE_INTERVAL = 0.1
_INSTALL_HINT = (
    "Install it with `apt-get install beanstalkd` on Debian/Ubuntu "
    "(or run `make deps` in the rxbeanstalk checkout), or pass binary=... to BeanstalkdServer."
)


class BeanstalkdNotFoundError(RuntimeError):
    """The ``beanstalkd`` binary could not be found.

    The message says how to install it. Tests that need a server fail with it; they never skip.
    """


class _AddressInUseError(RuntimeError):
    """The chosen address was taken: beanstalkd could not bind, or another server answers."""


class BeanstalkdServer:
    r"""A real beanstalkd process on 127.0.0.1 (free port) or on a unix socket.

    Constructing one does no I/O; :meth:`start` (or ``with``) launches the process and returns
    once it answers ``list-tube-used``. :meth:`stop` is idempotent, and servers still running
    when the interpreter exits are killed by an ``atexit`` hook.

    Example:
        >>> with BeanstalkdServer() as srv:  # doctest: +SKIP
        ...     srv.query(b"put 0 0 60 5\r\nhello\r\n")
        b'INSERTED 1\r\n'

    Args:
        unix: Listen on a unix socket (``unix_path``) in a private temporary directory instead
            of a TCP port.
        binlog_dir: Directory for beanstalkd's write-ahead log (``-b``); created if missing.
            Jobs then survive :meth:`restart` and :meth:`kill`. ``None`` runs without a binlog.
        max_job_size: Maximum job body size in bytes (``-z``); ``None`` keeps the server's
            default of 65535.
        extra_args: Further command-line arguments, appended as given (e.g. ``["-f", "0"]``).
        binary: Name or path of the beanstalkd executable; ``None`` looks up ``beanstalkd`` on
            ``PATH``. It is resolved when the server starts.

    Raises:
        ValueError: ``max_job_size`` is negative.
        TypeError: ``extra_args`` is a single string rather than a sequence of strings.
    """

    def __init__(
        self,
        *,
        unix: bool = False,
        binlog_dir: str | os.PathLike[str] | None = None,
        max_job_size: int | None = None,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
    ) -> None:
        if max_job_size is not None and max_job_size < 0:
            raise ValueError(f"max_job_size must be >= 0, got {max_job_size}")
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of strings, not one string")
        self._unix = unix
        self._binlog_dir = None if binlog_dir is None else os.fspath(binlog_dir)
        self._max_job_size = max_job_size
        self._extra_args = tuple(extra_args)
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        # Private directory holding the log file and, in unix mode, the socket. It is created
        # by start(), removed by stop() and re-created at the same path by restart().
        self._tmpdir: str | None = None

    # ------------------------------------------------------------------ addresses and state

    @property
    def host(self) -> str:
        """The IP address a TCP server listens on: always ``"127.0.0.1"``."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port the server listens on (chosen by :meth:`start`).

        It stays readable after :meth:`stop`, and :meth:`restart` keeps it.

        Raises:
            RuntimeError: The server listens on a unix socket, or was never started.
        """
        if self._unix:
            raise RuntimeError("this BeanstalkdServer listens on a unix socket: it has no port")
        if self._port is None:
            raise RuntimeError("this BeanstalkdServer has not been started: it has no port yet")
        return self._port

    @property
    def unix_path(self) -> str:
        """The path of the unix socket the server listens on (chosen by :meth:`start`).

        It stays readable after :meth:`stop`, and :meth:`restart` keeps it.

        Raises:
            RuntimeError: The server listens on TCP, or was never started.
        """
        if not self._unix:
            raise RuntimeError("this BeanstalkdServer listens on TCP: it has no unix_path")
        if self._tmpdir is None:
            raise RuntimeError("this BeanstalkdServer has not been started: no unix_path yet")
        return os.path.join(self._tmpdir, "beanstalkd.sock")

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"`` for TCP, or the socket path in unix mode.

        Raises:
            RuntimeError: The server was never started.
        """
        return self.unix_path if self._unix else f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id of the running server, or ``None`` when it is not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive (a process that died is reaped here)."""
        return self._proc is not None and self._proc.poll() is None

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments that point a ``Client`` at this server.

        Returns:
            ``{"host": "127.0.0.1", "port": PORT}``, or ``{"unix_path": PATH}`` in unix mode.

        Raises:
            RuntimeError: The server was never started.
        """
        if self._unix:
            return {"unix_path": self.unix_path}
        return {"host": self.host, "port": self.port}

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 5.0) -> Self:
        """Launch beanstalkd on a new address and wait until it answers.

        A TCP server gets a free port on 127.0.0.1; if beanstalkd cannot bind it (another
        process took it meanwhile), a few other ports are tried. A unix server gets a socket in
        a new private directory. Readiness is polled (connect, ``list-tube-used``, and a
        ``stats`` whose ``pid`` must be this process) until ``timeout``; there is no fixed sleep.

        Args:
            timeout: Seconds to wait, in all, for the server to answer.

        Returns:
            This server, now running.

        Raises:
            BeanstalkdNotFoundError: The beanstalkd binary is missing.
            RuntimeError: The server is already running, exited during start-up, or did not
                answer within ``timeout``; the message includes its stderr.
        """
        if self.running:
            raise RuntimeError(f"beanstalkd is already running at {self.address}")
        binary = self._find_binary()
        # Forget a previous run (e.g. after kill()): start() always takes a fresh address.
        self._terminate(timeout)
        self._remove_tmpdir()
        self._port = None
        self._tmpdir = tempfile.mkdtemp(prefix="rxbeanstalk-", dir=_socket_friendly_tempdir())
        _live_servers[id(self)] = self

        deadline = time.monotonic() + timeout
        attempts = 1 if self._unix else _PORT_ATTEMPTS
        failures: list[str] = []
        try:
            for _ in range(attempts):
                if not self._unix:
                    self._port = _free_port()
                try:
                    self._launch(binary, deadline, timeout)
                except _AddressInUseError as exc:
                    failures.append(str(exc))
                    if time.monotonic() >= deadline:
                        break
                else:
                    return self
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise RuntimeError(
            f"beanstalkd could not get a free address in {len(failures)} attempt(s):\n"
            + "\n".join(failures)
        )

    def restart(self, timeout: float = 5.0) -> Self:
        """Stop the server (if running) and start it again on the same port or socket path.

        The binlog directory is kept, so with ``binlog_dir`` set the jobs survive; without it
        the new process starts empty and counts job ids from 1 again. The new process has a
        new ``pid`` and a new ``id`` in ``stats``.

        Args:
            timeout: Seconds allowed for stopping, and again for the new process to answer.

        Returns:
            This server, running again.

        Raises:
            BeanstalkdNotFoundError: The beanstalkd binary is missing.
            RuntimeError: The server was never started, or the new process could not bind the
                old address or did not answer within ``timeout``.
        """
        if self._tmpdir is None:
            raise RuntimeError("restart() needs a server that was started; call start()")
        binary = self._find_binary()
        self._terminate(timeout)
        os.makedirs(self._tmpdir, mode=0o700, exist_ok=True)
        _live_servers[id(self)] = self
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            try:
                self._launch(binary, deadline, timeout)
            except _AddressInUseError as exc:
                # The old address may be held for a moment (e.g. by a client socket that
                # happened to get this port as its local port); retry until the deadline.
                if time.monotonic() + pause >= deadline:
                    raise RuntimeError(
                        f"beanstalkd could not be restarted on {self.address} "
                        f"within {timeout}s: {exc}"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, _MAX_PROBE_INTERVAL)
            else:
                return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, wait up to ``timeout``, then SIGKILL.

        Idempotent: stopping a server that is stopped, killed or never started does nothing
        but clean up. Removes the private temporary directory (log file, unix socket). The
        address stays readable, and :meth:`restart` can bring the server back on it.

        Args:
            timeout: Seconds to wait for the process to exit after SIGTERM.
        """
        self._terminate(timeout)
        self._remove_tmpdir()
        _live_servers.pop(id(self), None)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as in a crash, and reap it.

        Unlike :meth:`stop` this keeps the private directory, so :meth:`restart` reuses the
        same socket path; call :meth:`stop` afterwards to clean up (the fixtures do).
        Idempotent.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
        proc.wait()
        self._proc = None

    def drain(self) -> None:
        """Put the server into drain mode (SIGUSR1): it answers ``DRAINING`` to every ``put``.

        The signal is delivered asynchronously; poll ``stats()["draining"] == "true"`` to know
        it took effect. Drain mode lasts until the process ends.

        Raises:
            RuntimeError: The server is not running.
        """
        proc = self._require_running()
        _signal_group(proc, signal.SIGUSR1)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        try:
            where = self.address
        except RuntimeError:
            where = "(not started)"
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<BeanstalkdServer {where} {state}>"

    # ------------------------------------------------------------------ raw protocol helpers

    def query(self, data: bytes, *, timeout: float = 5.0) -> bytes:
        r"""Send raw bytes on a fresh connection and return the first complete reply, raw.

        A reply is one CRLF-terminated line; for ``OK <bytes>``, ``FOUND <id> <bytes>`` and
        ``RESERVED <id> <bytes>`` it also includes the body and its trailing CRLF. Any bytes
        after the first reply are discarded, and the connection is closed.

        Args:
            data: Exact bytes to send, e.g. ``b"put 0 0 60 5\r\nhello\r\n"``.
            timeout: Seconds allowed for connecting, sending and reading the reply.

        Returns:
            The reply bytes, e.g. ``b"INSERTED 1\r\n"`` or ``b"FOUND 1 5\r\nhello\r\n"``.

        Raises:
            RuntimeError: The server was never started.
            TimeoutError: No complete reply within ``timeout`` (e.g. a ``reserve`` on an
                empty tube).
            ConnectionError: The server refused the connection or closed it before a complete
                reply.
            OSError: Any other socket error (e.g. the unix socket file is gone).
        """
        deadline = time.monotonic() + timeout
        with self._connect(deadline) as sock:
            sock.sendall(data)
            return _ReplyReader(sock, deadline).read()

    def stats(self, tube: str | None = None) -> dict[str, str]:
        """Return the server's ``stats`` (or ``stats-tube <tube>``), every value a ``str``.

        The YAML body is split into ``key: value`` lines; surrounding double quotes are
        removed. Nothing is converted, so ``"0"``, ``"true"`` and tube names stay strings.

        Args:
            tube: A tube name to send ``stats-tube`` for; ``None`` sends ``stats``.

        Returns:
            The statistics, e.g. ``{"current-jobs-ready": "0", "pid": "1234", ...}``.

        Raises:
            LookupError: The tube does not exist (``NOT_FOUND``).
            RuntimeError: The server was never started, or answered something else than
                ``OK`` or ``NOT_FOUND``.
            TimeoutError: No complete reply in time.
            ConnectionError: The connection was refused or closed early.
            OSError: Any other socket error.
        """
        command = b"stats" if tube is None else b"stats-tube " + tube.encode()
        return self._stats_command(command)

    def stats_job(self, job_id: int) -> dict[str, str]:
        """Return ``stats-job <job_id>``, every value a ``str``.

        Args:
            job_id: The job id.

        Returns:
            The job's statistics, e.g. ``{"id": "1", "state": "ready", ...}``.

        Raises:
            LookupError: No such job (``NOT_FOUND``).
            RuntimeError: The server was never started, or answered something else than
                ``OK`` or ``NOT_FOUND``.
            TimeoutError: No complete reply in time.
            ConnectionError: The connection was refused or closed early.
            OSError: Any other socket error.
        """
        return self._stats_command(b"stats-job %d" % job_id)

    # ------------------------------------------------------------------ internals

    def _stats_command(self, command: bytes) -> dict[str, str]:
        reply = self.query(command + _CRLF)
        line, _, rest = reply.partition(_CRLF)
        if line.startswith(b"OK "):
            return _parse_yaml_mapping(rest[: -len(_CRLF)])
        if line == b"NOT_FOUND":
            raise LookupError(f"{command.decode(errors='replace')!r} answered NOT_FOUND")
        raise RuntimeError(f"{command.decode(errors='replace')!r} answered {reply!r}")

    def _find_binary(self) -> str:
        name = self._binary or "beanstalkd"
        found = shutil.which(name)
        if found is None:
            where = "is not an executable file" if os.sep in name else "was not found on PATH"
            raise BeanstalkdNotFoundError(f"beanstalkd binary {name!r} {where}. {_INSTALL_HINT}")
        return found

    def _argv(self, binary: str) -> list[str]:
        if self._unix:
            argv = [binary, "-l", f"unix:{self.unix_path}"]
        else:
            argv = [binary, "-l", _HOST, "-p", str(self.port)]
        if self._binlog_dir is not None:
            argv += ["-b", self._binlog_dir]
        if self._max_job_size is not None:
            argv += ["-z", str(self._max_job_size)]
        argv += self._extra_args
        return argv

    def _log_path(self) -> str:
        if self._tmpdir is None:  # start() and restart() set it before any launch
            raise RuntimeError("this BeanstalkdServer has not been started")
        return os.path.join(self._tmpdir, "beanstalkd.log")

    def _read_log(self) -> str:
        try:
            with open(self._log_path(), "rb") as log:
                text = log.read().decode(errors="replace").strip()
        except OSError:
            return "(no stderr captured)"
        return text or "(stderr was empty)"

    def _launch(self, binary: str, deadline: float, timeout: float) -> None:
        """Spawn beanstalkd at the current address and poll until it answers.

        Raises:
            _AddressInUseError: beanstalkd could not bind, or another server answers there.
            RuntimeError: It exited for another reason or did not answer by ``deadline``.
        """
        if self._binlog_dir is not None:
            os.makedirs(self._binlog_dir, exist_ok=True)
        argv = self._argv(binary)
        with open(self._log_path(), "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=True,
                start_new_session=True,
            )
        self._proc = proc
        try:
            self._wait_ready(proc, argv, deadline, timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(
        self, proc: subprocess.Popen[bytes], argv: list[str], deadline: float, timeout: float
    ) -> None:
        interval = 0.005
        while True:
            status = proc.poll()
            if status is not None:
                self._proc = None
                log = self._read_log()
                if "Address already in use" in log:
                    raise _AddressInUseError(f"{self.address} is in use: {log}")
                raise RuntimeError(
                    f"beanstalkd exited with status {status} before it was ready.\n"
                    f"command: {' '.join(argv)}\nstderr:\n{log}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"beanstalkd did not answer on {self.address} within {timeout}s.\n"
                    f"command: {' '.join(argv)}\nstderr:\n{self._read_log()}"
                )
            try:
                answering_pid = self._probe(min(remaining, _PROBE_TIMEOUT))
            except OSError:
                answering_pid = None  # not listening yet (refused, no socket file, timeout)
            if answering_pid is not None:
                if answering_pid == proc.pid:
                    return
                raise _AddressInUseError(
                    f"another beanstalkd (pid {answering_pid}) answers on {self.address}"
                )
            # Wait for the process to exit, at most one polling interval: no blind sleep.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, min(interval, deadline - time.monotonic())))
            interval = min(interval * 2, _MAX_PROBE_INTERVAL)

    def _probe(self, timeout: float) -> int | None:
        """Ask ``list-tube-used`` and ``stats``; return the answering server's pid.

        Returns:
            The ``pid`` from ``stats``, or ``None`` if the answer was not ``USING default``.

        Raises:
            OSError: Could not connect, or no full answer within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._connect(deadline) as sock:
            sock.sendall(b"list-tube-used\r\nstats\r\n")
            reader = _ReplyReader(sock, deadline)
            if reader.read() != b"USING default\r\n":
                return None
            line, _, rest = reader.read().partition(_CRLF)
            if not line.startswith(b"OK "):
                return None
            pid = _parse_yaml_mapping(rest[: -len(_CRLF)]).get("pid", "")
            return int(pid) if pid.isdigit() else None

    def _connect(self, deadline: float) -> socket.socket:
        timeout = max(deadline - time.monotonic(), 0.001)
        if self._unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.unix_path)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self._proc = None

    def _remove_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("beanstalkd is not running")
        return proc


class _ReplyReader:
    """Reads whole beanstalkd replies from a blocking socket, with one overall deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = bytearray()

    def read(self) -> bytes:
        """Return the next complete reply (line, plus body and CRLF where the reply has one).

        Raises:
            TimeoutError: The deadline passed first.
            ConnectionError: The server closed the connection before a complete reply.
        """
        while (end := self._buffer.find(_CRLF)) < 0:
            self._fill()
        size = end + len(_CRLF)
        words = bytes(self._buffer[:end]).split(b" ")
        if words[0] in _BODY_REPLIES and len(words) > 1 and words[-1].isdigit():
            size += int(words[-1]) + len(_CRLF)
        while len(self._buffer) < size:
            self._fill()
        reply = bytes(self._buffer[:size])
        del self._buffer[:size]
        return reply

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete reply in time; got so far {bytes(self._buffer)!r}")
        self._sock.settimeout(remaining)
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError(
                f"beanstalkd closed the connection; got so far {bytes(self._buffer)!r}"
            )
        self._buffer += chunk


def _parse_yaml_mapping(body: bytes) -> dict[str, str]:
    """Split a beanstalkd stats body into ``key: value`` strings (no YAML typing at all)."""
    result: dict[str, str] = {}
    for line in body.decode(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if not sep or line.startswith("---"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        result[key.strip()] = value
    return result


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _socket_friendly_tempdir() -> str:
    """A temp directory short enough for a unix socket path (108 bytes at most on Linux)."""
    base = tempfile.gettempdir()
    return base if len(base) <= 60 else "/tmp"


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group of an unreaped child (its own session, so pgid == pid)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


# Servers that have a process or a temporary directory; killed and cleaned up at exit.
_live_servers: dict[int, BeanstalkdServer] = {}


@atexit.register
def _stop_leftover_servers() -> None:
    for server in list(_live_servers.values()):
        with contextlib.suppress(Exception):
            server.kill()
            server.stop(timeout=0)

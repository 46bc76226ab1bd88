"""pytest fixtures that run a real beanstalkd.

Registered through the ``pytest11`` entry point, so installing rxbeanstalk makes them available
in every test suite:

- ``beanstalkd``: a fresh TCP server on 127.0.0.1 for each test, stopped afterwards.
- ``beanstalkd_unix``: the same on a unix socket.
- ``beanstalkd_module``: one TCP server shared by all tests of a module.
- ``beanstalkd_factory``: starts servers with custom options (``binlog_dir``,
  ``max_job_size``, ...) or several at once; all are stopped after the test.

A missing beanstalkd binary fails the test with the install hint: it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import pytest

from rxbeanstalk.testing._server import BeanstalkdNotFoundError, BeanstalkdServer

__all__ = [
    "BeanstalkdFactory",
    "beanstalkd",
    "beanstalkd_factory",
    "beanstalkd_module",
    "beanstalkd_unix",
]


def _start(server: BeanstalkdServer) -> BeanstalkdServer:
    try:
        return server.start()
    except BeanstalkdNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


def _serve(server: BeanstalkdServer) -> Iterator[BeanstalkdServer]:
    _start(server)
    try:
        yield server
    finally:
        server.stop()


class BeanstalkdFactory:
    """Starts ``BeanstalkdServer`` instances for one test; the fixture stops them all.

    Use it through the ``beanstalkd_factory`` fixture::

        def test_cluster(beanstalkd_factory: BeanstalkdFactory) -> None:
            a, b = beanstalkd_factory(), beanstalkd_factory(unix=True)
    """

    def __init__(self) -> None:
        self._servers: list[BeanstalkdServer] = []

    @property
    def servers(self) -> list[BeanstalkdServer]:
        """The servers made so far, in order (a copy)."""
        return list(self._servers)

    def __call__(
        self,
        *,
        unix: bool = False,
        binlog_dir: str | os.PathLike[str] | None = None,
        max_job_size: int | None = None,
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        start: bool = True,
    ) -> BeanstalkdServer:
        """Make a server (``BeanstalkdServer`` explains the arguments) and start it.

        Args:
            unix: Listen on a unix socket instead of a TCP port.
            binlog_dir: Write-ahead log directory (``-b``), or ``None``.
            max_job_size: Maximum job size (``-z``), or ``None`` for the default.
            extra_args: Further beanstalkd arguments.
            binary: The beanstalkd executable; ``None`` looks it up on ``PATH``.
            start: Start it before returning (default); ``False`` leaves that to the test.

        Returns:
            The server, running unless ``start`` is false.
        """
        server = BeanstalkdServer(
            unix=unix,
            binlog_dir=binlog_dir,
            max_job_size=max_job_size,
            extra_args=extra_args,
            binary=binary,
        )
        self._servers.append(server)
        return _start(server) if start else server

    def stop_all(self) -> None:
        """Stop every server this factory made (idempotent)."""
        for server in self._servers:
            server.stop()


@pytest.fixture
def beanstalkd() -> Iterator[BeanstalkdServer]:
    """A fresh beanstalkd on 127.0.0.1 with a free port, for one test.

    Yields:
        The running server; it is stopped after the test.
    """
    yield from _serve(BeanstalkdServer())


@pytest.fixture
def beanstalkd_unix() -> Iterator[BeanstalkdServer]:
    """A fresh beanstalkd on a unix socket in a private directory, for one test.

    Yields:
        The running server; it is stopped (and its directory removed) after the test.
    """
    yield from _serve(BeanstalkdServer(unix=True))


@pytest.fixture(scope="module")
def beanstalkd_module() -> Iterator[BeanstalkdServer]:
    """One beanstalkd on 127.0.0.1 shared by all tests of a module.

    Tests share its jobs and tubes: give each test its own tube names.

    Yields:
        The running server; it is stopped after the module's last test.
    """
    yield from _serve(BeanstalkdServer())


@pytest.fixture
def beanstalkd_factory() -> Iterator[BeanstalkdFactory]:
    """A factory for servers with custom options, or for several servers in one test.

    Yields:
        A :class:`BeanstalkdFactory`; every server it made is stopped after the test.
    """
    factory = BeanstalkdFactory()
    try:
        yield factory
    finally:
        factory.stop_all()

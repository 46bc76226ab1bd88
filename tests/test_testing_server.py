"""Tests of rxbeanstalk.testing: BeanstalkdServer and the pytest fixtures, on the real binary."""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rxbeanstalk.testing import BeanstalkdNotFoundError, BeanstalkdServer, _server
from rxbeanstalk.testing.pytest_plugin import BeanstalkdFactory

pytest_plugins = ("pytester",)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")


def assert_no_process(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def server() -> Iterator[BeanstalkdServer]:
    srv = BeanstalkdServer()
    try:
        yield srv
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- lifecycle


def test_start_answers_and_stop_leaves_no_process(server: BeanstalkdServer) -> None:
    assert server.start() is server
    assert server.running
    pid = server.pid
    assert pid is not None
    assert server.host == "127.0.0.1"
    assert 0 < server.port < 65536
    assert server.address == f"127.0.0.1:{server.port}"
    assert server.client_kwargs() == {"host": "127.0.0.1", "port": server.port}
    assert server.query(b"list-tube-used\r\n") == b"USING default\r\n"
    assert server.stats()["pid"] == str(pid)

    server.stop()

    assert not server.running
    assert server.pid is None
    assert_no_process(pid)
    with pytest.raises(ConnectionRefusedError):
        server.query(b"list-tube-used\r\n")
    server.stop()  # idempotent


def test_listens_only_on_loopback(server: BeanstalkdServer) -> None:
    server.start()
    proc_args = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    assert proc_args[1:5] == [b"-l", b"127.0.0.1", b"-p", str(server.port).encode()]


def test_context_manager_starts_and_stops() -> None:
    with BeanstalkdServer() as srv:
        pid = srv.pid
        assert pid is not None
        assert srv.query(b"list-tube-used\r\n") == b"USING default\r\n"
    assert not srv.running
    assert_no_process(pid)


def test_two_servers_get_different_ports() -> None:
    with BeanstalkdServer() as one, BeanstalkdServer() as two:
        assert one.port != two.port
        assert one.stats()["id"] != two.stats()["id"]


def test_address_before_start_raises() -> None:
    srv = BeanstalkdServer()
    for name in ("port", "address", "unix_path"):
        with pytest.raises(RuntimeError):
            getattr(srv, name)
    with pytest.raises(RuntimeError):
        srv.client_kwargs()
    with pytest.raises(RuntimeError, match="restart"):
        srv.restart()
    with pytest.raises(RuntimeError, match="not running"):
        srv.drain()
    assert srv.pid is None
    assert not srv.running
    assert "not started" in repr(srv)
    srv.stop()
    srv.kill()


def test_start_twice_raises(server: BeanstalkdServer) -> None:
    server.start()
    with pytest.raises(RuntimeError, match="already running"):
        server.start()


def test_constructor_validates_without_io() -> None:
    with pytest.raises(ValueError):
        BeanstalkdServer(max_job_size=-1)
    with pytest.raises(TypeError):
        BeanstalkdServer(extra_args="-V")
    BeanstalkdServer(binary="/nonexistent/beanstalkd")  # looked up only by start()


def test_unix_socket() -> None:
    with BeanstalkdServer(unix=True) as srv:
        path = srv.unix_path
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert srv.address == path
        assert srv.client_kwargs() == {"unix_path": path}
        with pytest.raises(RuntimeError):
            _ = srv.port
        assert srv.query(b"use jobs\r\n") == b"USING jobs\r\n"
        assert srv.stats()["pid"] == str(srv.pid)
    assert not os.path.exists(os.path.dirname(path))
    assert srv.unix_path == path  # still readable after stop


def test_restart_keeps_port_and_is_a_new_process(server: BeanstalkdServer) -> None:
    server.start()
    port, pid = server.port, server.pid
    assert pid is not None
    instance = server.stats()["id"]
    assert server.query(b"put 0 0 60 3\r\nold\r\n") == b"INSERTED 1\r\n"

    assert server.restart() is server

    assert server.port == port
    assert server.pid != pid
    assert_no_process(pid)
    stats = server.stats()
    assert stats["id"] != instance
    assert stats["pid"] == str(server.pid)
    assert stats["current-jobs-ready"] == "0"  # no binlog: jobs are gone


def test_restart_unix_keeps_socket_path() -> None:
    with BeanstalkdServer(unix=True) as srv:
        path, instance = srv.unix_path, srv.stats()["id"]
        srv.restart()
        assert srv.unix_path == path
        assert srv.stats()["id"] != instance


def test_restart_after_stop_reuses_address(server: BeanstalkdServer) -> None:
    server.start()
    port = server.port
    server.stop()
    server.restart()
    assert server.port == port
    assert server.query(b"list-tube-used\r\n") == b"USING default\r\n"


def test_start_after_stop_takes_a_new_address() -> None:
    with BeanstalkdServer(unix=True) as srv:
        first = srv.unix_path
        srv.stop()
        srv.start()
        assert srv.unix_path != first
        assert not os.path.exists(os.path.dirname(first))


def test_kill_leaves_no_process_and_restart_recovers_binlog(tmp_path: Path) -> None:
    with BeanstalkdServer(binlog_dir=tmp_path / "binlog") as srv:
        for body in (b"one", b"two"):
            srv.query(b"put 0 0 60 3\r\n" + body + b"\r\n")
        # Reserve job 1 and keep the connection open while the server crashes.
        with socket.create_connection((srv.host, srv.port), timeout=5) as worker:
            worker.sendall(b"reserve-with-timeout 0\r\n")
            assert _server._ReplyReader(worker, time.monotonic() + 5).read() == (
                b"RESERVED 1 3\r\none\r\n"
            )
            assert srv.stats_job(1)["state"] == "reserved"
            pid = srv.pid
            assert pid is not None

            srv.kill()

            assert not srv.running
            assert_no_process(pid)
            srv.kill()  # idempotent
        srv.restart()
        assert srv.stats_job(1)["state"] == "ready"  # a crash gives reserved jobs back
        assert srv.stats_job(2)["state"] == "ready"
        assert srv.query(b"put 0 0 60 1\r\nx\r\n") == b"INSERTED 3\r\n"


def test_drain_makes_put_answer_draining(server: BeanstalkdServer) -> None:
    server.start()
    server.drain()
    wait_for(lambda: server.stats()["draining"] == "true")
    assert server.query(b"put 0 0 60 5\r\nhello\r\n") == b"DRAINING\r\n"


def test_max_job_size_and_extra_args() -> None:
    with BeanstalkdServer(max_job_size=100, extra_args=["-f", "0"]) as srv:
        assert srv.stats()["max-job-size"] == "100"
        assert srv.query(b"put 0 0 60 100\r\n" + b"x" * 100 + b"\r\n") == b"INSERTED 1\r\n"
        assert srv.query(b"put 0 0 60 101\r\n" + b"x" * 101 + b"\r\n") == b"JOB_TOO_BIG\r\n"


def test_start_retries_when_the_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with BeanstalkdServer() as other:
        taken = iter([other.port])
        free_port = _server._free_port
        monkeypatch.setattr(_server, "_free_port", lambda: next(taken, None) or free_port())
        with BeanstalkdServer() as srv:
            assert srv.port != other.port
            assert srv.stats()["pid"] == str(srv.pid)
        assert other.stats()["pid"] == str(other.pid)


def test_start_failure_reports_stderr_and_cleans_up() -> None:
    srv = BeanstalkdServer(unix=True, extra_args=["--no-such-option"])
    with pytest.raises(RuntimeError, match="exited with status") as info:
        srv.start()
    assert "unknown flag: --no-such-option" in str(info.value)  # the server's stderr
    assert not srv.running
    assert not os.path.exists(os.path.dirname(srv.unix_path))


def test_start_timeout_kills_a_silent_process(tmp_path: Path) -> None:
    silent = tmp_path / "silent-beanstalkd"
    silent.write_text('#!/bin/sh\necho "$$" > "$0.pid"\nexec sleep 60\n')
    silent.chmod(0o755)
    srv = BeanstalkdServer(unix=True, binary=str(silent))
    with pytest.raises(RuntimeError, match="did not answer"):
        srv.start(timeout=0.5)
    assert not srv.running
    assert_no_process(int(Path(f"{silent}.pid").read_text()))


def test_missing_binary_raises_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(BeanstalkdNotFoundError, match="apt-get install beanstalkd"):
        BeanstalkdServer(binary=str(tmp_path / "beanstalkd")).start()
    monkeypatch.setenv("PATH", str(tmp_path))
    srv = BeanstalkdServer()
    with pytest.raises(BeanstalkdNotFoundError, match="apt-get") as info:
        srv.start()
    assert isinstance(info.value, RuntimeError)
    assert not srv.running


def test_atexit_hook_kills_leftover_servers() -> None:
    srv = BeanstalkdServer(unix=True).start()
    pid, directory = srv.pid, os.path.dirname(srv.unix_path)
    assert pid is not None
    _server._stop_leftover_servers()
    assert_no_process(pid)
    assert not os.path.exists(directory)


# ----------------------------------------------------------------------------- raw helpers


def test_query_returns_one_complete_reply_with_body(server: BeanstalkdServer) -> None:
    server.start()
    assert server.query(b"put 5 0 60 7\r\nhe\r\nllo\r\n") == b"INSERTED 1\r\n"
    assert server.query(b"peek 1\r\n") == b"FOUND 1 7\r\nhe\r\nllo\r\n"
    assert server.query(b"reserve-with-timeout 0\r\n") == b"RESERVED 1 7\r\nhe\r\nllo\r\n"
    stats = server.query(b"stats\r\n")
    assert stats.startswith(b"OK ")
    header, _, body = stats.partition(b"\r\n")
    assert len(body) == int(header.split()[1]) + 2
    assert body.endswith(b"\r\n")
    # Only the first reply is returned; what follows is dropped with the connection.
    assert server.query(b"list-tube-used\r\nuse other\r\n") == b"USING default\r\n"
    assert server.query(b"put 0 0 60 0\r\n\r\n") == b"INSERTED 2\r\n"


def test_query_times_out_without_a_reply(server: BeanstalkdServer) -> None:
    server.start()
    with pytest.raises(TimeoutError):
        server.query(b"reserve-with-timeout 5\r\n", timeout=0.2)


def test_query_reports_a_closed_connection(server: BeanstalkdServer) -> None:
    server.start()
    with pytest.raises(ConnectionError):
        server.query(b"quit\r\n")


def test_stats_values_stay_strings(server: BeanstalkdServer) -> None:
    server.start()
    server.query(b"use 123\r\n")
    stats = server.stats()
    assert stats["draining"] == "false"
    assert stats["current-connections"].isdigit()
    assert stats["version"].startswith("1.")
    assert all(isinstance(value, str) for value in stats.values())
    assert server.query(b"put 7 0 60 1\r\nx\r\n") == b"INSERTED 1\r\n"
    assert server.stats("default")["name"] == "default"
    job = server.stats_job(1)
    assert job["id"] == "1"
    assert job["pri"] == "7"
    assert job["tube"] == "default"
    assert job["state"] == "ready"


def test_stats_of_missing_tube_or_job_raise_lookup_error(server: BeanstalkdServer) -> None:
    server.start()
    with pytest.raises(LookupError, match="NOT_FOUND"):
        server.stats("no-such-tube")
    with pytest.raises(LookupError, match="NOT_FOUND"):
        server.stats_job(99)


def test_parse_yaml_mapping_keeps_strings_and_strips_quotes() -> None:
    body = b'---\nname: "123"\nos: Linux #1 SMP: x\nhostname: host\nempty: \n'
    assert _server._parse_yaml_mapping(body) == {
        "name": "123",
        "os": "Linux #1 SMP: x",
        "hostname": "host",
        "empty": "",
    }


# ----------------------------------------------------------------------------- fixtures


def test_beanstalkd_fixture(beanstalkd: BeanstalkdServer) -> None:
    assert beanstalkd.running
    assert beanstalkd.query(b"list-tube-used\r\n") == b"USING default\r\n"
    assert set(beanstalkd.client_kwargs()) == {"host", "port"}


def test_beanstalkd_unix_fixture(beanstalkd_unix: BeanstalkdServer) -> None:
    assert beanstalkd_unix.running
    assert set(beanstalkd_unix.client_kwargs()) == {"unix_path"}
    assert beanstalkd_unix.query(b"list-tube-used\r\n") == b"USING default\r\n"


_module_server_pids: list[int | None] = []


@pytest.mark.parametrize("round_", [1, 2])
def test_beanstalkd_module_fixture_is_shared(
    beanstalkd_module: BeanstalkdServer, round_: int
) -> None:
    assert beanstalkd_module.running
    _module_server_pids.append(beanstalkd_module.pid)
    assert len(set(_module_server_pids)) == 1


def test_beanstalkd_factory(beanstalkd_factory: BeanstalkdFactory, tmp_path: Path) -> None:
    one = beanstalkd_factory(max_job_size=10)
    two = beanstalkd_factory(unix=True, binlog_dir=tmp_path)
    idle = beanstalkd_factory(start=False)
    assert one.running and two.running and not idle.running
    assert one.stats()["max-job-size"] == "10"
    assert beanstalkd_factory.servers == [one, two, idle]
    pids = [one.pid, two.pid]
    beanstalkd_factory.stop_all()
    for pid in pids:
        assert pid is not None
        assert_no_process(pid)


def test_fixture_fails_without_binary(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        def test_needs_server(beanstalkd):
            pass
        """
    )
    monkeypatch.setenv("PATH", str(pytester.path / "empty-path"))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*was not found on PATH*apt-get install beanstalkd*"])

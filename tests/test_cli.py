"""The command-line tool (``python -m rxbeanstalk``) against a real beanstalkd.

Most tests call ``main(argv)`` in-process and read stdout/stderr with ``capsys``; a few
run ``python -m rxbeanstalk`` as a subprocess, some on a pseudo-terminal (``top``'s full
screen, Ctrl-C). The jobs a test needs are made with the library's ``Client``; what a
command did is read back with the server fixture's raw ``stats``/``stats_job``/``query``,
never with the tool itself.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import io
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rxbeanstalk import JobState, ServerStats, TubeStats
from rxbeanstalk._cli import main
from rxbeanstalk._cli._address import ENV_VAR, Target, parse_server, resolve_target
from rxbeanstalk._cli._failures import CliError
from rxbeanstalk._cli._format import duration, key_value_lines, table_lines
from rxbeanstalk._cli._progress import ProgressBar
from rxbeanstalk._cli._top import Snapshot, render, tube_rows
from rxbeanstalk.testing import BeanstalkdServer
from rxbeanstalk.testing.pytest_plugin import BeanstalkdFactory
from tests.conftest import activity, counters, job_state, make_client, stat, wait_until

# ------------------------------------------------------------------------------ helpers


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def _no_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own $BEANSTALKD_SERVER must not steer the tests.
    monkeypatch.delenv(ENV_VAR, raising=False)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """Run ``main(argv)`` in-process; return its exit code and what it printed."""
    capsys.readouterr()  # drop anything printed before
    code = main(list(argv))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def on(server: BeanstalkdServer, *argv: str) -> list[str]:
    """``argv`` with the option that points the tool at ``server`` (TCP or unix) first."""
    try:
        where = ["--unix", server.unix_path]
    except RuntimeError:
        where = ["--server", server.address]
    return [*where, *argv]


def feed_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


def put(server: BeanstalkdServer, tube: str, *bodies: bytes, **options: Any) -> list[int]:
    """Put jobs with the library (not the tool under test); return their ids."""
    with make_client(server) as client:
        return [client.put(body, tube=tube, **options).run() for body in bodies]


def bury(server: BeanstalkdServer, tube: str, *bodies: bytes) -> list[int]:
    """Put jobs and bury them, with the library; return their ids."""
    ids = put(server, tube, *bodies)
    with make_client(server) as client:
        for job_id in ids:
            client.reserve_job(job_id).run().bury().run()
    return ids


def one_line_error(result: Result) -> str:
    """The single line on stderr, checked to be one line with the tool's prefix."""
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("rxbeanstalk: "), result.err
    return result.err.rstrip("\n")


@pytest.fixture
def refused_address() -> Iterator[str]:
    """A 127.0.0.1 port that refuses connections: bound, but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def silent_address() -> Iterator[str]:
    """A 127.0.0.1 port that accepts connections (in its backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def tube_table(output: str) -> dict[str, list[str]]:
    """The rows of a ``top`` frame's table, by tube name."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("TUBE "))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        name, *cells = line.split()
        rows[name] = cells
    return rows


# -------------------------------------------------------------------- usage and parsing


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys)
    assert result.code == 2
    assert "required: COMMAND" in one_line_error(result)


def test_help_lists_the_commands_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "--help")
    assert result.code == 0
    for word in ("stats", "tubes", "put", "peek", "kick", "delete", "pause", "top", "drain"):
        assert word in result.out
    assert "exit codes" in result.out and "130" in result.out and ENV_VAR in result.out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "--version")
    assert (result.code, result.out) == (0, "rxbeanstalk 0.1.0\n")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["put", "t", "x", "--pri", "-1"], "0..4294967295, got -1"),
        (["put", "t", "x", "--ttr", str(2**32)], "0..4294967295"),
        (["put", "t", "x", "--delay", "soon"], "whole number, got 'soon'"),
        (["put", "bad name", "x"], "tube name may only use"),
        (["put", "t" * 201, "x"], "1 to 200 bytes"),
        (["delete", "0"], "a job id must be in 1.."),
        (["delete", "abc"], "whole number"),
        (["peek", "t", "sideways"], "invalid choice: 'sideways'"),
        (["kick", "t", "-1"], "0..4294967295"),
        (["pause", "t"], "required: SECONDS"),
        (["top", "--interval", "0"], "positive number of seconds"),
        (["top", "--iterations", "0"], "the count must be at least 1, got 0"),
        (["drain", "t", "--idle", "nan"], "positive number of seconds"),
        (["--timeout", "-1", "tubes"], "positive number of seconds"),
        (["tubes", "extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_arguments_are_usage_errors_and_send_nothing(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    before = counters(beanstalkd)
    result = cli(capsys, *on(beanstalkd, *argv))
    assert result.code == 2
    assert says in one_line_error(result)
    assert activity(before, counters(beanstalkd)) == {}


def test_global_options_go_before_or_after_the_command(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "jobs", b"x")
    before = cli(capsys, "--json", "--server", beanstalkd.address, "tubes")
    after = cli(capsys, "tubes", "--server", beanstalkd.address, "--json")
    assert before.code == after.code == 0
    assert json.loads(before.out) == json.loads(after.out) == ["default", "jobs"]


def test_a_global_option_before_the_command_survives_the_command(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str], refused_address: str
) -> None:
    # The command's own (unset) --server must not reset the one given before it.
    result = cli(capsys, "--server", beanstalkd.address, "tubes")
    assert (result.code, result.out) == (0, "default\n")
    result = cli(capsys, "--server", refused_address, "tubes", "--server", beanstalkd.address)
    assert result.code == 0  # the later one wins, as argparse does for repeated options


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("10.0.0.1:11301", Target("10.0.0.1", 11301)),
        ("queue.example", Target("queue.example", 11300)),
        (":11302", Target("127.0.0.1", 11302)),
        ("[::1]:11303", Target("::1", 11303)),
        ("[::1]", Target("::1", 11300)),
        ("::1", Target("::1", 11300)),
        ("unix:/run/beanstalkd.sock", Target(unix_path="/run/beanstalkd.sock")),
    ],
)
def test_server_addresses(text: str, target: Target) -> None:
    assert parse_server(text) == target


@pytest.mark.parametrize(
    "text", ["host:port", "host:0", "host:65536", "host:+1", "[::1", "[::1]x", "unix:"]
)
def test_bad_server_addresses(text: str) -> None:
    with pytest.raises(CliError) as caught:
        parse_server(text)
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith(f"bad --server {text!r}: ")


def test_target_text_brackets_ipv6() -> None:
    assert str(Target("::1", 11300)) == "[::1]:11300"
    assert str(Target(unix_path="/tmp/b.sock")) == "/tmp/b.sock"


def test_server_choice_order() -> None:
    env = {ENV_VAR: "env.example:1"}
    assert resolve_target(None, None, {}) == Target("127.0.0.1", 11300)
    assert resolve_target(None, None, env) == Target("env.example", 1)
    assert resolve_target("cli.example:2", None, env) == Target("cli.example", 2)
    assert resolve_target(None, "/s.sock", env) == Target(unix_path="/s.sock")
    with pytest.raises(CliError, match="exclude each other"):
        resolve_target("a:1", "/s.sock", env)
    with pytest.raises(CliError, match=r"bad \$BEANSTALKD_SERVER 'x:y'"):
        resolve_target(None, None, {ENV_VAR: "x:y"})


def test_server_and_unix_together_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "--server", "127.0.0.1:1", "--unix", "/x.sock", "tubes")
    assert result.code == 2
    assert one_line_error(result) == "rxbeanstalk: --server and --unix exclude each other"


def test_bad_server_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, "--server", "localhost:http", "tubes")
    assert result.code == 2
    assert one_line_error(result) == (
        "rxbeanstalk: bad --server 'localhost:http': the port must be a number from 1 to 65535"
    )


# ----------------------------------------------------------------- reaching the server


def test_connection_refused(capsys: pytest.CaptureFixture[str], refused_address: str) -> None:
    result = cli(capsys, "--server", refused_address, "stats")
    assert result.code == 3
    assert result.out == ""
    assert one_line_error(result) == (
        f"rxbeanstalk: cannot connect to {refused_address}: connection refused"
    )


def test_missing_unix_socket(capsys: pytest.CaptureFixture[str], tmp_path: Any) -> None:
    path = str(tmp_path / "nobody.sock")
    result = cli(capsys, "--unix", path, "tubes")
    assert result.code == 3
    assert one_line_error(result) == (
        f"rxbeanstalk: cannot connect to {path}: no such file or directory"
    )


def test_a_silent_server_times_out(capsys: pytest.CaptureFixture[str], silent_address: str) -> None:
    started = time.monotonic()
    result = cli(capsys, "--server", silent_address, "--timeout", "0.2", "stats")
    assert result.code == 3
    assert one_line_error(result) == f"rxbeanstalk: no reply from {silent_address} within 0.2 s"
    assert time.monotonic() - started < 3  # the 0.2 s bound, not the 5 s default


def test_server_from_the_environment(
    beanstalkd: BeanstalkdServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    refused_address: str,
) -> None:
    monkeypatch.setenv(ENV_VAR, beanstalkd.address)
    result = cli(capsys, "--json", "stats")
    assert result.code == 0
    assert json.loads(result.out)["pid"] == beanstalkd.pid
    # --server wins over the environment.
    result = cli(capsys, "--server", refused_address, "stats")
    assert result.code == 3


def test_unix_socket_server(
    beanstalkd_unix: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, "--unix", beanstalkd_unix.unix_path, "put", "sock", "hi")
    assert (result.code, result.out) == (0, "1\n")
    assert beanstalkd_unix.stats_job(1)["tube"] == "sock"


def test_unix_socket_from_the_environment(
    beanstalkd_unix: BeanstalkdServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_VAR, f"unix:{beanstalkd_unix.unix_path}")
    result = cli(capsys, "tubes")
    assert (result.code, result.out) == (0, "default\n")


# ------------------------------------------------------------------------------- stats


def test_stats_is_a_grouped_table(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "a", b"1", b"2")
    result = cli(capsys, *on(beanstalkd, "stats"))
    assert result.code == 0
    lines = result.out.splitlines()
    assert [line for line in lines if line and not line.startswith(" ")] == [
        "jobs",
        "connections",
        "commands",
        "binlog",
        "server",
    ]
    values = dict(line.split(None, 1) for line in lines if line.startswith("  "))
    assert values["current-jobs-ready"] == "2"
    assert values["cmd-put"] == "2"
    assert values["pid"] == str(beanstalkd.pid)
    assert values["draining"] == "false"
    # Within a group of numbers, the values end in the same column.
    jobs = lines[1 : lines.index("")]
    assert len({len(line) for line in jobs}) == 1


def test_stats_json(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "a", b"1")
    result = cli(capsys, *on(beanstalkd, "--json", "stats"))
    assert result.code == 0
    stats = json.loads(result.out)
    raw = beanstalkd.stats()
    assert stats["pid"] == int(raw["pid"])
    assert stats["current_jobs_ready"] == 1
    assert stats["version"] == raw["version"]
    assert stats["draining"] is False
    assert stats["extra"] == {}
    assert set(stats) == {field.name for field in dataclasses.fields(ServerStats)}


def test_stats_of_a_tube(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "a", b"1", b"2")
    put(beanstalkd, "a", b"3", delay=100)
    result = cli(capsys, *on(beanstalkd, "stats", "a"))
    assert result.code == 0
    values = dict(line.split(None, 1) for line in result.out.splitlines())
    assert values["name"] == "a"
    assert values["current-jobs-ready"] == "2"
    assert values["current-jobs-delayed"] == "1"
    assert values["total-jobs"] == "3"

    result = cli(capsys, *on(beanstalkd, "stats", "a", "--json"))
    stats = json.loads(result.out)
    assert set(stats) == {field.name for field in dataclasses.fields(TubeStats)}
    assert (stats["name"], stats["current_jobs_ready"]) == ("a", 2)


def test_stats_of_a_tube_named_like_a_number(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "123", b"x")
    result = cli(capsys, *on(beanstalkd, "--json", "stats", "123"))
    assert json.loads(result.out)["name"] == "123"


def test_stats_of_a_missing_tube(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, *on(beanstalkd, "stats", "nope"))
    assert result.code == 1
    assert result.out == ""
    assert one_line_error(result) == "rxbeanstalk: tube 'nope' not found"


# ------------------------------------------------------------------------------- tubes


def test_tubes(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "zeta", b"x")
    put(beanstalkd, "alpha", b"x")
    result = cli(capsys, *on(beanstalkd, "tubes"))
    assert (result.code, result.out) == (0, "alpha\ndefault\nzeta\n")
    result = cli(capsys, *on(beanstalkd, "tubes", "--json"))
    assert json.loads(result.out) == ["alpha", "default", "zeta"]


# --------------------------------------------------------------------------------- put


def test_put_a_body(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(
        capsys,
        *on(beanstalkd, "put", "emails", "hello", "--pri", "10", "--delay", "30", "--ttr", "5"),
    )
    assert (result.code, result.out, result.err) == (0, "1\n", "")
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 5\r\nhello\r\n"
    job = beanstalkd.stats_job(1)
    assert (job["tube"], job["pri"], job["delay"], job["ttr"], job["state"]) == (
        "emails",
        "10",
        "30",
        "5",
        "delayed",
    )


def test_put_defaults(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, *on(beanstalkd, "put", "t", "x")).code == 0
    job = beanstalkd.stats_job(1)
    assert (job["pri"], job["delay"], job["ttr"], job["state"]) == (
        str(2**31),
        "0",
        "60",
        "ready",
    )


def test_put_reads_stdin_verbatim(
    beanstalkd: BeanstalkdServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed_stdin(monkeypatch, b"line one\nline two\n\xff\x00")
    result = cli(capsys, *on(beanstalkd, "put", "t", "-"))
    assert (result.code, result.out) == (0, "1\n")
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 20\r\nline one\nline two\n\xff\x00\r\n"


def test_put_without_a_body_reads_stdin(
    beanstalkd: BeanstalkdServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed_stdin(monkeypatch, b"from stdin")
    assert cli(capsys, *on(beanstalkd, "put", "t")).out == "1\n"
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 10\r\nfrom stdin\r\n"


def test_put_lines(
    beanstalkd: BeanstalkdServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed_stdin(monkeypatch, b"first\r\nsecond\n\n  \nlast")
    result = cli(capsys, *on(beanstalkd, "put", "t", "-", "--lines", "--pri", "7"))
    assert (result.code, result.out) == (0, "1\n2\n3\n4\n")
    assert [beanstalkd.query(b"peek %d\r\n" % i).split(b"\r\n")[1] for i in range(1, 5)] == [
        b"first",
        b"second",
        b"  ",  # only empty lines are skipped
        b"last",
    ]
    assert {beanstalkd.stats_job(i)["pri"] for i in range(1, 5)} == {"7"}
    assert stat(beanstalkd, "current-jobs-ready", "t") == 4


def test_put_lines_from_the_argument(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, *on(beanstalkd, "put", "t", "a\nb", "--lines", "--json"))
    assert result.code == 0
    assert json.loads(result.out) == {"tube": "t", "ids": [1, 2]}
    assert stat(beanstalkd, "total-jobs", "t") == 2


def test_put_json(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "other", b"x")
    result = cli(capsys, *on(beanstalkd, "--json", "put", "t", "x"))
    assert json.loads(result.out) == {"tube": "t", "ids": [2]}


def test_put_keeps_the_exact_bytes_of_the_argument(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # On POSIX a non-UTF-8 argument reaches Python as surrogate escapes.
    assert cli(capsys, *on(beanstalkd, "put", "t", os.fsdecode(b"caf\xe9"))).code == 0
    assert beanstalkd.query(b"peek 1\r\n") == b"FOUND 1 4\r\ncaf\xe9\r\n"


def test_put_too_big(
    beanstalkd_factory: BeanstalkdFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = beanstalkd_factory(max_job_size=10)
    result = cli(capsys, *on(server, "put", "t", "x" * 11))
    assert result.code == 1
    assert one_line_error(result) == (
        f"rxbeanstalk: the job is larger than the max-job-size of {server.address}"
    )
    assert stat(server, "total-jobs") == 0


def test_put_lines_reports_the_jobs_put_before_a_failure(
    beanstalkd_factory: BeanstalkdFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server = beanstalkd_factory(max_job_size=10)
    result = cli(capsys, *on(server, "put", "t", "ok\n" + "x" * 11, "--lines"))
    assert result.code == 1
    assert result.out == "1\n"  # job 1 exists: its id is printed
    assert "max-job-size" in one_line_error(result)
    assert job_state(server, 1) == "ready"


def test_put_into_a_draining_server(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    beanstalkd.drain()
    wait_until(lambda: beanstalkd.stats()["draining"] == "true", "the server drains")
    result = cli(capsys, *on(beanstalkd, "put", "t", "x"))
    assert result.code == 1
    assert one_line_error(result) == (
        f"rxbeanstalk: {beanstalkd.address} is draining: it accepts no new jobs"
    )


# -------------------------------------------------------------------------------- peek


@pytest.mark.parametrize("state", ["ready", "delayed", "buried"])
def test_peek_each_state(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str], state: str
) -> None:
    # One job in each state, in another tube as well, so that only the right one fits.
    put(beanstalkd, "elsewhere", b"wrong tube")
    (ready,) = put(beanstalkd, "t", b"ready body", priority=3)
    (delayed,) = put(beanstalkd, "t", b"delayed body", delay=100)
    (buried,) = bury(beanstalkd, "t", b"buried body")
    expected = {"ready": ready, "delayed": delayed, "buried": buried}[state]
    result = cli(capsys, *on(beanstalkd, "peek", "t", state))
    assert result.code == 0
    table, _, body = result.out.partition("\n\n")
    values = dict(line.split(None, 1) for line in table.splitlines())
    assert values["id"] == str(expected)
    assert values["tube"] == "t"
    assert values["state"] == state
    assert values["body"] == f"{len(state) + 5} bytes"
    assert body == f"{state} body\n"
    # Peeking changes nothing.
    assert job_state(beanstalkd, expected) == state


def test_peek_defaults_to_ready(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", b"x")
    assert cli(capsys, *on(beanstalkd, "peek", "t")).out.startswith("id ")


def test_peek_json(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "t", b"text", priority=5)
    put(beanstalkd, "bin", b"\xff\xfe\x00")
    result = cli(capsys, *on(beanstalkd, "--json", "peek", "t"))
    peeked = json.loads(result.out)
    assert (peeked["id"], peeked["body"]) == (1, "text")
    assert peeked["stats"]["state"] == JobState.READY.value
    assert peeked["stats"]["pri"] == 5
    result = cli(capsys, *on(beanstalkd, "--json", "peek", "bin"))
    peeked = json.loads(result.out)
    assert "body" not in peeked
    assert base64.b64decode(peeked["body_base64"]) == b"\xff\xfe\x00"


def test_peek_binary_body_for_people(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", b"\xff\xfe")
    result = cli(capsys, *on(beanstalkd, "peek", "t"))
    assert result.code == 0
    assert result.out.endswith("\n\n(not UTF-8 text: --json shows the body in base64)\n")


def test_peek_nothing(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "t", b"ready")
    result = cli(capsys, *on(beanstalkd, "peek", "t", "buried"))
    assert (result.code, result.out) == (1, "")
    assert one_line_error(result) == "rxbeanstalk: no buried job in tube 't'"


# -------------------------------------------------------------------------------- kick


def test_kick_buried_jobs(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    bury(beanstalkd, "t", b"1", b"2", b"3")
    bury(beanstalkd, "other", b"4")
    result = cli(capsys, *on(beanstalkd, "kick", "t", "2"))
    assert (result.code, result.out) == (0, "kicked 2 jobs in tube 't'\n")
    assert stat(beanstalkd, "current-jobs-buried", "t") == 1
    assert stat(beanstalkd, "current-jobs-ready", "t") == 2
    assert stat(beanstalkd, "current-jobs-buried", "other") == 1


def test_kick_delayed_jobs_when_none_is_buried(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", b"1", delay=100)
    result = cli(capsys, *on(beanstalkd, "--json", "kick", "t", "10"))
    assert json.loads(result.out) == {"tube": "t", "kicked": 1}
    assert stat(beanstalkd, "current-jobs-ready", "t") == 1


def test_kick_nothing(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, *on(beanstalkd, "kick", "t", "5"))
    assert (result.code, result.out) == (0, "kicked 0 jobs in tube 't'\n")


# ------------------------------------------------------------------------------ delete


def test_delete(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = put(beanstalkd, "t", b"1", b"2")
    result = cli(capsys, *on(beanstalkd, "delete", str(first)))
    assert (result.code, result.out, result.err) == (0, f"deleted job {first}\n", "")
    assert job_state(beanstalkd, first) is None
    assert job_state(beanstalkd, second) == "ready"
    result = cli(capsys, *on(beanstalkd, "delete", str(second), "--json"))
    assert json.loads(result.out) == {"deleted": second}
    assert job_state(beanstalkd, second) is None


def test_delete_a_buried_job(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    (job_id,) = bury(beanstalkd, "t", b"x")
    assert cli(capsys, *on(beanstalkd, "delete", str(job_id))).code == 0
    assert job_state(beanstalkd, job_id) is None


def test_delete_not_found(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, *on(beanstalkd, "delete", "42"))
    assert (result.code, result.out, result.err) == (1, "", "rxbeanstalk: job 42 not found\n")


# ------------------------------------------------------------------------------- pause


def test_pause(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "t", b"x")
    result = cli(capsys, *on(beanstalkd, "pause", "t", "60"))
    assert (result.code, result.out) == (0, "paused tube 't' for 60 s\n")
    stats = beanstalkd.stats("t")
    assert stats["pause"] == "60"
    assert int(stats["pause-time-left"]) > 0
    result = cli(capsys, *on(beanstalkd, "--json", "pause", "t", "100"))
    assert json.loads(result.out) == {"tube": "t", "paused": 100}
    assert beanstalkd.stats("t")["pause"] == "100"


def test_pause_a_missing_tube(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, *on(beanstalkd, "pause", "nope", "10"))
    assert result.code == 1
    assert one_line_error(result) == "rxbeanstalk: tube 'nope' not found"


# --------------------------------------------------------------------------------- top


def test_top_once(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "emails", b"1", b"2", b"3")
    put(beanstalkd, "emails", b"later", delay=100)
    bury(beanstalkd, "emails", b"bad")
    put(beanstalkd, "sms", b"1")
    result = cli(capsys, *on(beanstalkd, "top", "--once"))
    assert result.code == 0
    assert "\x1b" not in result.out  # plain text, no screen control
    lines = result.out.splitlines()
    assert lines[0].startswith(f"rxbeanstalk top  {beanstalkd.address}  beanstalkd ")
    assert lines[1].startswith("jobs: 4 ready, 0 reserved, 1 delayed, 1 buried; 6 put (-/s)")
    assert tube_table(result.out) == {
        #           READY RESERVED DELAYED BURIED TOTAL PUT/S DEL/S WAITING PAUSED
        "default": ["0", "0", "0", "0", "0", "-", "-", "0", "-"],
        "emails": ["3", "0", "1", "1", "5", "-", "-", "0", "-"],
        "sms": ["1", "0", "0", "0", "1", "-", "-", "0", "-"],
    }


def test_top_shows_reserved_waiting_and_paused(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", b"1", b"2")
    with socket.create_connection((beanstalkd.host, beanstalkd.port)) as worker:
        worker.sendall(b"watch t\r\nreserve\r\n")
        wait_until(lambda: stat(beanstalkd, "current-jobs-reserved", "t") == 1, "a reserve")
        with socket.create_connection((beanstalkd.host, beanstalkd.port)) as waiter:
            waiter.sendall(b"watch other\r\nreserve\r\n")
            wait_until(lambda: stat(beanstalkd, "current-waiting", "other") == 1, "a waiter")
            beanstalkd.query(b"pause-tube t 100\r\n")
            result = cli(capsys, *on(beanstalkd, "top", "--once"))
    rows = tube_table(result.out)
    assert rows["t"][:5] == ["1", "1", "0", "0", "2"]
    assert rows["t"][-1].endswith("s")  # seconds of pause left
    assert rows["other"][-2:] == ["1", "-"]  # waiting, not paused


def test_top_iterations_without_a_terminal(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", b"x")
    result = cli(capsys, *on(beanstalkd, "top", "--iterations", "3", "--interval", "0.05"))
    assert result.code == 0
    frames = result.out.split("\n\nrxbeanstalk top ")
    assert len(frames) == 3
    # From the second frame on the rates are known: nothing happened, so 0.0.
    assert tube_table(frames[0])["t"][5:7] == ["-", "-"]
    assert tube_table(frames[2])["t"][5:7] == ["0.0", "0.0"]


def test_top_json_lines(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "t", b"x", b"y")
    result = cli(
        capsys, *on(beanstalkd, "--json", "top", "--iterations", "2", "--interval", "0.05")
    )
    assert result.code == 0
    first, second = (json.loads(line) for line in result.out.splitlines())
    assert first["server"] == beanstalkd.address
    assert first["jobs"]["ready"] == 2
    assert first["jobs"]["put_rate"] is None
    tube = next(row for row in first["tubes"] if row["name"] == "t")
    assert tube == {
        "name": "t",
        "ready": 2,
        "reserved": 0,
        "delayed": 0,
        "buried": 0,
        "total_jobs": 2,
        "put_rate": None,
        "delete_rate": None,
        "waiting": 0,
        "pause_time_left": 0,
    }
    assert second["jobs"]["put_rate"] == 0.0
    assert next(row for row in second["tubes"] if row["name"] == "t")["put_rate"] == 0.0


def test_top_json_once(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(capsys, *on(beanstalkd, "top", "--once", "--json"))
    frame = json.loads(result.out)
    assert [row["name"] for row in frame["tubes"]] == ["default"]


def test_top_connection_refused(capsys: pytest.CaptureFixture[str], refused_address: str) -> None:
    result = cli(capsys, "--server", refused_address, "top", "--once")
    assert result.code == 3
    assert "connection refused" in one_line_error(result)


def _tube(name: str, **counts: Any) -> TubeStats:
    return TubeStats(name=name, **counts)


def _snapshot(at: float, *tubes: TubeStats, **server: Any) -> Snapshot:
    return Snapshot(at, 1_700_000_000.0, ServerStats(pid=1, version="1.12", **server), tubes)


def test_top_rates_come_from_two_snapshots() -> None:
    before = _snapshot(10.0, _tube("a", total_jobs=100, cmd_delete=50), _tube("b", total_jobs=9))
    after = _snapshot(
        12.0,
        _tube("a", total_jobs=120, cmd_delete=90),
        _tube("b", total_jobs=2),  # deleted and made again: no rate
        _tube("c", total_jobs=5),  # new: no rate yet
    )
    rates = {row.name: (row.put_rate, row.delete_rate) for row in tube_rows(after, before)}
    assert rates == {"a": (10.0, 20.0), "b": (None, 0.0), "c": (None, None)}
    assert {row.put_rate for row in tube_rows(after, None)} == {None}


def test_top_fits_the_tubes_into_the_height() -> None:
    snapshot = _snapshot(1.0, *(_tube(f"t{i:02}") for i in range(30)))
    lines = render(snapshot, None, "x:1", height=12, footer="q: quit")
    assert len(lines) == 12
    # 4 summary lines, the table's header, 4 tubes, the rest summed up, the footer.
    assert lines[4].startswith("TUBE ")
    assert [line.split()[0] for line in lines[5:-3]] == ["t00", "t01", "t02", "t03"]
    assert lines[-3] == "... and 26 more tubes (make the window taller)"
    assert lines[-2:] == ["", "q: quit"]


def test_top_marks_a_draining_server_and_a_status_line() -> None:
    lines = render(_snapshot(1.0, draining=True), None, "x:1", status="! lost")
    assert lines[2].endswith("; DRAINING: no puts")
    assert lines[3] == "! lost"


# ---------------------------------------------------------------------- top on a terminal


class Terminal:
    """A pseudo-terminal running ``python -m rxbeanstalk ARGS`` as its only program."""

    def __init__(self, *argv: str) -> None:
        self.master, self.slave = pty.openpty()
        # A fixed size, so that the frame does not depend on the machine's defaults.
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
        self.original = termios.tcgetattr(self.slave)
        self.output = b""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rxbeanstalk", *argv],
            stdin=self.slave,
            stdout=self.slave,
            stderr=subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", ENV_VAR)},
        )

    def read(self, until: bytes, timeout: float = 10.0) -> None:
        """Collect output until ``until`` appears in it; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while until not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                self._drain()
                if until in self.output:
                    return
                pytest.fail(f"no {until!r} on the terminal; got {self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], min(remaining, 0.1))
            if ready:
                self._read_once()

    def _read_once(self) -> None:
        with contextlib.suppress(OSError):  # EIO once nobody has the terminal open
            self.output += os.read(self.master, 65536)

    def _drain(self) -> None:
        while select.select([self.master], [], [], 0)[0]:
            before = len(self.output)
            self._read_once()
            if len(self.output) == before:
                return

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def lflag(self) -> int:
        return int(termios.tcgetattr(self.slave)[3])

    def wait(self, timeout: float = 10.0) -> tuple[int, str]:
        """Wait for the program to exit; its exit code and stderr."""
        _, err = self.process.communicate(timeout=timeout)
        self._drain()
        return self.process.returncode, err.decode()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for term in made:
        term.close()


def start_top(made: list[Terminal], server: BeanstalkdServer, *argv: str) -> Terminal:
    term = Terminal("--server", server.address, "top", "--interval", "0.1", *argv)
    made.append(term)
    term.read(b"refreshing every")  # the footer: the first full-screen frame is drawn
    wait_until(lambda: not term.lflag() & termios.ICANON, "cbreak mode")
    return term


def assert_restored(term: Terminal) -> None:
    assert termios.tcgetattr(term.slave) == term.original
    # The screen switch back comes after the last frame.
    tail = term.output.rsplit(b"refreshing every", 1)[1]
    assert b"\x1b[?25h" in tail and b"\x1b[?1049l" in tail


def test_top_full_screen_quits_with_q(
    beanstalkd: BeanstalkdServer, terminal: list[Terminal]
) -> None:
    put(beanstalkd, "emails", b"x")
    term = start_top(terminal, beanstalkd)
    assert term.output.startswith(b"\x1b[?1049h\x1b[?25l")  # alternate screen, no cursor
    assert b"emails" in term.output
    assert not term.lflag() & termios.ECHO
    term.type(b"q")
    assert term.wait() == (0, "")
    assert_restored(term)


def test_top_full_screen_follows_the_server(
    beanstalkd: BeanstalkdServer, terminal: list[Terminal]
) -> None:
    term = start_top(terminal, beanstalkd)
    put(beanstalkd, "arrived-later", b"x")
    term.read(b"arrived-later")
    term.type(b"q")
    assert term.wait()[0] == 0


def test_top_full_screen_ctrl_c(beanstalkd: BeanstalkdServer, terminal: list[Terminal]) -> None:
    term = start_top(terminal, beanstalkd)
    term.process.send_signal(signal.SIGINT)
    assert term.wait() == (130, "rxbeanstalk: interrupted\n")
    assert_restored(term)


def test_top_full_screen_sigterm(beanstalkd: BeanstalkdServer, terminal: list[Terminal]) -> None:
    term = start_top(terminal, beanstalkd)
    term.process.send_signal(signal.SIGTERM)
    assert term.wait() == (0, "")
    assert_restored(term)


def test_top_full_screen_iterations(beanstalkd: BeanstalkdServer, terminal: list[Terminal]) -> None:
    term = start_top(terminal, beanstalkd, "--iterations", "3")
    assert term.wait() == (0, "")
    assert term.output.count(b"refreshing every") == 3
    assert_restored(term)


def test_top_full_screen_survives_a_server_restart(
    beanstalkd: BeanstalkdServer, terminal: list[Terminal]
) -> None:
    term = start_top(terminal, beanstalkd)
    beanstalkd.stop()
    term.read(b"retrying every 0.1 s")
    beanstalkd.restart()
    put(beanstalkd, "after-restart", b"x")
    term.read(b"after-restart")
    term.type(b"q")
    assert term.wait() == (0, "")
    assert_restored(term)


# ------------------------------------------------------------------------------- drain


def test_drain_deletes_ready_jobs(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", *(b"job %d" % i for i in range(25)))
    put(beanstalkd, "t", b"later", delay=100)
    put(beanstalkd, "other", b"stays")
    result = cli(capsys, *on(beanstalkd, "drain", "t", "--idle", "0.2"))
    assert result.code == 0
    assert result.out.startswith("deleted 25 jobs from tube 't' in ")
    assert stat(beanstalkd, "cmd-delete", "t") == 25
    assert stat(beanstalkd, "current-jobs-ready", "t") == 0
    assert stat(beanstalkd, "current-jobs-delayed", "t") == 1  # not ready: left alone
    assert stat(beanstalkd, "current-jobs-ready", "other") == 1
    assert stat(beanstalkd, "current-jobs-reserved") == 0
    # Not a terminal: progress lines, the last one complete.
    assert result.err.splitlines()[-1].startswith(f"drain t [{'#' * 30}] 25/25 100%")


def test_drain_bury(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    ids = put(beanstalkd, "t", b"1", b"2", b"3", priority=42)
    result = cli(capsys, *on(beanstalkd, "--json", "drain", "t", "--bury", "--idle", "0.2", "-q"))
    assert result.code == 0
    report = json.loads(result.out)
    assert (report["tube"], report["buried"]) == ("t", 3)
    assert result.err == ""  # --quiet
    assert stat(beanstalkd, "current-jobs-buried", "t") == 3
    assert {beanstalkd.stats_job(i)["pri"] for i in ids} == {"42"}  # kept their priority


def test_drain_limit(beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]) -> None:
    put(beanstalkd, "t", *(b"%d" % i for i in range(10)))
    result = cli(capsys, *on(beanstalkd, "--json", "drain", "t", "--limit", "4", "-q"))
    assert json.loads(result.out)["deleted"] == 4
    assert stat(beanstalkd, "cmd-delete", "t") == 4
    assert stat(beanstalkd, "current-jobs-ready", "t") == 6
    assert stat(beanstalkd, "current-jobs-reserved", "t") == 0


def test_drain_an_empty_tube(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, *on(beanstalkd, "drain", "nothing-here", "--idle", "0.1"))
    assert result.code == 0
    assert result.out.startswith("deleted 0 jobs from tube 'nothing-here' in ")


def test_drain_a_paused_tube_says_why_jobs_were_left(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", b"1", b"2")
    assert beanstalkd.query(b"pause-tube t 100\r\n") == b"PAUSED\r\n"
    result = cli(capsys, *on(beanstalkd, "drain", "t", "--idle", "0.2", "-q"))
    assert result.code == 0
    assert result.out.startswith("deleted 0 jobs from tube 't' in ")
    note = one_line_error(result)
    assert note.startswith("rxbeanstalk: note: tube 't' is paused for ")
    assert note.endswith(" s more; 2 ready jobs left in it")
    assert stat(beanstalkd, "current-jobs-ready", "t") == 2


@pytest.mark.slow
def test_drain_waits_idle_seconds_for_more_jobs(
    beanstalkd: BeanstalkdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    put(beanstalkd, "t", b"now")
    put(beanstalkd, "t", b"in a second", delay=1)
    result = cli(capsys, *on(beanstalkd, "--json", "drain", "t", "--idle", "2", "-q"))
    report = json.loads(result.out)
    assert report["deleted"] == 2
    assert stat(beanstalkd, "cmd-delete") == 2
    # The idle clock starts when the last job is settled (at about 1 s), not again after
    # a pull that was only waiting for a delete to free a credit (that would be 5 s).
    assert 2.5 <= report["seconds"] < 4.5


def test_drain_connection_refused(capsys: pytest.CaptureFixture[str], refused_address: str) -> None:
    result = cli(capsys, "--server", refused_address, "drain", "t", "-q")
    assert result.code == 3
    assert "connection refused" in one_line_error(result)
    assert result.out.startswith("deleted 0 jobs")


def test_drain_interrupted(beanstalkd: BeanstalkdServer) -> None:
    put(beanstalkd, "t", b"1", b"2", b"3")
    process = subprocess.Popen(
        [sys.executable, "-m", "rxbeanstalk", "drain", "t", "--idle", "600", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, ENV_VAR: beanstalkd.address},
    )
    try:
        wait_until(
            lambda: (
                stat(beanstalkd, "cmd-delete") == 3 and stat(beanstalkd, "current-waiting") >= 1
            ),
            "the drain has deleted the jobs and waits for more",
            timeout=10,
        )
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert out.decode().startswith("deleted 3 jobs from tube 't' in ")
    assert err.decode() == "rxbeanstalk: interrupted\n"
    # Only the stats query's own connection is left.
    wait_until(lambda: stat(beanstalkd, "current-connections") == 1, "connections closed")


def test_progress_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    stream = Tty()
    bar = ProgressBar(stream, "drain t", clock=lambda: now[0])
    bar.update(0, 10)
    now[0] = 0.05
    bar.update(1)  # too soon after the last drawing: not drawn
    now[0] = 2.0
    bar.update(5)
    bar.close()
    bar.close()
    assert stream.getvalue().split("\r")[1:] == [
        f"drain t [{' ' * 30}] 0/10   0%  -/s\x1b[K",
        f"drain t [{'#' * 15}{' ' * 15}] 5/10  50%  2/s\x1b[K",
        f"drain t [{'#' * 15}{' ' * 15}] 5/10  50%  2/s\x1b[K\n",
    ]


def test_progress_bar_total_never_below_done() -> None:
    now = [1.0]
    bar = ProgressBar(io.StringIO(), "x", clock=lambda: now[0])
    bar.update(12, 10)
    assert bar.render(2.0).startswith(f"x [{'#' * 30}] 12/12 100%")
    assert ProgressBar(io.StringIO(), "x", clock=lambda: 0.0).render(0.0) == "x 0  -/s"


# --------------------------------------------------------------------------- formatting


def test_key_value_alignment() -> None:
    assert key_value_lines([("a", "1"), ("bbb", "100")]) == ["a      1", "bbb  100"]
    assert key_value_lines([("a", "1"), ("bbb", "text")]) == ["a    1", "bbb  text"]


def test_table_alignment() -> None:
    assert table_lines(("NAME", "N"), [("a", "1"), ("long-name", "22")]) == [
        "NAME        N",
        "a           1",
        "long-name  22",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (61, "1m 01s"), (3600, "1h 00m"), (90061, "1d 01h")],
)
def test_duration(seconds: int, text: str) -> None:
    assert duration(seconds) == text


# ---------------------------------------------------------------- python -m rxbeanstalk


def test_python_dash_m(beanstalkd: BeanstalkdServer) -> None:
    put(beanstalkd, "t", b"x")
    done = subprocess.run(
        [sys.executable, "-m", "rxbeanstalk", "--json", "stats", "t"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, ENV_VAR: beanstalkd.address},
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["current_jobs_ready"] == 1


def test_python_dash_m_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rxbeanstalk", "delete"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "rxbeanstalk: the following arguments are required: ID (see 'rxbeanstalk delete --help')\n"
    )


def test_python_dash_m_closed_stdout(beanstalkd: BeanstalkdServer) -> None:
    # `rxbeanstalk tubes | head -0`: the reader is gone before anything is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "rxbeanstalk", "--server", beanstalkd.address, "tubes"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")

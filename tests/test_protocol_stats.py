"""Parsing of the stats-* and list-tubes* YAML bodies (rxbeanstalk.protocol._stats)."""

from __future__ import annotations

import ast
import dataclasses
import os
import pickle
import socket
from pathlib import Path
from typing import BinaryIO

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from rxbeanstalk.errors import ProtocolError
from rxbeanstalk.protocol import _stats
from rxbeanstalk.protocol._stats import (
    JobState,
    JobStats,
    ServerStats,
    TubeStats,
    parse_job_stats,
    parse_server_stats,
    parse_tube_stats,
    parse_yaml_dict,
    parse_yaml_list,
)
from rxbeanstalk.testing import BeanstalkdServer

# ------------------------------------------------------------------------------ payloads

# The 51 keys in the order beanstalkd prints them (protocol.md 1.6), each with a distinct
# value so that a key landing in the wrong field shows. Byte for byte what 1.12 sends, but
# for the numbers and an ``os`` as Debian's kernel reports it (a YAML comment if unquoted).
STATS_112 = (
    b"---\n"
    b"current-jobs-urgent: 101\n"
    b"current-jobs-ready: 102\n"
    b"current-jobs-reserved: 103\n"
    b"current-jobs-delayed: 104\n"
    b"current-jobs-buried: 105\n"
    b"cmd-put: 106\n"
    b"cmd-peek: 107\n"
    b"cmd-peek-ready: 108\n"
    b"cmd-peek-delayed: 109\n"
    b"cmd-peek-buried: 110\n"
    b"cmd-reserve: 111\n"
    b"cmd-reserve-with-timeout: 112\n"
    b"cmd-delete: 113\n"
    b"cmd-release: 114\n"
    b"cmd-use: 115\n"
    b"cmd-watch: 116\n"
    b"cmd-ignore: 117\n"
    b"cmd-bury: 118\n"
    b"cmd-kick: 119\n"
    b"cmd-touch: 120\n"
    b"cmd-stats: 121\n"
    b"cmd-stats-job: 122\n"
    b"cmd-stats-tube: 123\n"
    b"cmd-list-tubes: 124\n"
    b"cmd-list-tube-used: 125\n"
    b"cmd-list-tubes-watched: 126\n"
    b"cmd-pause-tube: 127\n"
    b"job-timeouts: 128\n"
    b"total-jobs: 129\n"
    b"max-job-size: 65535\n"
    b"current-tubes: 131\n"
    b"current-connections: 132\n"
    b"current-producers: 133\n"
    b"current-workers: 134\n"
    b"current-waiting: 135\n"
    b"total-connections: 136\n"
    b"pid: 4340\n"
    b'version: "1.12"\n'
    b"rusage-utime: 0.004848\n"
    b"rusage-stime: 12.000001\n"
    b"uptime: 141\n"
    b"binlog-oldest-index: 142\n"
    b"binlog-current-index: 143\n"
    b"binlog-records-migrated: 144\n"
    b"binlog-records-written: 145\n"
    b"binlog-max-size: 10485760\n"
    b"draining: false\n"
    b"id: 1234567890123e45\n"
    b"hostname: 123\n"
    b"os: #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n"
    b"platform: x86_64\n"
)

# The same server as 1.13 prints it: hostname, os and platform quoted.
STATS_113 = (
    STATS_112.replace(b'version: "1.12"', b'version: "1.13"')
    .replace(b"hostname: 123\n", b'hostname: "123"\n')
    .replace(b"os: #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n",
             b'os: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"\n')
    .replace(b"platform: x86_64\n", b'platform: "x86_64"\n')
)  # fmt: skip

EXPECTED_112 = ServerStats(
    current_jobs_urgent=101,
    current_jobs_ready=102,
    current_jobs_reserved=103,
    current_jobs_delayed=104,
    current_jobs_buried=105,
    cmd_put=106,
    cmd_peek=107,
    cmd_peek_ready=108,
    cmd_peek_delayed=109,
    cmd_peek_buried=110,
    cmd_reserve=111,
    cmd_reserve_with_timeout=112,
    cmd_delete=113,
    cmd_release=114,
    cmd_use=115,
    cmd_watch=116,
    cmd_ignore=117,
    cmd_bury=118,
    cmd_kick=119,
    cmd_touch=120,
    cmd_stats=121,
    cmd_stats_job=122,
    cmd_stats_tube=123,
    cmd_list_tubes=124,
    cmd_list_tube_used=125,
    cmd_list_tubes_watched=126,
    cmd_pause_tube=127,
    job_timeouts=128,
    total_jobs=129,
    max_job_size=65535,
    current_tubes=131,
    current_connections=132,
    current_producers=133,
    current_workers=134,
    current_waiting=135,
    total_connections=136,
    pid=4340,
    version="1.12",
    rusage_utime=0.004848,
    rusage_stime=12.000001,
    uptime=141,
    binlog_oldest_index=142,
    binlog_current_index=143,
    binlog_records_migrated=144,
    binlog_records_written=145,
    binlog_max_size=10485760,
    draining=False,
    id="1234567890123e45",
    hostname="123",
    os="#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
    platform="x86_64",
)


def wire_keys(body: bytes) -> list[str]:
    return [line.split(b": ")[0].decode() for line in body.splitlines()[1:]]


STATS_KEYS = wire_keys(STATS_112)


def tube_stats(name: bytes, *, quoted: bool, pause_time_left: bytes = b"0") -> bytes:
    shown = b'"' + name + b'"' if quoted else name
    return (
        b"---\n"
        b"name: " + shown + b"\n"
        b"current-jobs-urgent: 1\n"
        b"current-jobs-ready: 2\n"
        b"current-jobs-reserved: 3\n"
        b"current-jobs-delayed: 4\n"
        b"current-jobs-buried: 5\n"
        b"total-jobs: 6\n"
        b"current-using: 7\n"
        b"current-watching: 8\n"
        b"current-waiting: 9\n"
        b"cmd-delete: 10\n"
        b"cmd-pause-tube: 11\n"
        b"pause: 12\n"
        b"pause-time-left: " + pause_time_left + b"\n"
    )


def job_stats(tube: bytes, state: bytes, *, quoted: bool, time_left: bytes = b"0") -> bytes:
    shown = b'"' + tube + b'"' if quoted else tube
    return (
        b"---\n"
        b"id: 42\n"
        b"tube: " + shown + b"\n"
        b"state: " + state + b"\n"
        b"pri: 4294967295\n"
        b"age: 2\n"
        b"delay: 3\n"
        b"ttr: 60\n"
        b"time-left: " + time_left + b"\n"
        b"file: 5\n"
        b"reserves: 6\n"
        b"timeouts: 7\n"
        b"releases: 8\n"
        b"buries: 9\n"
        b"kicks: 10\n"
    )


YAML_LOOKALIKES = ["123", "true", "false", "0.5", "null", "~", "1e3", "0x10", "yes", "Off", "0o7"]


# ------------------------------------------------------------------------------ stats


def test_server_stats_112_unquoted_os_with_hash() -> None:
    assert parse_server_stats(STATS_112) == EXPECTED_112


def test_server_stats_113_quoted() -> None:
    for line in (b'version: "1.13"', b'hostname: "123"', b'os: "#1 SMP', b'platform: "x86_64"'):
        assert b"\n" + line in STATS_113  # the payload really is 1.13's
    assert parse_server_stats(STATS_113) == dataclasses.replace(EXPECTED_112, version="1.13")


def test_plain_yaml_would_get_112_wrong() -> None:
    # Why the line parser exists: YAML reads the 1.12 os as a comment (and retypes under
    # safe_load), so these assertions pin the trap the parser avoids.
    assert yaml.load(STATS_112, Loader=yaml.BaseLoader)["os"] == ""
    assert yaml.safe_load(STATS_112)["hostname"] == 123


@pytest.mark.parametrize("quote", [b"", b'"'])
def test_os_with_colon_space_and_hash(quote: bytes) -> None:
    body = STATS_112.replace(
        b"os: #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n",
        b"os: " + quote + b"#2 SMP: built: 'x' # \"y\" \\z " + quote + b"\n",
    )
    assert parse_server_stats(body).os == "#2 SMP: built: 'x' # \"y\" \\z "


def test_free_text_is_not_unescaped() -> None:
    # beanstalkd writes "%s" without escaping, so a backslash is the original text.
    # (YAML would read the first as a TAB and reject the second.)
    for text in (b"a\\tb", b"a\\tb\\q"):
        body = STATS_113.replace(b'hostname: "123"', b'hostname: "' + text + b'"')
        assert parse_server_stats(body).hostname == text.decode()


def test_fields_mirror_the_wire_keys() -> None:
    def names(cls: type) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    assert len(STATS_KEYS) == 51
    assert names(ServerStats) == [key.replace("-", "_") for key in STATS_KEYS]
    tube_keys = wire_keys(tube_stats(b"x", quoted=False))
    job_keys = wire_keys(job_stats(b"x", b"ready", quoted=False))
    assert names(TubeStats) == [key.replace("-", "_") for key in tube_keys]
    assert names(JobStats) == [key.replace("-", "_") for key in job_keys]
    assert len(tube_keys) == len(job_keys) == 14


def test_types_of_fields() -> None:
    stats = parse_server_stats(STATS_112)
    assert type(stats.rusage_utime) is float
    assert type(stats.draining) is bool
    assert type(stats.cmd_put) is int
    for name in ("version", "id", "hostname", "os", "platform"):
        assert type(getattr(stats, name)) is str


def test_draining_true() -> None:
    body = STATS_112.replace(b"draining: false", b"draining: true")
    assert parse_server_stats(body).draining is True


def test_older_server_missing_keys_get_defaults() -> None:
    # beanstalkd 1.10: version unquoted, no os/platform/draining (added in 1.12).
    dropped = (b"os: ", b"platform: ", b"draining: ", b"version: ")
    lines = [line for line in STATS_112.split(b"\n") if not line.startswith(dropped)]
    body = b"\n".join(lines).replace(b"pid: 4340\n", b"pid: 4340\nversion: 1.10\n")
    stats = parse_server_stats(body)
    assert stats.version == "1.10"  # not the float 1.1
    assert (stats.os, stats.platform, stats.draining) == ("", "", False)
    assert stats.cmd_put == 106


def test_unknown_keys_land_in_extra() -> None:
    body = STATS_113 + b'cmd-reserve-job: 7\nkernel: "a #b: c"\nnote: #bare text: here\n'
    stats = parse_server_stats(body)
    assert stats.extra == {"cmd-reserve-job": "7", "kernel": "a #b: c", "note": "#bare text: here"}
    assert stats == dataclasses.replace(EXPECTED_112, version="1.13")  # extra not compared
    assert hash(stats) == hash(dataclasses.replace(stats, extra={}))
    assert parse_tube_stats(tube_stats(b"t", quoted=True) + b"x: 1\n").extra == {"x": "1"}
    assert parse_job_stats(job_stats(b"t", b"ready", quoted=True) + b"x: 1\n").extra == {"x": "1"}


def test_dataclasses_are_frozen_slotted_and_picklable() -> None:
    stats = parse_server_stats(STATS_112 + b"new-key: 1\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.cmd_put = 1  # type: ignore[misc]
    assert not hasattr(stats, "__dict__")
    assert pickle.loads(pickle.dumps(stats)) == stats
    assert dataclasses.asdict(stats)["extra"] == {"new-key": "1"}


# ------------------------------------------------------------------------------ stats-tube


@pytest.mark.parametrize("quoted", [False, True], ids=["1.12", "1.13"])
@pytest.mark.parametrize("name", [*YAML_LOOKALIKES, "default", "a(b);c$d/e+f_g.h"])
def test_tube_stats_names_stay_strings(name: str, quoted: bool) -> None:
    stats = parse_tube_stats(tube_stats(name.encode(), quoted=quoted))
    assert stats == TubeStats(
        name=name,
        current_jobs_urgent=1,
        current_jobs_ready=2,
        current_jobs_reserved=3,
        current_jobs_delayed=4,
        current_jobs_buried=5,
        total_jobs=6,
        current_using=7,
        current_watching=8,
        current_waiting=9,
        cmd_delete=10,
        cmd_pause_tube=11,
        pause=12,
        pause_time_left=0,
    )
    assert type(stats.name) is str


def test_tube_stats_negative_pause_time_left() -> None:
    body = tube_stats(b"t", quoted=False, pause_time_left=b"-3")
    assert parse_tube_stats(body).pause_time_left == -3


# ------------------------------------------------------------------------------ stats-job


@pytest.mark.parametrize("quoted", [False, True], ids=["1.12", "1.13"])
@pytest.mark.parametrize("state", list(JobState))
def test_job_stats_each_state(state: JobState, quoted: bool) -> None:
    body = job_stats(b"0.5", state.value.encode(), quoted=quoted)
    assert parse_job_stats(body) == JobStats(
        id=42,
        tube="0.5",
        state=state,
        pri=4294967295,
        age=2,
        delay=3,
        ttr=60,
        time_left=0,
        file=5,
        reserves=6,
        timeouts=7,
        releases=8,
        buries=9,
        kicks=10,
    )


@pytest.mark.parametrize("tube", YAML_LOOKALIKES)
def test_job_stats_tube_stays_string(tube: str) -> None:
    assert parse_job_stats(job_stats(tube.encode(), b"ready", quoted=False)).tube == tube


def test_job_stats_negative_time_left() -> None:
    body = job_stats(b"t", b"reserved", quoted=False, time_left=b"-1")
    assert parse_job_stats(body).time_left == -1


# ------------------------------------------------------------------------------ raw dict


def test_parse_yaml_dict_gives_strings() -> None:
    raw = parse_yaml_dict(STATS_113)
    assert list(raw) == STATS_KEYS
    assert raw["version"] == "1.13"
    assert raw["hostname"] == "123"
    assert raw["draining"] == "false"
    assert raw["os"] == "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"
    assert all(type(value) is str for value in raw.values())


def test_parse_yaml_dict_decodes_quoted_scalars_with_base_loader() -> None:
    assert parse_yaml_dict(b"---\na: \"x\\ty\"\nb: 'it''s'\nc: \"1\"\n") == {
        "a": "x\ty",
        "b": "it's",
        "c": "1",
    }


def test_parse_yaml_dict_edge_forms() -> None:
    assert parse_yaml_dict(b"---\n") == {}
    assert parse_yaml_dict(b"") == {}
    assert parse_yaml_dict(b"---\r\nos:\r\nhostname: \r\n\r\n") == {"os": "", "hostname": ""}
    # Bytes that are not UTF-8 (a Latin-1 host name) do not make stats unreadable.
    assert parse_yaml_dict(b"---\nhostname: caf\xe9\n") == {"hostname": "caf\ufffd"}


# ------------------------------------------------------------------------------ lists


def test_parse_yaml_list_items_verbatim() -> None:
    body = b"---\n- default\n- 123\n- true\n- 0.5\n- null\n- ~\n- -x\n- 1e3\n- a(b);c$d\n"
    assert parse_yaml_list(body) == [
        "default",
        "123",
        "true",
        "0.5",
        "null",
        "~",
        "-x",
        "1e3",
        "a(b);c$d",
    ]


def test_parse_yaml_list_empty_and_crlf() -> None:
    assert parse_yaml_list(b"---\n") == []
    assert parse_yaml_list(b"") == []
    assert parse_yaml_list(b"---\r\n- a\r\n") == ["a"]


_TUBE_NAME = st.from_regex(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}", fullmatch=True)


@given(names=st.lists(_TUBE_NAME, max_size=5), quoted=st.booleans())
def test_any_tube_name_round_trips(names: list[str], quoted: bool) -> None:
    body = b"---\n" + b"".join(b"- " + name.encode() + b"\n" for name in names)
    assert parse_yaml_list(body) == names
    for name in names:
        assert parse_tube_stats(tube_stats(name.encode(), quoted=quoted)).name == name
        assert parse_job_stats(job_stats(name.encode(), b"ready", quoted=quoted)).tube == name


@given(value=st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_any_integer_round_trips(value: int) -> None:
    body = tube_stats(b"t", quoted=False, pause_time_left=str(value).encode())
    assert parse_tube_stats(body).pause_time_left == value


# ------------------------------------------------------------------------------ malformed


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        (b"cmd-put: abc", "cmd-put", "abc"),
        (b"cmd-put: 1.5", "cmd-put", "1.5"),
        (b"cmd-put: +1", "cmd-put", "+1"),
        (b"cmd-put: 1_000", "cmd-put", "1_000"),
        (b"cmd-put: ", "cmd-put", ""),
        (b"cmd-put: \xd9\xa3", "cmd-put", "\u0663"),  # ARABIC-INDIC DIGIT THREE: int() takes it
        (b"rusage-utime: nan", "rusage-utime", "nan"),
        (b"rusage-utime: 1e3", "rusage-utime", "1e3"),
        (b"draining: yes", "draining", "yes"),
        (b"draining: True", "draining", "True"),
    ],
)
def test_bad_value_names_key_and_value(line: bytes, key: str, value: str) -> None:
    wire_key = line.split(b":")[0]
    body = b"\n".join(
        line if old.startswith(wire_key + b":") else old for old in STATS_112.split(b"\n")
    )
    with pytest.raises(ProtocolError) as caught:
        parse_server_stats(body)
    assert repr(key) in str(caught.value)
    assert repr(value) in str(caught.value)
    assert caught.value.__cause__ is None  # no ValueError chained: the message says it all


def test_unknown_job_state() -> None:
    with pytest.raises(ProtocolError, match=r"'state' is 'sleeping', expected one of ready"):
        parse_job_stats(job_stats(b"t", b"sleeping", quoted=False))


@pytest.mark.parametrize(
    "body",
    [
        b"---\n- a\n- b\n",  # a list where a mapping belongs
        b"---\nnot yaml at all\n",
        b"---\ncmd-put:1\n",  # no space after the colon
        b"---\n  cmd-put: 1\n",  # indented: nested, not flat
        b"---\n? cmd-put\n: 1\n",
        b"---\ncmd-put: 1\ncmd-put: 2\n",  # a key twice
        b"---\ncmd-put: 1\n---\ncmd-put: 2\n",  # two documents
    ],
)
def test_not_a_flat_mapping(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_yaml_dict(body)


@pytest.mark.parametrize(
    "body", [b"---\na: b\n", b"---\n- a\nb\n", b"---\n-a\n", b"---\n  - a\n", b"[a, b]\n"]
)
def test_not_a_list(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="is not '- item'"):
        parse_yaml_list(body)


def test_missing_required_keys() -> None:
    with pytest.raises(ProtocolError, match="pid"):
        parse_server_stats(b"---\nversion: 1.12\n")
    with pytest.raises(ProtocolError, match="name"):
        parse_tube_stats(b"---\ncurrent-jobs-ready: 1\n")
    with pytest.raises(ProtocolError, match="state"):
        parse_job_stats(b"---\nid: 1\ntube: default\n")
    with pytest.raises(ProtocolError):  # a job-stats body is not tube stats
        parse_tube_stats(job_stats(b"t", b"ready", quoted=True))


def test_sans_io_imports_only() -> None:
    tree = ast.parse(Path(_stats.__file__).read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {"asyncio", "socket", "reactivex", "selectors"} & {
        name.split(".")[0] for name in imported
    }


# ------------------------------------------------------------------------------ real server


def _exchange(sock: socket.socket, reader: BinaryIO, command: bytes) -> bytes:
    """Send one command; return its status line, or the YAML body of an OK reply."""
    sock.sendall(command + b"\r\n")
    line = reader.readline()
    assert line.endswith(b"\r\n"), f"incomplete reply {line!r}"
    if not line.startswith(b"OK "):
        return line[:-2]
    data = reader.read(int(line.split()[1]) + 2)
    assert data.endswith(b"\r\n"), f"incomplete body {data!r}"
    return data[:-2]


def test_real_server_payloads(beanstalkd: BeanstalkdServer) -> None:
    with socket.create_connection((beanstalkd.host, beanstalkd.port), timeout=5) as sock:
        reader = sock.makefile("rb")

        def send(command: bytes) -> bytes:
            return _exchange(sock, reader, command)

        assert send(b"use 123") == b"USING 123"
        assert send(b"watch true") == b"WATCHING 2"
        ready_id = int(send(b"put 5 0 60 2\r\nhi").split()[1])
        delayed_id = int(send(b"put 6 100 60 2\r\nhi").split()[1])
        assert send(b"watch 123") == b"WATCHING 3"
        assert send(b"reserve-job %d" % ready_id).startswith(b"RESERVED")
        reader.read(4)  # the reserved body and its CRLF
        reserved = parse_job_stats(send(b"stats-job %d" % ready_id))
        delayed = parse_job_stats(send(b"stats-job %d" % delayed_id))
        assert send(b"bury %d 7" % ready_id) == b"BURIED"
        buried = parse_job_stats(send(b"stats-job %d" % ready_id))
        assert send(b"kick-job %d" % ready_id) == b"KICKED"
        ready = parse_job_stats(send(b"stats-job %d" % ready_id))
        assert send(b"pause-tube 123 100") == b"PAUSED"
        tube = parse_tube_stats(send(b"stats-tube 123"))
        stats = parse_server_stats(send(b"stats"))
        raw_stats = parse_yaml_dict(send(b"stats"))
        tubes = parse_yaml_list(send(b"list-tubes"))
        watched = parse_yaml_list(send(b"list-tubes-watched"))

    assert (reserved.state, delayed.state, buried.state, ready.state) == (
        JobState.RESERVED,
        JobState.DELAYED,
        JobState.BURIED,
        JobState.READY,
    )
    assert (reserved.id, reserved.tube, reserved.pri, reserved.ttr) == (ready_id, "123", 5, 60)
    assert 0 < reserved.time_left <= 60
    assert 0 < delayed.time_left <= 100 and delayed.delay == 100
    assert (buried.pri, buried.buries, ready.kicks) == (7, 1, 1)

    assert tube.name == "123"
    assert (tube.current_jobs_ready, tube.current_jobs_delayed, tube.current_using) == (1, 1, 1)
    assert tube.pause == 100 and 0 < tube.pause_time_left <= 100

    assert stats.pid == beanstalkd.pid
    assert stats.version == "1.12"  # the Debian package the suite runs against
    assert (stats.cmd_put, stats.cmd_bury, stats.cmd_pause_tube, stats.current_tubes) == (
        2,
        1,
        1,
        3,
    )
    assert stats.os == os.uname().version  # 1.12 prints it bare, '#' and all
    assert stats.platform == os.uname().machine
    assert stats.hostname == os.uname().nodename
    assert len(stats.id) == 16 and int(stats.id, 16) >= 0
    assert stats.draining is False and stats.extra == {}
    # The test server's own naive parser sees the same strings where nothing moved since.
    again = beanstalkd.stats()
    for key in ("pid", "version", "id", "hostname", "os", "platform", "max-job-size"):
        assert raw_stats[key] == again[key]
    assert raw_stats.keys() == again.keys()

    assert tubes == ["default", "123", "true"]
    assert watched == ["default", "true", "123"]

"""The soak runner (``python -m soak``, ``make soak``) in CI size: S1, S2 and S3.

Each run puts a few thousand jobs through a ``FaultProxy`` into a real beanstalkd while a
``reserve_stream(...).pipe(process(...), retry_with_backoff(...))`` consumer drains them
and chaos strikes every few hundred milliseconds; the soak reconciles its seq ledger with
the server's counters read on a connection that bypasses the proxy. The tests assert the
soak's verdict and check the server state again themselves, with ``beanstalkd.stats``.

The first tests feed the ledger made-up deliveries, to show that its checks do catch a
lost job, a corrupt body and a duplicate with no cause: a soak that passes means
something only because those checks can fail.
"""

from __future__ import annotations

import contextlib
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from rxbeanstalk import Client, Job
from rxbeanstalk.errors import ConnectError, ConnectionLostError
from rxbeanstalk.operators import Action, Outcome
from rxbeanstalk.testing import BeanstalkdServer
from rxbeanstalk.testing.pytest_plugin import BeanstalkdFactory
from soak import MIXED, FaultTiming, SoakConfig, SoakResult, soak
from soak.body import BodyError, make_body, read_body
from soak.chaos import family
from soak.ledger import Ledger, PutState, Window
from soak.report import table
from tests.conftest import run

RUN = "c0ffee00"
TUBE = "soak"

# Fault durations for CI: every fault is short, and a long stall still outlasts the
# clients' one-second command timeout.
CI_TIMING = FaultTiming(
    stall_short=0.3,
    stall_long=1.5,
    slow_for=0.5,
    orphan_hold=0.3,
    halfopen_hold=2.0,
    restart_down=0.1,
    margin=0.5,
    trigger_bound=2.0,
)


def ci_config(**options: object) -> SoakConfig:
    defaults: dict[str, object] = {
        "jobs": 3000,
        "command_timeout": 1.0,
        "connect_timeout": 1.0,
        "timing": CI_TIMING,
        "payload": (16, 256),
        "drain_timeout": 20.0,
        "timeout": 60.0,
        "seed": 4,
        "tube": TUBE,
    }
    return SoakConfig(**{**defaults, **options})  # type: ignore[arg-type]


def assert_passed(result: SoakResult) -> None:
    failed = [f"{check.name}: {check.detail}" for check in result.failed]
    assert not failed, f"{table([result])}\n{failed}\n{result.duplicates.samples}"


@contextlib.contextmanager
def watching(server: BeanstalkdServer) -> Iterator[None]:
    """The test's own plain connection, watching the tube.

    The server then keeps the tube and its counters after the soak's connections close.
    """
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(f"watch {TUBE}\r\n".encode())
        assert sock.recv(100).startswith(b"WATCHING")
        yield


def assert_server_drained(server: BeanstalkdServer, tube: str | None = TUBE) -> dict[str, str]:
    stats = server.stats(tube)
    for state in ("ready", "reserved", "delayed", "buried"):
        assert stats[f"current-jobs-{state}"] == "0", stats
    return stats


# ----------------------------------------------------------------------------- the ledger


def delivered(ledger: Ledger, client: Client, seq: int, attempt: int, job_id: int) -> Job:
    job = Job(job_id, make_body(RUN, seq, attempt, b"payload\r\n\x00"), client)
    assert ledger.receive(job) is not None
    return job


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_body_roundtrip_and_corruption_is_caught() -> None:
    """A body names its seq and attempt; any changed, cut or foreign body is refused."""
    body = make_body(RUN, 42, 3, bytes(range(256)))
    assert read_body(body, RUN) == (42, 3)
    with pytest.raises(BodyError):
        read_body(body[:100] + b"X" + body[101:], RUN)
    with pytest.raises(BodyError):
        read_body(body[: len(body) // 2], RUN)
    with pytest.raises(BodyError):
        read_body(body, "another")


def test_ledger_flags_lost_corrupt_and_unexplained_duplicates() -> None:
    """The ledger's checks fail on a lost seq, a corrupt body and a causeless duplicate."""
    clock = Clock()
    ledger = Ledger(4, RUN, clock)
    client = Client()
    for seq in range(4):
        ledger.put_acked(ledger.put_sent(seq, 0), seq + 1)
    # seq 0: delivered, deleted, delivered again: impossible unless the client lies.
    clock.now = 1.0
    job = delivered(ledger, client, 0, 0, 1)
    ledger.outcome(Outcome(job, Action.DELETED, None, "handled; deleted"))
    clock.now = 2.0
    delivered(ledger, client, 0, 0, 1)
    # seq 1: delivered twice with no fault in between.
    clock.now = 3.0
    delivered(ledger, client, 1, 0, 2)
    clock.now = 3.5
    delivered(ledger, client, 1, 0, 2)
    # seq 2: delivered twice around a fault window: a redelivery.
    clock.now = 4.0
    delivered(ledger, client, 2, 0, 3)
    clock.now = 6.0
    delivered(ledger, client, 2, 0, 3)
    # seq 3: never delivered; a corrupt body instead.
    bad = Job(9, make_body(RUN, 3, 0, b"x")[:-1] + b"0", client)
    assert ledger.receive(bad) is None
    assert ledger.is_corrupt(bad)

    dups = ledger.duplicates([Window(0, 5.0, 5.5)])
    assert (dups.total, dups.redelivery, dups.put_retry, dups.unexplained) == (3, 1, 0, 2)
    assert dups.by_fault == Counter({0: 1})
    assert any("after its delete was acknowledged" in s for s in dups.samples)
    assert any("no fault in between" in s for s in dups.samples)
    assert ledger.lost() == [3]
    assert ledger.corrupt == 1
    # Without the window, seq 2's second delivery has no cause either.
    assert ledger.duplicates([]).unexplained == 3


def test_ledger_explains_put_retries_only_from_uncertain_puts() -> None:
    """A second job of a seq is a put-retry duplicate only if its put's outcome was unknown."""
    ledger = Ledger(2, RUN, Clock())
    client = Client()
    # seq 0: attempt 0 lost its reply (it landed), attempt 1 was acknowledged.
    assert ledger.put_failed(ledger.put_sent(0, 0), ConnectionLostError("x")) is (
        PutState.AMBIGUOUS
    )
    ledger.put_acked(ledger.put_sent(0, 1), 2)
    # seq 1: attempt 0 could not even connect, yet a job of it shows up.
    assert ledger.put_failed(ledger.put_sent(1, 0), ConnectError("x")) is PutState.UNSENT
    ledger.put_acked(ledger.put_sent(1, 1), 4)
    for seq, attempt, job_id in ((0, 1, 2), (0, 0, 1), (1, 1, 4), (1, 0, 3)):
        delivered(ledger, client, seq, attempt, job_id)
    dups = ledger.duplicates([])
    assert (dups.put_retry, dups.unexplained) == (1, 1)
    assert ledger.phantoms() == ["seq 1 attempt 0: put unsent"]
    assert ledger.lost() == []


# ----------------------------------------------------------------------------- the soak


@pytest.mark.slow
def test_s1_soak_under_drops(beanstalkd: BeanstalkdServer) -> None:
    """S1: jobs under drop_all(rst) chaos; nothing acked lost, drained, dups explained."""
    config = ci_config(chaos="drop", put_rate=1000.0, period=(0.2, 0.3))
    with watching(beanstalkd):
        result = run(soak(config, beanstalkd), timeout=60)
        stats = assert_server_drained(beanstalkd)
    assert_passed(result)
    assert result.figures["faults_by_kind"].get("drop", 0) >= 5
    assert result.figures["accepted"] > 3 * result.figures["faults"]  # everyone reconnected
    assert int(stats["total-jobs"]) == int(stats["cmd-delete"]) >= config.jobs


@pytest.mark.slow
def test_s2_soak_under_mixed_chaos(beanstalkd: BeanstalkdServer) -> None:
    """S2: mixed chaos, each fault kind at least twice; also zero corrupt deliveries."""
    config = ci_config(chaos="mixed", put_rate=250.0, period=(0.25, 0.35))
    with watching(beanstalkd):
        result = run(soak(config, beanstalkd), timeout=60)
        stats = assert_server_drained(beanstalkd)
    assert_passed(result)
    kinds = result.figures["faults_by_kind"]
    assert {kind: kinds.get(kind, 0) for kind in MIXED if kinds.get(kind, 0) < 2} == {}
    assert result.figures["corrupt"] == 0
    assert all(f.cleared is not None for f in result.faults if family(f.kind) in ("cut", "garbage"))
    assert int(stats["total-jobs"]) == int(stats["cmd-delete"]) >= config.jobs


@pytest.mark.slow
def test_s3_soak_binlog_kill_restart(beanstalkd_factory: BeanstalkdFactory, tmp_path: Path) -> None:
    """S3: beanstalkd -b, kill -9 and restart mid-run plus drops; no acked put lost."""
    server = beanstalkd_factory(binlog_dir=tmp_path / "binlog")
    pid, server_id = server.pid, server.stats()["id"]
    config = ci_config(binlog=True, chaos="drop", put_rate=1000.0, period=(0.3, 0.5))
    result = run(soak(config, server), timeout=60)
    assert_passed(result)
    assert result.figures["restarts"] == 1
    assert result.figures["lost"] == 0
    assert len(result.epochs) == 2
    assert server.pid != pid and server.stats()["id"] != server_id  # really a new process
    assert_server_drained(server, None)  # the whole server: the tube may be gone by now

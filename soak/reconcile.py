"""Reconciliation: the invariants a soak run must hold, from the anchor and the ledger.

From the anchor's ``stats-tube`` (the server's own counters):

- **drained**: ``current-jobs-ready == reserved == delayed == buried == 0`` at the end;
- **conservation**: ``total-jobs == cmd-delete + ready + reserved + delayed + buried``;
- **every server job accounted for**: ``total-jobs == acked seqs + put-retry jobs that
  landed`` (jobs whose put had an unknown outcome, found by their bodies), so also
  ``acked <= total-jobs``.

A binlog run restarts the server, and with it the per-process counters. The anchor
reads them from each process just before its ``kill -9`` (the proxy holds the clients'
bytes meanwhile), and the sums over the processes are checked: jobs replayed from the
binlog are not counted again in the new process's ``total-jobs``.

From the seq ledger, in every run:

- **no acked job lost**: every seq answered ``INSERTED`` was delivered at least once;
- **no corrupt delivery**: every delivered body matched its sha256;
- **duplicates explained**: each is a redelivery after a fault or a put-retry job;
- **no phantom job**: every delivered job came from a put that was acknowledged or had
  an unknown outcome (never from one that could not connect);
- **every seq acknowledged**: no producer gave up.

From the proxy: **no stale settle** (no ``delete``/``release``/``bury``/``touch`` crossed
on a connection that had not reserved that job). And the run itself: **no unhandled
error on the loop** (nothing reached asyncio's exception handler, such as a task
exception never retrieved), the consumer's pipeline never gave up, and nothing timed
out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .chaos import Fault, family
from .ledger import Duplicates, Ledger, PutState, Window

if TYPE_CHECKING:
    from .run import SoakConfig

__all__ = ["Check", "SoakResult", "reconcile"]

_STATES = ("ready", "reserved", "delayed", "buried")


@dataclass(frozen=True)
class Check:
    """One invariant and whether it held."""

    name: str
    ok: bool
    detail: str


@dataclass
class SoakResult:
    """Everything a run measured, and its verdict."""

    config: SoakConfig
    checks: list[Check]
    figures: dict[str, Any]
    faults: list[Fault]
    duplicates: Duplicates
    epochs: list[dict[str, int]]
    errors: list[str]
    samples: dict[str, list[Any]]

    @property
    def passed(self) -> bool:
        """Whether every invariant held."""
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        """The invariants that did not hold."""
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.config.name,
            "passed": self.passed,
            "config": self.config.to_json(),
            "figures": self.figures,
            "checks": [vars(check) for check in self.checks],
            "duplicates": self.duplicates.to_json(),
            "epochs": self.epochs,
            "errors": self.errors,
            "samples": self.samples,
            "faults": [fault.to_json() for fault in self.faults],
        }


def _counters(tube: dict[str, str]) -> dict[str, int]:
    keys = ("total-jobs", "cmd-delete", *(f"current-jobs-{s}" for s in _STATES))
    return {key: int(tube.get(key, "0") or 0) for key in keys}


def reconcile(
    *,
    config: SoakConfig,
    ledger: Ledger,
    faults: Sequence[Fault],
    windows: Sequence[Window],
    tube: dict[str, str],
    server: dict[str, str],
    epochs: Sequence[dict[str, str]],
    accepted: int,
    stale_settles: Sequence[tuple[int, bytes, int]],
    consumer_errors: dict[str, int],
    loop_errors: Sequence[str],
    errors: Sequence[str],
    drained: bool,
    elapsed: float,
    put_elapsed: float,
) -> SoakResult:
    """Check every invariant of a finished run (see the module doc).

    Returns:
        The result, with one ``Check`` per invariant and the figures of the summary.
    """
    final = _counters(tube)
    left = sum(final[f"current-jobs-{s}"] for s in _STATES)
    duplicates = ledger.duplicates(windows)
    lost = ledger.lost()
    phantoms = ledger.phantoms()
    landed = ledger.landed_keys()
    ambiguous_landed = sum(1 for k in landed if ledger.attempts.get(k) is PutState.AMBIGUOUS)
    acked = len(ledger.acked)
    checks = [
        Check(
            "drained",
            drained and bool(tube) and left == 0,
            f"ready/reserved/delayed/buried = "
            f"{'/'.join(str(final[f'current-jobs-{s}']) for s in _STATES)}",
        ),
    ]
    # One epoch per server process: a binlog run's restarts start the counters anew
    # (jobs replayed from the binlog are not counted again in the new total-jobs).
    counted = [_counters(epoch) for epoch in epochs]
    total = sum(epoch["total-jobs"] for epoch in counted)
    deleted = sum(epoch["cmd-delete"] for epoch in counted)
    per = " (summed over server processes)" if len(counted) > 1 else ""
    checks += [
        Check(
            "conservation",
            bool(tube) and total == deleted + left,
            f"total-jobs {total} == cmd-delete {deleted} + left {left}{per}",
        ),
        Check(
            "every server job accounted for",
            total == acked + ambiguous_landed,
            f"total-jobs {total} == acked {acked} + landed put retries {ambiguous_landed}{per}",
        ),
    ]
    checks += [
        Check("no acked job lost", not lost, f"{len(lost)} acked seqs never delivered"),
        Check("no corrupt delivery", ledger.corrupt == 0, f"{ledger.corrupt} corrupt bodies"),
        Check(
            "duplicates explained",
            duplicates.unexplained == 0,
            f"{duplicates.unexplained} of {duplicates.total} duplicate deliveries unexplained",
        ),
        Check("no phantom job", not phantoms, f"{len(phantoms)} jobs from failed puts"),
        Check(
            "every seq acknowledged",
            acked == config.jobs,
            f"{acked} of {config.jobs} acked, {len(ledger.gave_up)} given up",
        ),
        Check(
            "no stale settle",
            not stale_settles,
            f"{len(stale_settles)} settles on a connection that had not reserved the job",
        ),
        Check(
            "no unhandled error on the loop",
            not loop_errors,
            f"{len(loop_errors)} reached the event loop's exception handler",
        ),
        Check("run completed", not errors, "; ".join(errors) or "no errors"),
    ]
    kinds = Counter(fault.kind for fault in faults)
    figures: dict[str, Any] = {
        "faults": len(faults),
        "faults_by_kind": dict(sorted(kinds.items())),
        "faults_by_family": dict(sorted(Counter(family(f.kind) for f in faults).items())),
        "restarts": kinds.get("restart", 0),
        "elapsed": round(elapsed, 2),
        "put_elapsed": round(put_elapsed, 2),
        "jobs_per_second": round(acked / elapsed) if elapsed else None,
        "server_total": total,
        "server_deleted": deleted,
        "server_left": left,
        "acked": acked,
        "lost": len(lost),
        "corrupt": ledger.corrupt,
        "deliveries": sum(len(d) for d in ledger.deliveries.values()),
        "duplicates": duplicates.total,
        "redelivery": duplicates.redelivery,
        "put_retry": duplicates.put_retry,
        "unexplained": duplicates.unexplained,
        "ambiguous_puts": ledger.count(PutState.AMBIGUOUS),
        "ambiguous_landed": ambiguous_landed,
        "unsent_puts": ledger.count(PutState.UNSENT),
        "gave_up": len(ledger.gave_up),
        "accepted": accepted,
        "stale_settles": len(stale_settles),
        "outcomes": dict(sorted(ledger.outcomes.items())),
        "put_errors": dict(sorted(ledger.put_errors.items())),
        "consumer_errors": dict(sorted(consumer_errors.items())),
        "server_id": server.get("id"),
        "server_version": server.get("version"),
    }
    samples: dict[str, list[Any]] = {
        "lost": lost[:20],
        "corrupt": ledger.corrupt_samples,
        "phantoms": phantoms[:20],
        "stale_settles": [[i, v.decode(), j] for i, v, j in stale_settles[:20]],
        "loop_errors": list(loop_errors[:20]),
    }
    return SoakResult(
        config=config,
        checks=checks,
        figures=figures,
        faults=list(faults),
        duplicates=duplicates,
        epochs=counted,
        errors=list(errors),
        samples=samples,
    )

"""The summary table of soak runs, and their JSON files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .reconcile import SoakResult

__all__ = ["HEADER", "details", "row", "table", "write_json"]

HEADER = (
    "| run | faults | elapsed | server total / deleted / left | acked | lost "
    "| dup deliveries (redelivery / put-retry / unexplained) | ambiguous puts "
    "| reconnects (accepted) | corrupt | result |"
)
_RULE = "|---|---|---|---|---|---|---|---|---|---|---|"


def _server(result: SoakResult) -> str:
    figures = result.figures
    if not result.config.binlog or len(result.epochs) < 2:
        return f"{figures['server_total']} / {figures['server_deleted']} / {figures['server_left']}"
    total = " + ".join(str(e["total-jobs"]) for e in result.epochs)
    deleted = " + ".join(str(e["cmd-delete"]) for e in result.epochs)
    return f"{total} / {deleted} / {figures['server_left']} (per process)"


def row(result: SoakResult) -> str:
    """One markdown table row."""
    f = result.figures
    config = result.config
    name = f"{config.chaos} {config.jobs:,}" + (" binlog" if config.binlog else "")
    faults = f"{f['faults']}" + (f" ({f['restarts']} kill -9)" if f["restarts"] else "")
    return (
        f"| {name} | {faults} | {f['elapsed']:.1f} s | {_server(result)} | {f['acked']} "
        f"| {f['lost']} | {f['duplicates']} ({f['redelivery']} / {f['put_retry']} / "
        f"{f['unexplained']}) | {f['ambiguous_puts']} | {f['accepted']} | {f['corrupt']} "
        f"| {'pass' if result.passed else 'FAIL'} |"
    )


def table(results: Sequence[SoakResult]) -> str:
    """The markdown summary table of ``results``."""
    return "\n".join([HEADER, _RULE, *(row(result) for result in results)])


def details(result: SoakResult) -> str:
    """The lines under the table: faults by kind, errors seen, each invariant."""
    f = result.figures
    kinds = ", ".join(f"{k} {n}" for k, n in f["faults_by_kind"].items()) or "none"
    lines = [
        f"{result.config.name}: seed {result.config.seed}, {f['jobs_per_second']} jobs/s, "
        f"puts done at {f['put_elapsed']:.1f} s",
        f"  faults: {kinds}",
        f"  put errors: {_counts(f['put_errors'])}; consumer errors: "
        f"{_counts(f['consumer_errors'])}",
        f"  outcomes: {_counts(f['outcomes'])}; put retries that landed: "
        f"{f['ambiguous_landed']}; stale settles: {f['stale_settles']}",
    ]
    for check in result.checks:
        lines.append(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    for sample in result.duplicates.samples[:5]:
        lines.append(f"  unexplained: {sample}")
    for sample in result.samples.get("corrupt", [])[:5]:
        lines.append(f"  corrupt: {sample}")
    for sample in result.samples.get("loop_errors", [])[:5]:
        lines.append(f"  loop error: {sample}")
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in counts.items()) or "none"


def write_json(result: SoakResult, path: Path) -> None:
    """Write the run's JSON (directories created as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")

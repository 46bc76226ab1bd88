"""The benchmark suite: plan the cells, measure each in turn, write the table.

Every measurement gets a fresh beanstalkd pinned to one core and a fresh client process
pinned to another (``_worker``). The cells run in rounds: each round measures every cell
once, so slow drift of the machine (other work, thermal state) touches all cells alike,
and RAW is measured in every round. A cell's ratio is taken per round (cell / RAW of the
same round); the table shows the median over rounds and the min-max spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rxbeanstalk.testing import BeanstalkdServer

from ._worker import Spec, raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

BODY_SIZES = (100, 10 * 1024, 60 * 1024)
STREAM_LANES = (1, 8, 32, 128)
# A put cell stores every body on the server; past this many bytes a cell gets fewer jobs
# (60 KiB bodies: 4,369 jobs), which keeps a full run's server under 300 MB.
CELL_BYTES = 256 << 20
# Table typography (spelled by name: ruff flags these characters in literals).
DASH = "\N{EN DASH}"
NONE = DASH
TIMES = "\N{MULTIPLICATION SIGN}"
# A worker that takes longer than this has hung; the cell is recorded as failed.
WORKER_TIMEOUT = 300.0


def size_label(size: int) -> str:
    """``100 B``, ``10 KiB``, ``60 KiB``."""
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def _size_id(size: int) -> str:
    return size_label(size).replace(" ", "")


@dataclass(frozen=True)
class Cell:
    """One line of measurement: a client path, a kind, a body size.

    Attributes:
        id: Stable name, e.g. ``put/rx-observable/100B`` (what ``--only`` matches).
        kind: ``put``, ``drain``, ``latency`` or ``memory``.
        client: The worker's client name.
        body_size: Body bytes.
        jobs: Jobs per measurement (throughput kinds).
        lanes: ``max_in_flight`` or idle connections.
        samples: Latency samples.
        baseline: Id of the cell this one is divided by (``None`` for a baseline).
    """

    id: str
    kind: str
    client: str
    body_size: int = 100
    jobs: int = 0
    lanes: int = 0
    samples: int = 0
    baseline: str | None = None

    def spec(self, host: str, port: int, cpu: int | None) -> Spec:
        """The worker spec of this cell against a server."""
        return Spec(
            kind=self.kind,
            client=self.client,
            host=host,
            port=port,
            jobs=self.jobs,
            body_size=self.body_size,
            lanes=self.lanes,
            samples=self.samples,
            cpu=cpu,
        )


@dataclass
class Options:
    """What to run (the command line, parsed).

    Attributes:
        jobs: Jobs per throughput cell with 100 B bodies.
        trials: Rounds; each cell is measured once per round.
        samples: Latency samples per measurement.
        lanes: Idle lanes of the memory cells.
        only: Glob patterns over cell ids; empty for all.
        output: Directory for ``latest.json`` and ``latest.md``.
        quick: Whether this is a smoke run.
    """

    jobs: int = 20_000
    trials: int = 3
    samples: int = 5_000
    lanes: int = 10_000
    only: list[str] = field(default_factory=list)
    output: Path = RESULTS
    quick: bool = False


def plan(options: Options) -> list[Cell]:
    """Every cell the options ask for, plus the baselines their ratios need.

    Args:
        options: The run's options.

    Returns:
        The cells, baselines first within each group.
    """
    cells: list[Cell] = []
    for size in BODY_SIZES:
        jobs = max(1, min(options.jobs, CELL_BYTES // size))
        raw = f"put/raw/{_size_id(size)}"
        cells.append(Cell(raw, "put", "raw", body_size=size, jobs=jobs))
        for client in ("greenstalk", "aiostalk", "rx-observable", "rx-put_many"):
            name = f"put/{client}/{_size_id(size)}"
            cells.append(Cell(name, "put", client, body_size=size, jobs=jobs, baseline=raw))
    jobs = options.jobs
    cells.append(Cell("drain/raw", "drain", "raw", jobs=jobs))
    for client in ("greenstalk", "aiostalk"):
        cells.append(Cell(f"drain/{client}", "drain", client, jobs=jobs, baseline="drain/raw"))
    for lanes in STREAM_LANES:
        name = f"drain/rx-stream-{lanes}"
        cells.append(Cell(name, "drain", "rx-stream", jobs=jobs, lanes=lanes, baseline="drain/raw"))
    samples = options.samples
    cells.append(Cell("latency/greenstalk", "latency", "greenstalk", samples=samples))
    for client in ("raw", "aiostalk", "rx-await", "rx-run"):
        cells.append(
            Cell(
                f"latency/{client}",
                "latency",
                client,
                samples=samples,
                baseline="latency/greenstalk",
            )
        )
    cells.append(Cell("memory/raw", "memory", "raw", lanes=options.lanes))
    cells.append(
        Cell("memory/rx-lanes", "memory", "rx-lanes", lanes=options.lanes, baseline="memory/raw")
    )
    if not options.only:
        return cells
    patterns = [p if any(c in p for c in "*?[") else f"*{p}*" for p in options.only]
    wanted = {c.id for c in cells if any(fnmatch.fnmatchcase(c.id, p) for p in patterns)}
    wanted |= {c.baseline for c in cells if c.id in wanted and c.baseline is not None}
    return [c for c in cells if c.id in wanted]


# ------------------------------------------------------------------------ measuring


def placement() -> tuple[int | None, int | None]:
    """The cores for the server and the client.

    Returns:
        ``(server_cpu, client_cpu)``: the first two cores this process may use, or
        ``(None, None)`` on a one-core machine (no pinning).
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[1]


def measure_once(cell: Cell, server_cpu: int | None, client_cpu: int | None) -> dict[str, Any]:
    """Measure ``cell`` once: a fresh server, a fresh pinned worker process.

    Args:
        cell: The cell.
        server_cpu: Core for beanstalkd, or ``None``.
        client_cpu: Core for the worker, or ``None``.

    Returns:
        The worker's result; on failure ``{"error": message}``.
    """
    with BeanstalkdServer() as server:
        pid = server.pid
        if server_cpu is not None and pid is not None:
            os.sched_setaffinity(pid, {server_cpu})
        server_cpus = sorted(os.sched_getaffinity(pid)) if pid is not None else []
        spec = cell.spec(server.host, server.port, client_cpu)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks._worker", spec.to_json()],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=WORKER_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"no result within {WORKER_TIMEOUT:g} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return {"error": tail[0]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["server_cpus"] = server_cpus  # the worker reports its own as "cpus"
    return result


def _value(cell: Cell, result: dict[str, Any]) -> float | None:
    """The number a cell is compared by: ops/s, p50 µs, or traced bytes per lane."""
    if "error" in result:
        return None
    if cell.kind in ("put", "drain"):
        return float(result["rate"])
    if cell.kind == "latency":
        return float(result["p50_us"])
    return float(result["traced_per_lane"])


def _spread(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(cells: list[Cell], trials: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians, spreads and per-round ratios of every cell.

    Args:
        cells: The cells.
        trials: One mapping of cell id to result per round.

    Returns:
        Cell id to its summary (``value``, ``ratio``, per-metric spreads, raw results).
    """
    summary: dict[str, Any] = {}
    by_id = {cell.id: cell for cell in cells}
    for cell in cells:
        results = [trial[cell.id] for trial in trials if cell.id in trial]
        values = [v for r in results if (v := _value(cell, r)) is not None]
        ratios: list[float] = []
        if cell.baseline is not None:
            base = by_id[cell.baseline]
            for trial in trials:
                mine = _value(cell, trial.get(cell.id, {"error": "missing"}))
                theirs = _value(base, trial.get(base.id, {"error": "missing"}))
                if mine is not None and theirs:
                    ratios.append(mine / theirs)
        metrics: dict[str, Any] = {}
        for key in ("rate", "p50_us", "p99_us", "traced_per_lane", "rss_per_lane"):
            found = [float(r[key]) for r in results if key in r]
            if found:
                metrics[key] = _spread(found)
        summary[cell.id] = {
            **dataclasses.asdict(cell),
            "value": _spread(values),
            "ratio": _spread(ratios),
            "metrics": metrics,
            "errors": [r["error"] for r in results if "error" in r],
            "trials": results,
        }
    return summary


# --------------------------------------------------------------------------- report


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _beanstalkd_version() -> str:
    try:
        found = subprocess.run(["beanstalkd", "-v"], capture_output=True, text=True, check=False)
    except OSError:
        return "unknown"
    return found.stdout.strip() or found.stderr.strip()


def _git_commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return found.stdout.strip() or "unknown"


def _uncommitted() -> int:
    """How many files of the library differ from the commit (the numbers are theirs)."""
    try:
        found = subprocess.run(
            ["git", "status", "--porcelain", "--", "rxbeanstalk"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return 0
    return len(found.stdout.splitlines())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def metadata(options: Options, placed: tuple[int | None, int | None]) -> dict[str, Any]:
    """What was measured where, for the JSON file and the table's header."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(),
        "uncommitted_library_files": _uncommitted(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "server_cpu": placed[0],
        "client_cpu": placed[1],
        "beanstalkd": _beanstalkd_version(),
        "versions": {
            name: _version(name) for name in ("rxbeanstalk", "reactivex", "greenstalk", "aiostalk")
        },
        "options": {
            "jobs": options.jobs,
            "trials": options.trials,
            "samples": options.samples,
            "lanes": options.lanes,
            "only": options.only,
            "quick": options.quick,
        },
    }


def _num(value: float) -> str:
    return f"{value:,.0f}"


def _rate(summary: dict[str, Any], cell_id: str) -> str:
    found = summary.get(cell_id)
    if found is None:
        return NONE
    if found["errors"] and found["value"] is None:
        return "failed"
    spread = found["value"]
    if spread["min"] == spread["max"]:
        return _num(spread["median"])
    return f"{_num(spread['median'])} ({_num(spread['min'])}{DASH}{_num(spread['max'])})"


def _ratio(summary: dict[str, Any], cell_id: str, bold: bool = False) -> str:
    found = summary.get(cell_id)
    if found is None:
        return NONE
    if found["baseline"] is None:
        return "**1**" if bold else "1"
    spread = found["ratio"]
    if spread is None:
        return "failed"
    if spread["min"] == spread["max"]:
        return f"{spread['median']:.3f}"
    return f"{spread['median']:.3f} ({spread['min']:.3f}{DASH}{spread['max']:.3f})"


def _latency(summary: dict[str, Any], cell_id: str) -> str:
    found = summary.get(cell_id)
    if found is None:
        return NONE
    metrics = found["metrics"]
    if "p50_us" not in metrics:
        return "failed"
    return f"{metrics['p50_us']['median']:.0f} / {metrics['p99_us']['median']:.0f}"


def _latency_ratio(summary: dict[str, Any], cell_id: str) -> str:
    found = summary.get(cell_id)
    if found is None:
        return NONE
    if found["baseline"] is None:
        return "1"
    return _ratio(summary, cell_id)


def _dirty_note(meta: dict[str, Any]) -> str:
    count = meta.get("uncommitted_library_files", 0)
    return f" with uncommitted changes to {count} file(s) in rxbeanstalk/" if count else ""


def _load_note(meta: dict[str, Any]) -> str:
    # Other work on the machine is the main source of noise: say how much there was.
    before, after = meta.get("loadavg_before"), meta.get("loadavg_after")
    if before is None or after is None:
        return ""
    return (
        f" Load average (1 min) {before[0]:.2f} before the run, {after[0]:.2f} after; "
        f"the run took {meta.get('seconds', 0):.0f} s."
    )


def _jobs_of(summary: dict[str, Any], size: int) -> int:
    for found in summary.values():
        if found["kind"] == "put" and found["body_size"] == size:
            return int(found["jobs"])
    return 0


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """Render the tables.

    Args:
        summary: What :func:`summarise` returned.
        meta: What :func:`metadata` returned.

    Returns:
        Markdown text.
    """
    versions = meta["versions"]
    options = meta["options"]
    pinned = (
        f"server on core {meta['server_cpu']}, client on core {meta['client_cpu']}"
        if meta["server_cpu"] is not None
        else "not pinned (fewer than 2 cores)"
    )
    lines = [
        "# rxbeanstalk benchmarks",
        "",
        f"{meta['date']}, commit {meta['commit']}{_dirty_note(meta)}; {meta['cpu']}, "
        f"{meta['cores']} cores; "
        f"{meta['beanstalkd']} on loopback; Python {meta['python']}, reactivex "
        f"{versions['reactivex']}. Placement: {pinned}. Each cell measured "
        f"{options['trials']} time(s), each time with a fresh server and client process; "
        f"ops/s are medians with (min{DASH}max), and {TIMES} RAW is the median of per-round "
        "ratios"
        " against RAW measured in the same round."
        + _load_note(meta)
        + (" **Quick smoke run: not comparable.**" if options["quick"] else ""),
        "",
    ]
    put = "put/{}/100B"
    rows: list[tuple[str, str | None, str | None, str | None]] = [
        (
            f"greenstalk {versions['greenstalk']} (sync)",
            put.format("greenstalk"),
            "drain/greenstalk",
            "latency/greenstalk",
        ),
        (
            f"aiostalk {versions['aiostalk']} (asyncio)",
            put.format("aiostalk"),
            "drain/aiostalk",
            "latency/aiostalk",
        ),
        ("**RAW: asyncio, pipelined batches**", put.format("raw"), "drain/raw", "latency/raw"),
        (
            "rxbeanstalk: `put` Observables, 1,000 in flight",
            put.format("rx-observable"),
            None,
            None,
        ),
        ("rxbeanstalk: `put_many`", put.format("rx-put_many"), None, None),
    ]
    for lanes in STREAM_LANES:
        rows.append(
            (
                f"rxbeanstalk: `reserve_stream(max_in_flight={lanes})` + `process`",
                None,
                f"drain/rx-stream-{lanes}",
                None,
            )
        )
    rows.append(("rxbeanstalk: `await client.put(...)`", None, None, "latency/rx-await"))
    rows.append(("rxbeanstalk: `client.put(...).run()`", None, None, "latency/rx-run"))
    rows = [r for r in rows if any(i is not None and i in summary for i in r[1:])]
    if rows:
        lines += [
            f"## Clients, {size_label(100)} bodies",
            "",
            f"| client | put ops/s | {TIMES} RAW | reserve+delete ops/s | {TIMES} RAW "
            f"| put p50 / p99 µs | p50 {TIMES} greenstalk |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
    for label, put_id, drain_id, latency_id in rows:
        bold = label.startswith("**")
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    _rate(summary, put_id) if put_id else NONE,
                    _ratio(summary, put_id, bold) if put_id else NONE,
                    _rate(summary, drain_id) if drain_id else NONE,
                    _ratio(summary, drain_id, bold) if drain_id else NONE,
                    _latency(summary, latency_id) if latency_id else NONE,
                    _latency_ratio(summary, latency_id) if latency_id else NONE,
                ]
            )
            + " |"
        )

    sized = [s for s in BODY_SIZES if any(k.endswith("/" + _size_id(s)) for k in summary)]
    if sized:
        jobs = {s: _jobs_of(summary, s) for s in sized}
        header = " | ".join(
            f"{size_label(s)} ops/s ({jobs[s]:,} jobs) | {TIMES} RAW" for s in sized
        )
        lines += [
            "",
            "## Puts by body size",
            "",
            f"| client | {header} |",
            "|---|" + "---:|---:|" * len(sized),
        ]
        for client, label in (
            ("raw", "**RAW**"),
            ("greenstalk", "greenstalk"),
            ("aiostalk", "aiostalk"),
            ("rx-observable", "rxbeanstalk `put` Observables"),
            ("rx-put_many", "rxbeanstalk `put_many`"),
        ):
            ids = [f"put/{client}/{_size_id(s)}" for s in sized]
            if not any(i in summary for i in ids):
                continue
            cells = [f"{_rate(summary, i)} | {_ratio(summary, i, client == 'raw')}" for i in ids]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")

    memory = [
        ("memory/raw", "**RAW**: bare `asyncio.Protocol`, one blocking `reserve` each"),
        ("memory/rx-lanes", "rxbeanstalk: `reserve_stream(max_in_flight=N)`, idle"),
    ]
    if any(i in summary for i, _ in memory):
        lines += [
            "",
            f"## Memory per idle lane ({options['lanes']:,} lanes in one process)",
            "",
            f"| client | tracemalloc KB/lane | {TIMES} RAW | RSS KB/lane |",
            "|---|---:|---:|---:|",
        ]
        for cell_id, label in memory:
            found = summary.get(cell_id)
            if found is None:
                continue
            metrics = found["metrics"]
            if "traced_per_lane" not in metrics:
                lines.append(f"| {label} | failed | {NONE} | {NONE} |")
                continue
            traced = metrics["traced_per_lane"]["median"] / 1000
            rss = metrics["rss_per_lane"]["median"] / 1000
            lines.append(
                f"| {label} | {traced:.2f} | {_ratio(summary, cell_id, False)} | {rss:.2f} |"
            )

    failures = [(k, v["errors"]) for k, v in summary.items() if v["errors"]]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [f"- `{k}`: {'; '.join(errors)}" for k, errors in failures]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse(argv: Sequence[str]) -> Options:
    """Parse the command line.

    Args:
        argv: Arguments without the program name.

    Returns:
        The options.
    """
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark rxbeanstalk against greenstalk, aiostalk and a RAW "
        "pipelined client; writes benchmarks/results/latest.{json,md}.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: few jobs, 1 trial")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only cells whose id matches (glob, or substring), plus their baselines; "
        "repeatable. Ids: put/CLIENT/SIZE, drain/CLIENT, latency/CLIENT, memory/CLIENT",
    )
    parser.add_argument("--trials", type=int, help="rounds (default 3; 1 with --quick)")
    parser.add_argument("--jobs", type=int, help="jobs per throughput cell (default 20000)")
    parser.add_argument("--samples", type=int, help="latency samples (default 5000)")
    parser.add_argument("--lanes", type=int, help="idle lanes of the memory cells (default 10000)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for the results")
    parser.add_argument("--list", action="store_true", help="list the cell ids and exit")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    options = Options(
        jobs=args.jobs or (2_000 if quick else 20_000),
        trials=args.trials or (1 if quick else 3),
        samples=args.samples or (500 if quick else 5_000),
        lanes=args.lanes or (1_000 if quick else 10_000),
        only=list(args.only),
        output=args.output,
        quick=quick,
    )
    for name in ("jobs", "trials", "samples", "lanes"):
        if getattr(options, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.list:
        for cell in plan(options):
            print(cell.id)
        raise SystemExit(0)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, write the results, print the table.

    Args:
        argv: Arguments without the program name (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 1 if any measurement failed.
    """
    options = parse(sys.argv[1:] if argv is None else argv)
    cells = plan(options)
    if not cells:
        print(f"no cell matches {options.only}", file=sys.stderr)
        return 2
    fds = raise_fd_limit()
    if fds < options.lanes + 100:
        print(
            f"the open-file limit is {fds}: too low for {options.lanes} lanes; "
            "use --lanes or raise the hard limit (ulimit -Hn)",
            file=sys.stderr,
        )
        return 2
    placed = placement()
    meta = metadata(options, placed)
    meta["loadavg_before"] = os.getloadavg()
    began = time.monotonic()
    trials: list[dict[str, dict[str, Any]]] = []
    for trial in range(options.trials):
        results: dict[str, dict[str, Any]] = {}
        for index, cell in enumerate(cells, 1):
            result = measure_once(cell, *placed)
            results[cell.id] = result
            shown = result.get("error") or _shown(cell, result)
            print(
                f"[{time.monotonic() - began:6.1f}s] round {trial + 1}/{options.trials} "
                f"{index:2}/{len(cells)} {cell.id}: {shown}",
                file=sys.stderr,
                flush=True,
            )
        trials.append(results)
    summary = summarise(cells, trials)
    meta["seconds"] = round(time.monotonic() - began, 1)
    meta["loadavg_after"] = os.getloadavg()
    table = markdown(summary, meta)
    options.output.mkdir(parents=True, exist_ok=True)
    (options.output / "latest.json").write_text(
        json.dumps({"meta": meta, "cells": summary}, indent=2) + "\n"
    )
    (options.output / "latest.md").write_text(table)
    print(table)
    print(f"wrote {options.output / 'latest.json'} and latest.md", file=sys.stderr)
    return 1 if any(v["errors"] for v in summary.values()) else 0


def _shown(cell: Cell, result: dict[str, Any]) -> str:
    if cell.kind in ("put", "drain"):
        return f"{result['rate']:,.0f} ops/s"
    if cell.kind == "latency":
        return f"p50 {result['p50_us']:.0f} µs, p99 {result['p99_us']:.0f} µs"
    return (
        f"{result['traced_per_lane'] / 1000:.2f} KB/lane traced, "
        f"{result['rss_per_lane'] / 1000:.2f} KB/lane RSS"
    )

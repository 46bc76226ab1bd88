"""One measurement in a process of its own: ``python -m benchmarks._worker SPEC_JSON``.

The process pins itself to the client core first, so that nothing of the measurement
runs on the server's core, then prepares the server (puts the jobs a drain needs), runs
one cell, and prints its result as one line of JSON. A fresh process per measurement
means no cell inherits another's heap, caches or connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import resource
import sys
from dataclasses import dataclass
from typing import Any

from . import _cells, _raw


@dataclass(frozen=True)
class Spec:
    """What one worker measures, against which server, on which core.

    Attributes:
        kind: ``"put"``, ``"drain"``, ``"latency"`` or ``"memory"``.
        client: ``"raw"``, ``"greenstalk"``, ``"aiostalk"``, ``"rx-observable"``,
            ``"rx-put_many"``, ``"rx-stream"``, ``"rx-await"``, ``"rx-run"`` or
            ``"rx-lanes"``, as the kind allows.
        host: Server host.
        port: Server port.
        jobs: Jobs put or drained (throughput kinds).
        body_size: Body bytes per job.
        lanes: ``max_in_flight`` of a stream, or connections of a memory cell.
        samples: Measured commands of a latency cell.
        cpu: The core to pin this process to; ``None`` leaves placement to the kernel.
    """

    kind: str
    client: str
    host: str
    port: int
    jobs: int = 0
    body_size: int = 100
    lanes: int = 0
    samples: int = 0
    cpu: int | None = None

    def to_json(self) -> str:
        """Serialise for the command line."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        """Parse what :meth:`to_json` wrote."""
        return cls(**json.loads(text))


def _throughput(elapsed: float, jobs: int) -> dict[str, float]:
    return {"elapsed": elapsed, "jobs": float(jobs), "rate": jobs / elapsed}


def _latency(samples: list[int]) -> dict[str, float]:
    return {
        "p50_us": _cells.percentile(samples, 0.50) / 1000,
        "p99_us": _cells.percentile(samples, 0.99) / 1000,
        "mean_us": sum(samples) / len(samples) / 1000,
        "samples": float(len(samples)),
    }


def measure(spec: Spec) -> dict[str, float]:
    """Run the cell ``spec`` describes, in this process.

    Args:
        spec: The cell.

    Returns:
        ``elapsed``/``jobs``/``rate`` for throughput cells, ``p50_us``/``p99_us``/...
        for latency cells, per-lane bytes for memory cells.

    Raises:
        ValueError: An unknown kind or client.
        PeerMissingError: greenstalk or aiostalk is not installed.
        Exception: Whatever the client under test raised.
    """
    host, port, jobs, lanes = spec.host, spec.port, spec.jobs, spec.lanes
    body = b"x" * spec.body_size
    key = (spec.kind, spec.client)
    if spec.kind == "put":
        if key == ("put", "greenstalk"):
            return _throughput(_cells.put_greenstalk(host, port, jobs, body), jobs)
        puts = {
            "raw": _cells.put_raw,
            "aiostalk": _cells.put_aiostalk,
            "rx-observable": _cells.put_rx_observables,
            "rx-put_many": _cells.put_rx_many,
        }
        if spec.client in puts:
            return _throughput(asyncio.run(puts[spec.client](host, port, jobs, body)), jobs)
    elif spec.kind == "drain":
        asyncio.run(_raw.fill(host, port, jobs, body))
        if spec.client == "greenstalk":
            return _throughput(_cells.drain_greenstalk(host, port, jobs), jobs)
        if spec.client == "raw":
            elapsed = asyncio.run(_cells.drain_raw(host, port, jobs, spec.body_size))
            return _throughput(elapsed, jobs)
        if spec.client == "aiostalk":
            return _throughput(asyncio.run(_cells.drain_aiostalk(host, port, jobs)), jobs)
        if spec.client == "rx-stream":
            elapsed = asyncio.run(_cells.drain_rx_stream(host, port, jobs, lanes))
            return _throughput(elapsed, jobs)
    elif spec.kind == "latency":
        if spec.client == "greenstalk":
            return _latency(_cells.latency_greenstalk(host, port, spec.samples, body))
        if spec.client == "rx-run":
            return _latency(_cells.latency_rx_run(host, port, spec.samples, body))
        latencies = {
            "raw": _cells.latency_raw,
            "aiostalk": _cells.latency_aiostalk,
            "rx-await": _cells.latency_rx_await,
        }
        if spec.client in latencies:
            return _latency(asyncio.run(latencies[spec.client](host, port, spec.samples, body)))
    elif spec.kind == "memory":
        raise_fd_limit()
        if spec.client == "raw":
            return asyncio.run(_cells.memory_raw(host, port, lanes))
        if spec.client == "rx-lanes":
            return asyncio.run(_cells.memory_rx_lanes(host, port, lanes))
    raise ValueError(f"no cell measures kind {spec.kind!r} with client {spec.client!r}")


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit.

    Returns:
        The new soft limit.
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main(argv: list[str]) -> int:
    """Pin, measure, print one line of JSON.

    Args:
        argv: ``[program, SPEC_JSON]``.

    Returns:
        The exit status.
    """
    if len(argv) != 2:
        print("usage: python -m benchmarks._worker SPEC_JSON", file=sys.stderr)
        return 2
    spec = Spec.from_json(argv[1])
    if spec.cpu is not None:
        os.sched_setaffinity(0, {spec.cpu})
    result: dict[str, Any] = dict(measure(spec))
    result["cpus"] = sorted(os.sched_getaffinity(0))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

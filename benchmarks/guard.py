"""The performance regression guard: a few seconds, in one process, ratios only.

It measures the two paths that matter most against RAW in the same process and the same
minute: per-command ``put`` Observables (1,000 in flight) against RAW pipelined puts,
and ``reserve_stream(max_in_flight=8).pipe(process(...))`` against RAW reserve+delete.
Absolute times on a shared two-core machine move by a factor of two when something else
runs; a ratio of two paths measured back to back moves far less, and the best of a few
interleaved trials of each path filters out the trials that other work slowed down.

``tests/test_perf_guard.py`` fails when a ratio drops below its threshold; run
``python -m benchmarks.guard`` to see the numbers.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from rxbeanstalk.testing import BeanstalkdServer

from . import _cells, _raw

GUARD_JOBS = 10_000
GUARD_TRIALS = 3
GUARD_LANES = 8
_BODY = b"x" * 100
_DRAIN_TUBES = {"raw-drain": "guard-drain-raw", "rx-drain": "guard-drain-rx"}


@dataclass(frozen=True)
class GuardResult:
    """What the guard measured.

    Attributes:
        put_ratio: Best per-command put rate / best RAW put rate.
        drain_ratio: Best stream drain rate / best RAW reserve+delete rate.
        rates: Jobs per second of each path in every trial (``raw-put``, ``rx-put``,
            ``raw-drain``, ``rx-drain``).
        jobs: Jobs per measurement.
        lanes: ``max_in_flight`` of the stream.
    """

    put_ratio: float
    drain_ratio: float
    rates: dict[str, list[float]] = field(default_factory=dict, repr=False)
    jobs: int = GUARD_JOBS
    lanes: int = GUARD_LANES

    def describe(self) -> str:
        """Say what was measured, for a failure message or a terminal."""
        lines = [
            f"per-command put Observables: {self.put_ratio:.3f} x RAW; "
            f"reserve_stream(max_in_flight={self.lanes}) + process: "
            f"{self.drain_ratio:.3f} x RAW ({self.jobs:,} jobs of {len(_BODY)} B per trial; "
            "best of each path / best of RAW)"
        ]
        for name, rates in self.rates.items():
            shown = ", ".join(f"{rate:,.0f}" for rate in rates)
            lines.append(f"  {name:9} jobs/s per trial: {shown}")
        return "\n".join(lines)


async def _trial(host: str, port: int, jobs: int, lanes: int, reverse: bool) -> dict[str, float]:
    # Each drain has a tube of its own, filled before any clock starts, so the paths
    # never see each other's jobs; the puts go to "default", which nothing drains.
    for tube in _DRAIN_TUBES.values():
        await _raw.fill(host, port, jobs, _BODY, tube)
    paths: list[tuple[str, Callable[[], Awaitable[float]]]] = [
        ("raw-put", lambda: _cells.put_raw(host, port, jobs, _BODY)),
        ("rx-put", lambda: _cells.put_rx_observables(host, port, jobs, _BODY)),
        (
            "raw-drain",
            lambda: _cells.drain_raw(host, port, jobs, len(_BODY), _DRAIN_TUBES["raw-drain"]),
        ),
        (
            "rx-drain",
            lambda: _cells.drain_rx_stream(host, port, jobs, lanes, _DRAIN_TUBES["rx-drain"]),
        ),
    ]
    if reverse:
        # Alternate which of each pair goes first, so neither always gets the warmer
        # (or the more disturbed) half of a trial.
        paths = [paths[1], paths[0], paths[3], paths[2]]
    rates: dict[str, float] = {}
    for name, measure in paths:
        rates[name] = jobs / await measure()
    return rates


def run_guard(
    jobs: int = GUARD_JOBS, trials: int = GUARD_TRIALS, lanes: int = GUARD_LANES
) -> GuardResult:
    """Measure the guarded ratios: a fresh beanstalkd and one pass over all paths per trial.

    Must be called with no event loop running in this thread (it runs its own).

    Args:
        jobs: Jobs per measurement.
        trials: Trials of each path; the best of each counts.
        lanes: ``max_in_flight`` of the stream.

    Returns:
        The ratios and every rate behind them.

    Raises:
        BeanstalkdNotFoundError: No beanstalkd binary.
        BeanstalkError: A client under test failed.
        RawError: The RAW client got an unexpected reply.
    """
    rates: dict[str, list[float]] = {
        name: [] for name in ("raw-put", "rx-put", "raw-drain", "rx-drain")
    }
    for trial in range(trials):
        with BeanstalkdServer() as server:
            found = asyncio.run(_trial(server.host, server.port, jobs, lanes, trial % 2 == 1))
        for name, rate in found.items():
            rates[name].append(rate)
    return GuardResult(
        put_ratio=max(rates["rx-put"]) / max(rates["raw-put"]),
        drain_ratio=max(rates["rx-drain"]) / max(rates["raw-drain"]),
        rates=rates,
        jobs=jobs,
        lanes=lanes,
    )


def main() -> int:
    """Print the guard's ratios (``python -m benchmarks.guard``)."""
    result = run_guard()
    print(result.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())

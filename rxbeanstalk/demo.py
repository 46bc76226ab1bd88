"""A worker pipeline against a throwaway beanstalkd: ``python -m rxbeanstalk.demo``.

A producer puts 3,000 jobs into tube ``demo`` with ``put_many``; one in 500 is marked to
fail. ``reserve_stream(max_in_flight=8)`` piped into ``process`` drains them: each failing
job is released twice, then buried. A sampler polls ``stats-tube`` to show that no more
than 8 jobs are ever reserved at once. Needs the ``beanstalkd`` binary on ``PATH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter

from rxbeanstalk import BeanstalkError, Client, Job, NotFoundError
from rxbeanstalk._cli._format import key_value_lines
from rxbeanstalk._cli._progress import ProgressBar
from rxbeanstalk.operators import Action, Outcome, process
from rxbeanstalk.testing import BeanstalkdNotFoundError, BeanstalkdServer

TUBE = "demo"
JOBS = 3_000
FAIL_EVERY = 500  # one job in this many fails on purpose
MAX_IN_FLIGHT = 8
MAX_RELEASES = 2
TIMEOUT = 60.0  # seconds for the whole run


async def handle(job: Job) -> None:
    """The work: fail on bodies marked ``fail``, succeed on the others."""
    if job.body.startswith(b"fail"):
        raise RuntimeError(f"job {job.id} is marked to fail")


async def sample_reserved(client: Client, peak: list[int]) -> None:
    """Poll the server's count of reserved jobs in the tube; keep the highest in ``peak[0]``."""
    while True:
        try:
            stats = await client.stats_tube(TUBE)
            peak[0] = max(peak[0], stats.current_jobs_reserved)
        except NotFoundError:
            pass  # the tube does not exist yet
        await asyncio.sleep(0.005)


async def run(client: Client) -> int:
    """Put the jobs, drain them through the pipeline, print the report; return the exit code."""
    counts: Counter[Action] = Counter()
    finished = asyncio.Event()
    errors: list[Exception] = []
    expected_failures = JOBS // FAIL_EVERY

    def on_outcome(outcome: Outcome) -> None:
        counts[outcome.action] += 1
        if counts[Action.DELETED] + counts[Action.BURIED] == JOBS:
            finished.set()

    def on_error(error: Exception) -> None:
        errors.append(error)
        finished.set()

    peak = [0]
    sampler = asyncio.create_task(sample_reserved(client, peak))
    # The command-line tool's bar: redrawn in place on a terminal, a line a second in a log.
    progress = ProgressBar(sys.stdout, "drain")
    started = time.monotonic()
    pipeline = client.reserve_stream(tubes=[TUBE], max_in_flight=MAX_IN_FLIGHT).pipe(
        process(handle, release_delay=0, max_releases=MAX_RELEASES)
    )
    bodies = [f"fail {i}" if i % FAIL_EVERY == 0 else f"job {i}" for i in range(JOBS)]
    subscription = pipeline.subscribe(on_outcome, on_error)
    try:
        await client.put_many(bodies, tube=TUBE)
        while not finished.is_set():
            progress.update(counts[Action.DELETED] + counts[Action.BURIED], JOBS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(finished.wait(), 0.1)
        if errors:
            raise errors[0]
        progress.update(JOBS, JOBS)
        progress.close()
        elapsed = time.monotonic() - started
    finally:
        subscription.dispose()
        sampler.cancel()
    tube = await client.stats_tube(TUBE)

    rows = [
        ("jobs put", f"{len(bodies):,}"),
        ("deleted", f"{counts[Action.DELETED]:,}"),
        ("released", f"{counts[Action.RELEASED]:,}"),
        ("buried", f"{counts[Action.BURIED]:,}"),
        ("elapsed", f"{elapsed:.2f} s"),
        ("jobs/s", f"{JOBS / elapsed:,.0f}"),
        (f"stats-tube {TUBE}", ""),
        ("  ready", str(tube.current_jobs_ready)),
        ("  reserved", str(tube.current_jobs_reserved)),
        ("  delayed", str(tube.current_jobs_delayed)),
        ("  buried", str(tube.current_jobs_buried)),
        ("  total-jobs", f"{tube.total_jobs:,}"),
        ("peak reserved (sampled)", f"{peak[0]} (max_in_flight={MAX_IN_FLIGHT})"),
    ]
    print()
    print("\n".join(key_value_lines(rows, indent="  ")))

    problems = []
    if counts[Action.BURIED] != expected_failures or tube.current_jobs_buried != expected_failures:
        problems.append(f"expected {expected_failures} buried jobs")
    if counts[Action.RELEASED] != expected_failures * MAX_RELEASES:
        problems.append(f"expected {expected_failures * MAX_RELEASES} releases")
    if peak[0] > MAX_IN_FLIGHT:
        problems.append(f"{peak[0]} jobs were reserved at once, more than {MAX_IN_FLIGHT}")
    for problem in problems:
        print(f"demo: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


async def main() -> int:
    """Start a private beanstalkd, run the demo against it, stop it; return the exit code."""
    server = BeanstalkdServer()
    try:
        server.start()
    except BeanstalkdNotFoundError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    try:
        print(f"demo: beanstalkd {server.address} (pid {server.pid}); {JOBS:,} jobs into {TUBE!r}")
        async with asyncio.timeout(TIMEOUT), Client(server.host, server.port) as client:
            return await run(client)
    except BeanstalkError as error:
        print(f"\ndemo: FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"\ndemo: FAILED: not finished within {TIMEOUT:g} s", file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

"""``drain``: reserve every job of a tube and delete (or bury) it, with a progress bar.

Jobs come from ``reserve_iter``, which sends a reserve only when pulled and while fewer
than ``_IN_FLIGHT`` jobs are held, so the next reserve overlaps the previous job's
``delete``. The idle clock runs only while no job is held: then a reserve is waiting on
the server, and a tube that gives it nothing for ``idle`` seconds is empty. (While jobs
are held, a pull may be waiting for a free credit rather than for the server.) Jobs
still held when the drain ends (interrupted, or a failure) go back to ready when the
iterator closes their connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from .._client import Client
from .._iter import ReserveIterator
from .._job import Job
from ..errors import BeanstalkError, NotFoundError
from ._progress import ProgressBar

__all__ = ["DrainResult", "drain"]

# Jobs held at once: enough to overlap one job's delete with the next reserve.
_IN_FLIGHT = 4
# How often the estimate of what is left (the tube's ready count) is refreshed.
_ESTIMATE_EVERY = 0.5


@dataclasses.dataclass(slots=True)
class DrainResult:
    """What a drain did so far (it is filled in while the drain runs).

    Attributes:
        settled: Jobs deleted (or buried).
        seconds: Time the drain took.
    """

    settled: int = 0
    seconds: float = 0.0


class _Settler:
    """Settles each job in a task of its own, and says when one is done.

    Args:
        bury: Bury (keeping the priority) instead of deleting.
        on_settled: Called after each successful settle.
    """

    def __init__(self, bury: bool, on_settled: Callable[[], None]) -> None:
        self.pending: set[asyncio.Task[object]] = set()
        self.failures: list[BaseException] = []
        self._bury = bury
        self._on_settled = on_settled
        self._changed = asyncio.Event()

    def start(self, job: Job) -> None:
        """Send the job's ``delete`` (or ``bury``) without waiting for the reply."""

        async def settle() -> object:
            return await (job.bury() if self._bury else job.delete())

        task = asyncio.create_task(settle())
        self.pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self.pending.discard(task)
        self._changed.set()
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.failures.append(error)
        else:
            self._on_settled()

    async def changed(self) -> None:
        """Wait until the next settle is done."""
        self._changed.clear()
        await self._changed.wait()

    async def finish(self) -> None:
        """Wait for every settle already sent."""
        await asyncio.gather(*self.pending, return_exceptions=True)


async def _next_job(jobs: ReserveIterator, idle: float, settler: _Settler) -> Job | None:
    """The next job, or ``None`` once no job came for ``idle`` s while none was held.

    A settle that failed also ends the wait (``None``): the drain stops on it.
    """
    pull = asyncio.ensure_future(anext(jobs))
    quiet_since = time.monotonic()
    try:
        while not pull.done() and not settler.failures:
            if settler.pending:
                # The pull may be waiting for a credit: stop the clock until a settle ends.
                change = asyncio.ensure_future(settler.changed())
                try:
                    await asyncio.wait({pull, change}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    change.cancel()
                quiet_since = time.monotonic()
                continue
            remaining = quiet_since + idle - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.wait({pull}, timeout=remaining)
        return pull.result() if pull.done() else None
    finally:
        # Not done: the iterator keeps the job this pull was getting, and gives it back
        # to the server when it closes.
        pull.cancel()


async def drain(
    client: Client,
    tube: str,
    *,
    bury: bool,
    idle: float,
    limit: int | None,
    progress: ProgressBar,
    result: DrainResult,
) -> None:
    """Reserve and delete (or bury) jobs of ``tube`` until it stays empty for ``idle`` s.

    Args:
        client: The client to work with.
        tube: The tube to drain.
        bury: Bury each job (keeping its priority) instead of deleting it.
        idle: Seconds without a ready job after which the drain ends.
        limit: Stop after this many jobs; ``None`` for no limit.
        progress: Where to show progress.
        result: Updated as jobs are settled, so that the caller can report what was
            done even when this raises or is cancelled.

    Raises:
        BeanstalkError: Reserving or settling failed; jobs held then go back to ready.
        InvalidArgumentError: A bad tube name.
    """
    started = time.monotonic()

    def settled() -> None:
        result.settled += 1
        progress.update(result.settled)

    settler = _Settler(bury, settled)
    estimator = asyncio.create_task(_estimate(client, tube, lambda: result.settled, progress))
    try:
        async with client.reserve_iter(tubes=[tube], max_in_flight=_IN_FLIGHT) as jobs:
            pulled = 0
            while limit is None or pulled < limit:
                job = await _next_job(jobs, idle, settler)
                if job is None:
                    break
                pulled += 1
                settler.start(job)
            # Let every settle already sent finish before the iterator closes the lanes.
            await settler.finish()
        if settler.failures:
            raise settler.failures[0]
    finally:
        estimator.cancel()
        result.seconds = time.monotonic() - started
        progress.close()


async def _estimate(
    client: Client, tube: str, done: Callable[[], int], progress: ProgressBar
) -> None:
    """Keep the progress bar's total at "settled + still in the tube", refreshed."""
    while True:
        try:
            stats = await client.stats_tube(tube)
        except NotFoundError:
            left = 0  # an empty tube nobody watches no longer exists
        except BeanstalkError:
            return  # the drain itself meets the same failure and reports it
        else:
            left = stats.current_jobs_ready + stats.current_jobs_reserved
        progress.update(done(), done() + left)
        await asyncio.sleep(_ESTIMATE_EVERY)

"""The consumer: ``reserve_stream(...).pipe(process(handler), retry_with_backoff(...))``.

This is the pipeline the README recommends, nothing more: the stream's lanes reserve
through the proxy, ``process`` runs the handler and deletes each job, and
``retry_with_backoff`` subscribes again (fresh lanes, fresh connections) after a
connection or protocol error. Two taps record what the soak needs: each job as the
stream delivers it (checked against its sha256), and each error on its way to the retry.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable

from reactivex import Observable, abc
from reactivex import operators as ops

from rxbeanstalk import Client, Job
from rxbeanstalk.operators import Outcome, process, retry_with_backoff

from .ledger import Ledger, error_name

__all__ = ["Consumer", "CorruptDeliveryError"]


class CorruptDeliveryError(Exception):
    """The handler refused a body that failed its sha256 check (the job is released)."""


class Consumer:
    """One worker pipeline over the soak's tube.

    Args:
        client: Its own client (through the proxy).
        ledger: Where deliveries and outcomes go.
        tube: The tube.
        max_in_flight: The stream's lanes (jobs held at most).
        retry_base: ``retry_with_backoff``'s first wait.
        retry_cap: ``retry_with_backoff``'s longest wait.
        max_tries: Failures in a row before the pipeline gives up.
        work: Seconds the handler works on each job, uniform in ``(low, high)``.
        rng: Random source for the work times.
        on_failed: Called with the error if the pipeline gives up.
    """

    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        tube: str,
        *,
        max_in_flight: int,
        retry_base: float,
        retry_cap: float,
        max_tries: int,
        work: tuple[float, float],
        rng: random.Random,
        on_failed: Callable[[Exception], None],
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.tube = tube
        self.max_in_flight = max_in_flight
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.max_tries = max_tries
        self.work = work
        self.rng = rng
        self.on_failed = on_failed
        self.errors: Counter[str] = Counter()
        self._subscription: abc.DisposableBase | None = None

    def start(self) -> None:
        """Subscribe the pipeline."""
        ledger, rng, (low, high) = self.ledger, self.rng, self.work

        async def handle(job: Job) -> None:
            if ledger.is_corrupt(job):
                raise CorruptDeliveryError(f"job {job.id}: body failed its sha256 check")
            if high > 0:
                await asyncio.sleep(rng.uniform(low, high))  # the work: jobs stay in flight

        def delivered(job: Job) -> None:
            ledger.receive(job)

        def failed(error: Exception) -> None:
            self.errors[error_name(error)] += 1
            ledger.pipeline_failed()

        def outcome(result: Outcome) -> None:
            ledger.outcome(result)

        jobs: Observable[Job] = self.client.reserve_stream(
            [self.tube], max_in_flight=self.max_in_flight
        ).pipe(ops.do_action(on_next=delivered))
        count_error: Callable[[Observable[Outcome]], Observable[Outcome]] = ops.do_action(
            on_error=failed
        )
        outcomes: Observable[Outcome] = jobs.pipe(
            process(handle),
            count_error,
            retry_with_backoff(max_tries=self.max_tries, base=self.retry_base, cap=self.retry_cap),
        )
        self._subscription = outcomes.subscribe(on_next=outcome, on_error=self.on_failed)

    def stop(self) -> None:
        """Dispose the pipeline (lanes drain, then close)."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()

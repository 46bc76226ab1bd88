"""Producers: put every seq until the server acknowledges it.

Each producer is one ``Client`` (one pipelined command connection through the proxy)
with ``window`` puts in flight. A put that fails with ``ConnectionLostError`` (which
includes ``CommandTimeoutError``) or ``ProtocolError`` has an unknown outcome: the job
may exist. It is counted as ambiguous and put again, as the next attempt of the same
seq; if the first attempt had landed, the seq now has two jobs, a put-retry duplicate
that the ledger explains from the bodies. A put that fails with ``ConnectError`` never
reached a server and is simply put again. Only a put answered ``INSERTED`` counts as
acknowledged.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

from rxbeanstalk import Client
from rxbeanstalk.errors import ConnectError, ConnectionLostError, ProtocolError

from .body import make_body
from .ledger import Ledger

__all__ = ["Pacer", "Producer"]

# Between two attempts of one seq: the client's channel has its own reconnect backoff,
# this only keeps a worker from spinning while the proxy refuses or resets connections.
_RETRY_PAUSE = 0.02


class Pacer:
    """Spreads the run's puts evenly over time (``rate`` puts per second in all).

    Args:
        rate: Puts per second, all producers together; ``None`` for no limit.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self._next = 0
        self._start: float | None = None

    async def wait(self) -> None:
        """Wait for the next put's turn."""
        if self.rate is None:
            return
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._next / self.rate
        self._next += 1
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


class Producer:
    """Puts its share of the seqs, ``window`` at a time.

    Args:
        client: Its own client (through the proxy), using the soak's tube.
        ledger: Where every attempt is recorded.
        seqs: The seqs this producer puts.
        window: Puts in flight at once.
        pacer: Shared rate limit.
        payload: Payload size range in bytes, ``(low, high)``.
        rng: Random source for the payloads.
        max_attempts: Attempts per seq before giving up on it.
    """

    def __init__(
        self,
        client: Client,
        ledger: Ledger,
        seqs: range,
        *,
        window: int,
        pacer: Pacer,
        payload: tuple[int, int],
        rng: random.Random,
        max_attempts: int,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.seqs = seqs
        self.window = window
        self.pacer = pacer
        self.payload = payload
        self.rng = rng
        self.max_attempts = max_attempts

    async def run(self) -> None:
        """Put every seq (acknowledged, or given up after ``max_attempts``)."""
        todo = iter(self.seqs)
        await asyncio.gather(*(self._worker(todo) for _ in range(self.window)))

    async def _worker(self, todo: Iterator[int]) -> None:
        for seq in todo:
            await self.pacer.wait()
            await self._put(seq)

    async def _put(self, seq: int) -> None:
        ledger = self.ledger
        payload = self.rng.randbytes(self.rng.randint(*self.payload))
        for attempt in range(self.max_attempts):
            key = ledger.put_sent(seq, attempt)
            body = make_body(ledger.run_id, seq, attempt, payload)
            try:
                job_id = await self.client.put(body)
            except (ConnectError, ConnectionLostError, ProtocolError) as error:
                ledger.put_failed(key, error)
                await asyncio.sleep(_RETRY_PAUSE * self.rng.uniform(0.5, 1.5))
                continue
            ledger.put_acked(key, job_id)
            return
        ledger.put_gave_up(seq)

"""``reserve_iter``: a pull-driven async iterator of jobs over lanes.

A reserve is sent only when the consumer pulls and a credit (a lane without a job) is
free, so the consumer's pace is the backpressure. A pull cancelled while its reserve is
on the wire leaves that reserve running: the job it brings is kept for the next pull,
never lost. Leaving the ``async with`` block (``break``, an exception, cancellation)
closes every lane, and the server puts every unsettled job back to ready.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING

from ._job import Job
from ._lane import Lane
from .errors import ConnectionLostError

if TYPE_CHECKING:
    from ._channel import Address
    from ._client import Client


class ReserveIterator:
    """Async context manager and async iterator of reserved jobs.

    Args:
        client: The client the jobs belong to.
        address: Server address and timeouts.
        watch: The tubes to reserve from.
        max_in_flight: How many jobs may be reserved and unsettled at once.
    """

    def __init__(
        self, client: Client, address: Address, watch: tuple[str, ...], max_in_flight: int
    ) -> None:
        self._client = client
        self._address = address
        self._watch = watch
        self._max = max_in_flight
        self._lanes: list[Lane] = []
        self._ready: deque[Job] = deque()
        self._changed = asyncio.Event()
        self._error: BaseException | None = None
        self._closed = False

    async def __aenter__(self) -> ReserveIterator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ReserveIterator:
        return self

    async def __anext__(self) -> Job:
        """Reserve and return the next job (waits as long as it takes).

        Raises:
            ConnectError: a lane could not connect.
            ConnectionLostError: a lane's connection failed, or the iterator is closed.
            ProtocolError: the server sent something invalid.
        """
        while True:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise ConnectionLostError("reserve_iter is closed")
            if self._ready:
                return self._ready.popleft()
            self._changed.clear()
            if not any(lane.reserving for lane in self._lanes):
                lane = next((lane for lane in self._lanes if self._free(lane)), None)
                if lane is None and len(self._lanes) < self._max:
                    lane = Lane(self._client, self._address, self._watch, self)
                    self._lanes.append(lane)
                    try:
                        await lane.open()
                    except BaseException:
                        self._lanes.remove(lane)
                        lane.close()
                        raise
                if lane is not None:
                    lane.reserve()
            await self._changed.wait()

    @staticmethod
    def _free(lane: Lane) -> bool:
        return not lane.closed and lane.job is None and not lane.reserving

    async def aclose(self) -> None:
        """Close every lane; unsettled jobs go back to ready.

        A settle command still in flight gets up to the command timeout to be answered
        first, so a ``delete`` sent just before leaving is not lost.
        """
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        if any(lane.settling for lane in self._lanes):
            try:
                async with asyncio.timeout(self._address.command_timeout):
                    while any(lane.settling and not lane.closed for lane in self._lanes):
                        self._changed.clear()
                        await self._changed.wait()
            except TimeoutError:
                pass  # close regardless: the server returns what was not settled
        for lane in self._lanes:
            lane.close()
        self._ready.clear()

    # -- LaneListener -----------------------------------------------------------------

    def lane_job(self, lane: Lane, job: Job) -> None:
        if self._closed:
            lane.close()
            return
        self._ready.append(job)
        self._changed.set()

    def lane_free(self, lane: Lane) -> None:
        self._changed.set()

    def lane_idle(self, lane: Lane) -> None:
        self._changed.set()

    def lane_failed(self, lane: Lane, error: BaseException) -> None:
        if not self._closed and self._error is None:
            self._error = error
        for other in self._lanes:
            other.close()
        self._changed.set()

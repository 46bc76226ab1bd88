"""A set of lanes started, stopped and drained together: the engine of the job streams.

``LaneSet`` opens lanes (see ``_lane``), keeps them reserving while it runs, and stops
them in the one way every stream needs: lanes stop reserving, lanes that hold nothing
close at once (a waiting reserve ends), lanes whose job was delivered wait up to
``drain_timeout`` for it to be settled, then whatever is still open closes and the server
puts its job back. A connection failure aborts the whole set.

Subclasses decide what a reserved job is for (``deliver``) and who hears of a failure
(``fail``); ``released`` tells them when lanes closed, so that a stream starting anew can
take over the credit a draining set gives back.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ._job import Job
from ._lane import Lane

if TYPE_CHECKING:
    from ._channel import Address
    from ._client import Client


class LaneSet:
    """Lanes reserving from one watch list, stopped and drained together.

    Args:
        client: The client the jobs belong to.
        address: Server address and timeouts.
        watch: The tubes to reserve from.
        drain_timeout: Seconds delivered jobs get to be settled once the set stops.
        auto_touch: Touch each held job before its TTR runs out.
    """

    def __init__(
        self,
        client: Client,
        address: Address,
        watch: tuple[str, ...],
        *,
        drain_timeout: float,
        auto_touch: bool,
    ) -> None:
        self.client = client
        self.address = address
        self.watch = watch
        self.drain_timeout = drain_timeout
        self.auto_touch = auto_touch
        self.lanes: list[Lane] = []
        self.running = True
        self.finished = False
        self._opening: set[asyncio.Task[None]] = set()
        self._drain_timer: asyncio.TimerHandle | None = None

    # -- for subclasses ---------------------------------------------------------------

    def deliver(self, lane: Lane, job: Job) -> None:
        """A running lane reserved ``job``: hand it on."""
        raise NotImplementedError

    def fail(self, error: BaseException) -> None:
        """A lane failed (or could not open) while running: ``abort``, then report it."""
        raise NotImplementedError

    def released(self) -> None:
        """Some lanes closed (or the set finished); called on every such change."""

    # -- lifecycle --------------------------------------------------------------------

    @property
    def open_lanes(self) -> int:
        """Lanes not closed yet (a draining set still holds this much credit)."""
        return sum(1 for lane in self.lanes if not lane.closed)

    def grow(self, count: int) -> None:
        """Add ``count`` lanes; each starts reserving once it is connected."""
        if not self.running or count <= 0:
            return
        lanes = [
            Lane(self.client, self.address, self.watch, self, auto_touch=self.auto_touch)
            for _ in range(count)
        ]
        self.lanes.extend(lanes)
        task = asyncio.get_running_loop().create_task(self._open(lanes))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open(self, lanes: list[Lane]) -> None:
        try:
            await asyncio.gather(*(lane.open() for lane in lanes))
        except Exception as error:  # ConnectError, or anything else: never a silent hang
            if self.running:
                self.fail(error)
            return
        for lane in lanes:
            if self.running:
                lane.reserve()

    def stop(self) -> None:
        """Stop reserving, close idle lanes now and give delivered jobs ``drain_timeout``."""
        if not self.running:
            return
        self.running = False
        self._cancel_opening()
        for lane in self.lanes:
            if lane.quiet:
                lane.close()
        if not self._maybe_done():
            loop = asyncio.get_running_loop()
            self._drain_timer = loop.call_later(self.drain_timeout, self.close_all)

    def abort(self) -> None:
        """Stop at once: every lane closes and the server takes back every held job."""
        self.running = False
        self._cancel_opening()
        self.close_all()

    def close_all(self) -> None:
        """Close every lane now."""
        for lane in self.lanes:
            lane.close()
        self._finish()

    def _cancel_opening(self) -> None:
        for task in self._opening:
            task.cancel()

    def _maybe_done(self) -> bool:
        self.released()
        if all(lane.closed for lane in self.lanes):
            self._finish()
            return True
        return False

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        self.released()

    # -- LaneListener -----------------------------------------------------------------

    def lane_job(self, lane: Lane, job: Job) -> None:
        """A lane reserved ``job``: deliver it, or hand it back if the set is stopping."""
        if not self.running:
            lane.close()
            self._maybe_done()
            return
        self.deliver(lane, job)

    def lane_free(self, lane: Lane) -> None:
        """The lane's job was settled or lost: reserve again, or close when stopping."""
        if self.running:
            lane.reserve()
        else:
            self.lane_idle(lane)

    def lane_idle(self, lane: Lane) -> None:
        """Nothing is in flight on the lane: a stopping set closes it."""
        if not self.running and lane.quiet:
            lane.close()
            self._maybe_done()

    def lane_failed(self, lane: Lane, error: BaseException) -> None:
        """The lane's connection failed (the lane is closed)."""
        if self.running:
            self.fail(error)
        else:
            self._maybe_done()

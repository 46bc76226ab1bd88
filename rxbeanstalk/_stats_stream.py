"""``Client.stats_stream``: periodic stats snapshots as a cold Observable.

Each subscription polls on its own timer, a ``call_at`` handle on the client's event
loop (no thread): a round sends ``stats`` and one ``stats-tube`` per tube pipelined in one
write (after a ``list-tubes`` when the tubes are not given), and emits one
``StatsSnapshot`` once every reply is in. The next round is due ``interval`` seconds after
the previous one was due, so the rate does not drift with the round trip; a round never
overlaps the one before it (a slow server delays the next round, it does not pile them
up). Disposing cancels the timer and drops the replies of a round in progress: nothing
stays scheduled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from reactivex import abc

from ._loop import LoopBinding
from ._observable import CommandObservable, Emitter
from .errors import InvalidArgumentError, NotFoundError
from .protocol import Command, ListTubes, ServerStats, Stats, StatsTube, TubeStats, _html
from .protocol import _validate as check

Send = Callable[[Command[Any], Any], None]
"""Sends a command on the client's command connection: ``send(command, sink)``."""


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class StatsSnapshot:
    """One round of ``stats_stream``: the server's stats and its tubes', taken together.

    Attributes:
        at: When the ``stats`` reply arrived (``time.time()``, seconds since the epoch).
        server: The server's ``stats``.
        tubes: Tube name to its ``stats-tube``, in the order asked (or in ``list-tubes``
            order). A tube that does not exist at that moment is left out: beanstalkd
            drops a tube once it is empty and nobody uses or watches it, and makes it
            again on the next ``put``. ``tube(name)`` reads such a tube as empty.
    """

    at: float
    server: ServerStats
    tubes: Mapping[str, TubeStats]

    def tube(self, name: str) -> TubeStats:
        """The stats of tube ``name``, or all zeros if it did not exist at that moment.

        Args:
            name: The tube.

        Returns:
            Its ``TubeStats``; for a tube the server did not have, ``TubeStats(name=name)``
            (what the server would report for it right after making it).
        """
        stats = self.tubes.get(name)
        return stats if stats is not None else TubeStats(name=name)

    def __repr__(self) -> str:
        server = self.server
        clock = time.strftime("%H:%M:%S", time.localtime(self.at))
        return (
            f"<StatsSnapshot {clock}.{int(self.at * 1000) % 1000:03d}"
            f" ready={server.current_jobs_ready} reserved={server.current_jobs_reserved}"
            f" delayed={server.current_jobs_delayed} buried={server.current_jobs_buried}"
            f" total_jobs={server.total_jobs} tubes={list(self.tubes)}>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's rich display: one row per tube, the server's totals last."""
        server = self.server
        clock = time.strftime("%H:%M:%S", time.localtime(self.at))
        headers = [
            "tube",
            "ready",
            "reserved",
            "delayed",
            "buried",
            "urgent",
            "total jobs",
            "deleted",
            "waiting",
        ]
        rows: list[list[object]] = [
            [
                name,
                stats.current_jobs_ready,
                stats.current_jobs_reserved,
                stats.current_jobs_delayed,
                stats.current_jobs_buried,
                stats.current_jobs_urgent,
                stats.total_jobs,
                stats.cmd_delete,
                stats.current_waiting,
            ]
            for name, stats in self.tubes.items()
        ]
        rows.append(
            [
                "(server)",
                server.current_jobs_ready,
                server.current_jobs_reserved,
                server.current_jobs_delayed,
                server.current_jobs_buried,
                server.current_jobs_urgent,
                server.total_jobs,
                server.cmd_delete,
                server.current_waiting,
            ]
        )
        return _html.grid(
            f"beanstalkd {server.version} at {clock}",
            headers,
            rows,
            note=f"{server.current_connections} connections · up {server.uptime} s",
        )


class StatsStream(CommandObservable[StatsSnapshot]):
    """The cold, endless Observable ``Client.stats_stream`` returns.

    Each subscription polls on its own timer; see ``Client.stats_stream``. It never
    completes, so ``await`` and ``.run()`` (which wait for the last value) refuse it:
    take what you need first, ``stream.pipe(ops.take(1))``.

    Args:
        binding: The client's loop binding.
        send: Sends a command on the client's command connection.
        interval: Seconds between rounds (checked).
        tubes: The tubes to ask about (checked); ``None`` for every tube.
    """

    def __init__(
        self,
        binding: LoopBinding,
        send: Send,
        interval: float,
        tubes: tuple[str, ...] | None,
    ) -> None:
        super().__init__(binding, _start, (send, interval, tubes))
        self.interval = interval
        self.tubes = tubes

    def __repr__(self) -> str:
        tubes = "every tube" if self.tubes is None else f"tubes={list(self.tubes)}"
        return f"<rxbeanstalk stats_stream every {self.interval:g} s, {tubes}>"

    def __await__(self) -> Generator[Any, None, StatsSnapshot]:
        """Refused: the stream never ends, so there is no last value to wait for.

        Raises:
            TypeError: always; ``await stream.pipe(ops.take(1))`` or subscribe instead.
        """
        raise TypeError(
            "stats_stream() never completes, so awaiting it would wait for ever; "
            "use `await stream.pipe(ops.take(1))` or `.subscribe(...)`"
        )

    def run(self, scheduler: abc.SchedulerBase | None = None) -> StatsSnapshot:
        """Refused: the stream never ends, so there is no last value to wait for.

        Raises:
            TypeError: always; ``stream.pipe(ops.take(1)).run()`` or subscribe instead.
        """
        raise TypeError(
            "stats_stream() never completes, so .run() would block for ever; "
            "use `stream.pipe(ops.take(1)).run()` or `.subscribe(...)`"
        )


def make_stats_stream(
    binding: LoopBinding, send: Send, interval: float, tubes: Sequence[str] | None
) -> StatsStream:
    """Check the arguments and build the stream (``Client.stats_stream``).

    Args:
        binding: The client's loop binding.
        send: Sends a command on the client's command connection.
        interval: Seconds between rounds: a finite number > 0.
        tubes: Tube names (duplicates dropped; may be empty: server stats only), or
            ``None`` for every tube ``list-tubes`` names in each round.

    Returns:
        The cold stream.

    Raises:
        InvalidArgumentError: a bad interval or tube name, or ``tubes`` is one ``str``.
    """
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or not interval > 0
    ):
        raise InvalidArgumentError(
            f"interval must be a finite number of seconds > 0, got {interval!r}"
        )
    names: tuple[str, ...] | None = None
    if tubes is not None:
        if isinstance(tubes, str):
            raise InvalidArgumentError("tubes must be a sequence of tube names, not a str")
        names = tuple(dict.fromkeys(check.tube_name(tube) for tube in tubes))
    return StatsStream(binding, send, float(interval), names)


def _start(argument: tuple[Send, float, tuple[str, ...] | None], emitter: Emitter) -> None:
    """Start one subscription's polling (on the client's loop)."""
    if emitter.done:  # disposed before the loop got to it
        return
    send, interval, tubes = argument
    poller = _Poller(send, asyncio.get_running_loop(), emitter, interval, tubes)
    emitter.on_cancel = poller.stop
    poller.start()


class _Poller:
    """One subscription: its timer and the replies of the round in progress."""

    __slots__ = (
        "_at",
        "_due",
        "_emitter",
        "_found",
        "_interval",
        "_loop",
        "_outstanding",
        "_send",
        "_server",
        "_stopped",
        "_timer",
        "_tubes",
    )

    def __init__(
        self,
        send: Send,
        loop: asyncio.AbstractEventLoop,
        emitter: Emitter,
        interval: float,
        tubes: tuple[str, ...] | None,
    ) -> None:
        self._send = send
        self._loop = loop
        self._emitter = emitter
        self._interval = interval
        self._tubes = tubes
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = False
        self._due = 0.0
        self._at = 0.0
        self._server: ServerStats | None = None
        self._found: dict[str, TubeStats] = {}
        self._outstanding = 0

    def start(self) -> None:
        """Run the first round now."""
        self._due = self._loop.time()
        self._round()

    def stop(self) -> None:
        """Cancel the timer; replies of a round in progress will be dropped."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _round(self) -> None:
        self._timer = None
        if self._stopped:
            return
        if self._tubes is None:
            self._send(ListTubes(), _Step(self, self._ask))
        else:
            self._ask(list(self._tubes))

    def _ask(self, tubes: list[str]) -> None:
        # stats and every stats-tube go out in this one loop tick, so the channel writes
        # them together and the server answers them back to back: one coherent moment.
        self._server = None
        self._found = {}
        self._outstanding = 1 + len(tubes)
        self._send(Stats(), _Step(self, self._got_server))
        for tube in tubes:
            self._send(StatsTube(tube), _TubeStep(self, tube))

    def _got_server(self, stats: ServerStats) -> None:
        self._at = time.time()
        self._server = stats
        self._one_done()

    def got_tube(self, tube: str, stats: TubeStats | None) -> None:
        """A ``stats-tube`` reply arrived (``None``: the tube did not exist)."""
        if stats is not None:
            self._found[tube] = stats
        self._one_done()

    def _one_done(self) -> None:
        self._outstanding -= 1
        if self._outstanding or self._server is None:
            return
        snapshot = StatsSnapshot(self._at, self._server, MappingProxyType(self._found))
        self._server = None
        self._found = {}
        self._emitter.next(snapshot)
        if self._stopped:  # the subscriber disposed from inside on_next
            return
        # Fixed rate: due one interval after the last round was due; a round that took
        # longer than that is followed at once (never a burst to catch up).
        self._due = max(self._due + self._interval, self._loop.time())
        self._timer = self._loop.call_at(self._due, self._round)

    def fail(self, error: BaseException) -> None:
        """End the stream with ``error`` (the first failure of a round; later ones drop)."""
        if self._stopped:
            return
        self.stop()
        self._emitter.error(error)

    @property
    def stopped(self) -> bool:
        """Whether replies should be dropped (disposed, or already failed)."""
        return self._stopped


class _Step:
    """Sink of one command of a round: the value to ``then``, an error ends the stream."""

    __slots__ = ("_poller", "_then")

    def __init__(self, poller: _Poller, then: Callable[[Any], None]) -> None:
        self._poller = poller
        self._then = then

    def resolve(self, value: Any) -> None:
        if not self._poller.stopped:
            self._then(value)

    def reject(self, error: BaseException) -> None:
        self._poller.fail(error)


class _TubeStep:
    """Sink of one ``stats-tube``: ``NOT_FOUND`` means the tube is not there right now."""

    __slots__ = ("_poller", "_tube")

    def __init__(self, poller: _Poller, tube: str) -> None:
        self._poller = poller
        self._tube = tube

    def resolve(self, value: TubeStats) -> None:
        if not self._poller.stopped:
            self._poller.got_tube(self._tube, value)

    def reject(self, error: BaseException) -> None:
        # A tube vanishes when its last job goes and nobody uses or watches it, also
        # between list-tubes and stats-tube: that is a state of the server, not a failure.
        if not isinstance(error, NotFoundError):
            self._poller.fail(error)
        elif not self._poller.stopped:
            self._poller.got_tube(self._tube, None)

"""The chaos schedule: one fault every few seconds, through a ``FaultProxy``.

Every ``period`` (uniform between its two bounds, from one fault's start to the next's,
or at once if a fault lasted longer) the schedule applies the next fault and records it
as a :class:`Fault`: when it started, when it was cleared, how many connections it hit
and which seqs were in flight at that moment. A fault's *window*
runs from its start to its clearing plus a margin; a job delivered again is explained
only when such a window lies between its two deliveries.

The faults (``mixed`` runs each kind once per cycle, in a shuffled order):

=================  ==================================================================
``drop``           ``drop_all(rst=True)``: every connection reset at once
``dropfin``        ``drop_all(rst=False)``: every connection closed with a FIN
``stall``          ``stall(short)``: nothing forwarded for less than the command
                   timeout (latency only)
``stall-long``     ``stall(long)``: longer than the command timeout, so commands time
                   out and their connections close
``cut``            ``cut_mid_body(0.5)``: the next reply with a body is cut in half and
                   the connection reset
``garbage-*``      ``inject_garbage(mode=before|corrupt|raw)``: bytes the server never
                   sent, before a reply, over its first bytes, or inside a body
``slow``           ``set_rate(bytes_per_second)`` for a while
``halfopen``       ``drop_all(side="server")``: the server's side closes (its jobs go
                   back), the client's side stays open and hears nothing more
``orphan``         ``drop_all(side="client")``: the client's side closes, the server
                   keeps the connection and its reserved jobs until
                   ``release_orphans()`` (standing in for keepalive)
``restart``        (binlog runs) ``kill -9`` of beanstalkd, then a restart on the same
                   port and binlog directory (the proxy holds the clients' bytes
                   for 50 ms first, so the dying process's counters are read
                   exactly)
=================  ==================================================================
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rxbeanstalk.testing import BeanstalkdServer, FaultProxy

from .ledger import Window

__all__ = ["DROP", "MIXED", "Chaos", "Fault", "FaultTiming", "family"]

DROP: tuple[str, ...] = ("drop",)
MIXED: tuple[str, ...] = (
    "drop",
    "dropfin",
    "stall",
    "stall-long",
    "cut",
    "garbage-before",
    "garbage-corrupt",
    "garbage-raw",
    "slow",
    "halfopen",
    "orphan",
)
_POLL = 0.005
# Before a kill -9, the proxy holds the clients' bytes this long so the server finishes
# what it already got.
_QUIESCE = 0.05


def family(kind: str) -> str:
    """The fault family of a kind: ``garbage-raw`` -> ``garbage``, ``stall-long`` -> ``stall``."""
    return kind.split("-", 1)[0]


@dataclass(frozen=True)
class FaultTiming:
    """How long each fault lasts.

    Attributes:
        stall_short: A ``stall`` (keep it under the clients' command timeout).
        stall_long: A ``stall-long`` (keep it over the command timeout).
        slow_rate: Bytes per second per direction and connection during ``slow``.
        slow_for: How long ``slow`` lasts.
        orphan_hold: How long the server keeps orphans before ``release_orphans``.
        halfopen_hold: How long the client's half of a ``halfopen`` is kept before it is
            reset (the client should have given up on it by then).
        restart_down: How long beanstalkd stays dead between ``kill -9`` and restart.
        margin: Added to a fault's clearing time to end its window (the handler may see
            a job a moment after the wire delivered it).
        trigger_bound: How long ``cut`` and ``garbage`` wait for a reply to hit before the
            schedule moves on (the fault stays armed; its window waits for it).
    """

    stall_short: float = 1.0
    stall_long: float = 3.0
    slow_rate: int = 20_000
    slow_for: float = 1.5
    orphan_hold: float = 1.5
    halfopen_hold: float = 10.0
    restart_down: float = 0.3
    margin: float = 0.5
    trigger_bound: float = 5.0


@dataclass
class Fault:
    """One fault as it happened (times in seconds since the run started)."""

    index: int
    kind: str
    start: float
    cleared: float | None = None
    links: int = 0
    in_flight: list[int] = field(default_factory=list)
    note: str = ""

    def window(self, margin: float) -> Window:
        """The span during which this fault may have put jobs back."""
        end = float("inf") if self.cleared is None else self.cleared + margin
        return Window(self.index, self.start, end)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "index": self.index,
            "kind": self.kind,
            "start": round(self.start, 4),
            "cleared": None if self.cleared is None else round(self.cleared, 4),
            "links": self.links,
            "in_flight": self.in_flight,
            "note": self.note,
        }


class Chaos:
    """Applies faults on a schedule until stopped.

    Args:
        proxy: The proxy every client connection goes through.
        kinds: The fault kinds to cycle through (each once per cycle, shuffled).
        period: Seconds from one fault's start to the next's, uniform in ``(low, high)``.
        timing: Fault durations.
        rng: Random source (seeded for a reproducible schedule).
        clock: Seconds since the run started.
        in_flight: The seqs in flight now (recorded with each fault).
        server: The server, for ``restart`` faults.
        restart_at: Progress fractions (0..1) at which the next fault is a restart.
        progress: Fraction of the run's puts done so far.
        before_restart: Awaited just before each ``kill -9``.
        after_restart: Awaited just after each restart.
    """

    def __init__(
        self,
        proxy: FaultProxy,
        kinds: Sequence[str],
        *,
        period: tuple[float, float],
        timing: FaultTiming,
        rng: random.Random,
        clock: Callable[[], float],
        in_flight: Callable[[], list[int]],
        server: BeanstalkdServer | None = None,
        restart_at: Sequence[float] = (),
        progress: Callable[[], float] = lambda: 0.0,
        before_restart: Callable[[], Awaitable[None]] | None = None,
        after_restart: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        unknown = set(kinds) - set(MIXED)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        if restart_at and server is None:
            raise ValueError("restart faults need the server")
        self.proxy = proxy
        self.kinds = tuple(kinds)
        self.period = period
        self.timing = timing
        self.rng = rng
        self.clock = clock
        self.in_flight = in_flight
        self.server = server
        self.restart_at = sorted(restart_at)
        self.progress = progress
        self.before_restart = before_restart
        self.after_restart = after_restart
        self.faults: list[Fault] = []
        self._cycle: list[str] = []
        self._stopping = asyncio.Event()
        self._watchers: set[asyncio.Task[None]] = set()
        self._halfopen_release: asyncio.TimerHandle | None = None

    # -- schedule ---------------------------------------------------------------------

    async def run(self) -> None:
        """Apply faults until :meth:`stop` (a fault in progress is finished first)."""
        last = self.clock()
        while not self._stopping.is_set() and (self.kinds or self.restart_at):
            # ``period`` runs from one fault's start to the next one's (at once, if the
            # fault took longer).
            wait = max(0.0, last + self.rng.uniform(*self.period) - self.clock())
            try:
                await asyncio.wait_for(self._stopping.wait(), wait)
                return
            except TimeoutError:
                pass
            last = self.clock()
            if self.restart_at and self.progress() >= self.restart_at[0]:
                self.restart_at.pop(0)
                await self.apply("restart")
            elif self.kinds:
                await self.apply(self._next_kind())

    def stop(self) -> None:
        """Stop after the fault in progress, if any."""
        self._stopping.set()

    async def clear(self) -> None:
        """Undo whatever is still in effect: resume, full speed, no orphans."""
        if self._halfopen_release is not None:
            self._halfopen_release.cancel()
            self._halfopen_release = None
        self.proxy.resume()
        self.proxy.set_rate(None)
        self.proxy.release_orphans()

    def finish(self) -> None:
        """Stop watching for armed faults; one that never hit keeps an open window."""
        for watcher in self._watchers:
            watcher.cancel()
        for fault in self.faults:
            if fault.cleared is None and not fault.note:
                fault.note = "armed, never hit a reply"

    def windows(self) -> list[Window]:
        """Every fault's window."""
        return [fault.window(self.timing.margin) for fault in self.faults]

    def _next_kind(self) -> str:
        if not self._cycle:
            self._cycle = list(self.kinds)
            self.rng.shuffle(self._cycle)
        return self._cycle.pop()

    # -- faults -----------------------------------------------------------------------

    async def apply(self, kind: str) -> Fault:
        """Apply one fault now and wait until it is cleared (or, if armed, hits)."""
        proxy, timing = self.proxy, self.timing
        fault = Fault(len(self.faults), kind, self.clock(), in_flight=self.in_flight())
        self.faults.append(fault)
        fault.links = len(proxy.open_links)
        if kind in ("drop", "dropfin"):
            fault.links = proxy.drop_all(rst=kind == "drop")
        elif kind in ("stall", "stall-long"):
            seconds = timing.stall_short if kind == "stall" else timing.stall_long
            proxy.stall(seconds)
            await asyncio.sleep(seconds)
            proxy.resume()
            fault.note = f"{seconds:g} s"
        elif kind == "slow":
            proxy.set_rate(timing.slow_rate)
            await asyncio.sleep(timing.slow_for)
            proxy.set_rate(None)
            fault.note = f"{timing.slow_rate} B/s for {timing.slow_for:g} s"
        elif kind == "halfopen":
            fault.links = proxy.drop_all(side="server")
            if self._halfopen_release is not None:
                self._halfopen_release.cancel()
            self._halfopen_release = asyncio.get_running_loop().call_later(
                timing.halfopen_hold, proxy.release_orphans
            )
        elif kind == "orphan":
            fault.links = proxy.drop_all(side="client")
            await asyncio.sleep(timing.orphan_hold)
            released = proxy.release_orphans()
            fault.note = f"{released} orphans released after {timing.orphan_hold:g} s"
        elif kind == "cut" or family(kind) == "garbage":
            if kind == "cut":
                proxy.cut_mid_body(0.5)
            else:
                proxy.inject_garbage(mode=kind.split("-", 1)[1])  # type: ignore[arg-type]
            await self._wait_hit(fault)
            return fault
        elif kind == "restart":
            await self._restart(fault)
        else:  # pragma: no cover - kinds are checked in __init__
            raise ValueError(kind)
        fault.cleared = self.clock()
        return fault

    async def _wait_hit(self, fault: Fault) -> None:
        """Wait until the armed fault hit a reply; its window ends then (plus margin)."""

        async def watch() -> None:
            while _armed(self.proxy):
                await asyncio.sleep(_POLL)
            fault.cleared = self.clock()
            fault.in_flight = sorted(set(fault.in_flight) | set(self.in_flight()))

        watcher = asyncio.get_running_loop().create_task(watch())
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        done, _ = await asyncio.wait({watcher}, timeout=self.timing.trigger_bound)
        if not done:
            fault.note = f"not hit within {self.timing.trigger_bound:g} s; still armed"

    async def _restart(self, fault: Fault) -> None:
        server = self.server
        assert server is not None  # checked in __init__
        # Hold the clients' bytes for a moment first, so that ``before_restart`` reads
        # the counters of the process exactly as it will die.
        self.proxy.stall()
        await asyncio.sleep(_QUIESCE)
        if self.before_restart is not None:
            await self.before_restart()
        old_pid = server.pid
        await asyncio.to_thread(server.kill)
        self.proxy.resume()
        await asyncio.sleep(self.timing.restart_down)
        await asyncio.to_thread(server.restart)
        fault.note = f"kill -9 pid {old_pid}, restarted as pid {server.pid}"
        if self.after_restart is not None:
            await self.after_restart()


def _armed(proxy: FaultProxy) -> bool:
    """Whether a ``cut`` or ``garbage`` fault is armed and has not hit a reply yet.

    The window of an armed fault must end only once it hit.
    """
    return proxy.armed

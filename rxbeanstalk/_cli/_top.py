"""``top``: a live table of every tube, its depth by state and its throughput.

A frame comes from one *snapshot*: ``list-tubes``, then ``stats`` and one ``stats-tube``
per tube, pipelined on the command connection so the whole frame costs two round trips.
Rates are differences between two consecutive snapshots divided by the time between them,
so the first frame has none (``-``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import time
from typing import Any, TextIO

from .._client import Client
from ..errors import NotFoundError, TransportError
from ..protocol import ServerStats, TubeStats
from ._format import duration, plural, rate, table_lines
from ._terminal import Screen

__all__ = ["Snapshot", "TubeRow", "frame_json", "render", "run_top", "take_snapshot", "tube_rows"]

_HEADER = (
    *("TUBE", "READY", "RESERVED", "DELAYED", "BURIED", "TOTAL"),
    *("PUT/S", "DEL/S", "WAITING", "PAUSED"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's and every tube's statistics at one moment.

    Attributes:
        at: ``time.monotonic()`` when the replies arrived, for rates.
        wall: ``time.time()`` at the same moment, for display.
        server: The ``stats`` reply.
        tubes: One ``stats-tube`` reply per tube, sorted by name.
    """

    at: float
    wall: float
    server: ServerStats
    tubes: tuple[TubeStats, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TubeRow:
    """One line of the table.

    Attributes:
        name: The tube.
        ready: Ready jobs.
        reserved: Reserved jobs.
        delayed: Delayed jobs.
        buried: Buried jobs.
        total_jobs: Jobs ever put into the tube (the TOTAL column).
        put_rate: Jobs put per second since the last snapshot, ``None`` on the first.
        delete_rate: Jobs deleted per second since the last snapshot, ``None`` likewise.
        waiting: Connections waiting in a reserve on the tube.
        pause_time_left: Seconds until a paused tube resumes (0 when not paused).
    """

    name: str
    ready: int
    reserved: int
    delayed: int
    buried: int
    total_jobs: int
    put_rate: float | None
    delete_rate: float | None
    waiting: int
    pause_time_left: int


async def take_snapshot(client: Client) -> Snapshot:
    """Ask the server for ``stats`` and every tube's ``stats-tube``.

    Args:
        client: The client to ask with.

    Returns:
        The snapshot; a tube that disappears between ``list-tubes`` and its
        ``stats-tube`` is left out.

    Raises:
        BeanstalkError: A command failed (other than ``NOT_FOUND`` for a vanished tube).
    """

    async def tube(name: str) -> TubeStats | None:
        try:
            return await client.stats_tube(name)
        except NotFoundError:  # emptied and unwatched since list-tubes: it is gone
            return None

    names = await client.list_tubes()
    # Every command starts in the same loop tick, so they all go out in one write.
    server, tubes = await asyncio.gather(
        client.stats(), asyncio.gather(*(tube(name) for name in names))
    )
    present = sorted((t for t in tubes if t is not None), key=lambda t: t.name)
    return Snapshot(time.monotonic(), time.time(), server, tuple(present))


def _per_second(now: int, before: int | None, seconds: float) -> float | None:
    # A counter that went down belongs to a tube that was deleted and created again.
    if before is None or seconds <= 0 or now < before:
        return None
    return (now - before) / seconds


def tube_rows(current: Snapshot, previous: Snapshot | None) -> list[TubeRow]:
    """The table's rows, with rates against the previous snapshot.

    Args:
        current: The latest snapshot.
        previous: The one before, or ``None``.

    Returns:
        One row per tube of ``current``, in name order.
    """
    before = {t.name: t for t in previous.tubes} if previous is not None else {}
    seconds = current.at - previous.at if previous is not None else 0.0
    rows = []
    for tube in current.tubes:
        old = before.get(tube.name)
        rows.append(
            TubeRow(
                name=tube.name,
                ready=tube.current_jobs_ready,
                reserved=tube.current_jobs_reserved,
                delayed=tube.current_jobs_delayed,
                buried=tube.current_jobs_buried,
                total_jobs=tube.total_jobs,
                put_rate=_per_second(tube.total_jobs, old.total_jobs if old else None, seconds),
                delete_rate=_per_second(tube.cmd_delete, old.cmd_delete if old else None, seconds),
                waiting=tube.current_waiting,
                pause_time_left=tube.pause_time_left,
            )
        )
    return rows


def _server_rates(current: Snapshot, previous: Snapshot | None) -> tuple[float | None, ...]:
    if previous is None:
        return None, None
    seconds = current.at - previous.at
    now, old = current.server, previous.server
    return (
        _per_second(now.total_jobs, old.total_jobs, seconds),
        _per_second(now.cmd_delete, old.cmd_delete, seconds),
    )


def render(
    current: Snapshot,
    previous: Snapshot | None,
    address: str,
    *,
    height: int | None = None,
    status: str | None = None,
    footer: str | None = None,
) -> list[str]:
    """Draw one frame as lines of text.

    Args:
        current: The latest snapshot.
        previous: The one before it, for rates, or ``None``.
        address: The server's address, for the title.
        height: The terminal's height: tubes that do not fit are summed up in one line.
        status: A line to show under the summary (a lost connection), if any.
        footer: The last line (key help), if any.

    Returns:
        The lines, without newlines; the caller cuts them to the terminal's width.
    """
    server = current.server
    put_rate, delete_rate = _server_rates(current, previous)
    clock = time.strftime("%H:%M:%S", time.localtime(current.wall))
    lines = [
        f"rxbeanstalk top  {address}  beanstalkd {server.version}  pid {server.pid}  "
        f"up {duration(server.uptime)}  {clock}",
        f"jobs: {server.current_jobs_ready} ready, {server.current_jobs_reserved} reserved, "
        f"{server.current_jobs_delayed} delayed, {server.current_jobs_buried} buried; "
        f"{server.total_jobs} put ({rate(put_rate)}/s), {rate(delete_rate)} deleted/s",
        f"connections: {server.current_connections} "
        f"({plural(server.current_producers, 'producer')}, "
        f"{plural(server.current_workers, 'worker')}, {server.current_waiting} waiting); "
        f"{plural(server.current_tubes, 'tube')}"
        + ("; DRAINING: no puts" if server.draining else ""),
    ]
    if status:
        lines.append(status)
    lines.append("")
    rows = tube_rows(current, previous)
    tail = ["", footer] if footer else []
    if height is not None:
        room = max(height - len(lines) - len(tail) - 1, 1)  # - 1 for the table's header
        if len(rows) > room:
            hidden = len(rows) - room + 1
            rows = rows[: room - 1]
            tail = [f"... and {hidden} more tubes (make the window taller)", *tail]
    cells = [
        (
            row.name,
            str(row.ready),
            str(row.reserved),
            str(row.delayed),
            str(row.buried),
            str(row.total_jobs),
            rate(row.put_rate),
            rate(row.delete_rate),
            str(row.waiting),
            f"{row.pause_time_left}s" if row.pause_time_left > 0 else "-",
        )
        for row in rows
    ]
    return [*lines, *table_lines(_HEADER, cells), *tail]


def frame_json(current: Snapshot, previous: Snapshot | None, address: str) -> dict[str, Any]:
    """One frame for ``--json``: the server's totals and one object per tube.

    Args:
        current: The latest snapshot.
        previous: The one before it, for rates, or ``None``.
        address: The server's address.

    Returns:
        A dictionary ready for ``json.dumps``.
    """
    server = current.server
    put_rate, delete_rate = _server_rates(current, previous)
    return {
        "server": address,
        "time": current.wall,
        "version": server.version,
        "jobs": {
            "ready": server.current_jobs_ready,
            "reserved": server.current_jobs_reserved,
            "delayed": server.current_jobs_delayed,
            "buried": server.current_jobs_buried,
            "total_jobs": server.total_jobs,
            "put_rate": put_rate,
            "delete_rate": delete_rate,
        },
        "tubes": [dataclasses.asdict(row) for row in tube_rows(current, previous)],
    }


async def run_top(
    client: Client,
    address: str,
    *,
    interval: float,
    iterations: int | None,
    once: bool,
    as_json: bool,
    stdin: TextIO,
    stdout: TextIO,
) -> None:
    """Show frames until ``q``, SIGTERM, Ctrl-C (a cancellation) or the iteration count.

    On a terminal (and without ``--once`` or ``--json``) frames are drawn full-screen,
    and the terminal is restored however this ends. Otherwise each frame is printed as
    plain text after the previous one (a blank line between), or as one JSON line.

    Args:
        client: The client to poll with.
        address: The server's address, for the title.
        interval: Seconds between frames.
        iterations: Stop after this many frames; ``None`` for no limit.
        once: Print one plain frame and stop.
        as_json: Print each frame as one line of JSON.
        stdin: Where the ``q`` key comes from (on a terminal).
        stdout: Where frames go.

    Raises:
        BeanstalkError: A command failed. Full-screen, a lost connection after the first
            frame is shown and retried instead.
    """
    limit = 1 if once else iterations
    interactive = not once and not as_json and _isatty(stdout)
    stop = asyncio.Event()

    def on_key(keys: bytes) -> None:
        if b"q" in keys or b"Q" in keys:
            stop.set()

    previous: Snapshot | None = None
    frames = 0
    screen = Screen(stdin, stdout, on_key) if interactive else None
    with contextlib.ExitStack() as stack:
        if screen is not None:
            stack.enter_context(screen)
            # `kill` must not leave the terminal in cbreak mode on the alternate screen.
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            stack.callback(loop.remove_signal_handler, signal.SIGTERM)
        while not stop.is_set():
            status = None
            try:
                current = await take_snapshot(client)
            except TransportError as error:
                if screen is None or previous is None:
                    raise
                # Keep the last frame on screen; the client reconnects on the next poll.
                current, status = previous, f"! {error}; retrying every {interval:g} s"
            if as_json:
                stdout.write(json.dumps(frame_json(current, previous, address)) + "\n")
                stdout.flush()
            elif screen is not None:
                height = screen.size()[1]
                footer = f"q: quit   refreshing every {interval:g} s"
                screen.draw(
                    render(current, previous, address, height=height, status=status, footer=footer)
                )
            else:
                text = "\n".join(render(current, previous, address))
                stdout.write(("\n" if frames else "") + text + "\n")
                stdout.flush()
            previous = current
            frames += 1
            if limit is not None and frames >= limit:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

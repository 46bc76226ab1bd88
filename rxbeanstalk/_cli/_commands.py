"""The handlers of the commands, one coroutine each.

``stats``, ``tubes``, ``put``, ``peek``, ``kick``, ``delete``, ``pause``, ``top`` and
``drain``: each handler is a coroutine taking a ``Context``; it prints its result and returns, or
raises. ``NOT_FOUND`` means something different for each command, so each turns it into
its own message here; every other error is explained once, in ``_failures.explain``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable

from ..errors import NotFoundError
from ._context import Context
from ._drain import DrainResult, drain
from ._failures import CliError
from ._format import (
    body_json,
    key_value_lines,
    plural,
    server_stats_sections,
    stats_json,
    stats_rows,
)
from ._progress import ProgressBar
from ._top import run_top

__all__ = [
    "delete_command",
    "drain_command",
    "kick_command",
    "pause_command",
    "peek_command",
    "put_command",
    "read_bodies",
    "stats_command",
    "top_command",
    "tubes_command",
]

T = TypeVar("T")


async def stats_command(ctx: Context) -> None:
    """``stats [TUBE]``: the server's statistics, or one tube's.

    Raises:
        CliError: The tube does not exist.
    """
    tube: str | None = ctx.args.tube
    if tube is not None:
        try:
            tube_stats = await ctx.client.stats_tube(tube)
        except NotFoundError:
            raise CliError(f"tube {tube!r} not found") from None
        if ctx.out.as_json:
            ctx.out.json(stats_json(tube_stats))
        else:
            ctx.out.lines(key_value_lines(stats_rows(tube_stats)))
        return
    stats = await ctx.client.stats()
    if ctx.out.as_json:
        ctx.out.json(stats_json(stats))
        return
    lines: list[str] = []
    for title, rows in server_stats_sections(stats):
        if lines:
            lines.append("")
        lines.append(title)
        lines.extend(key_value_lines(rows, indent="  "))
    ctx.out.lines(lines)


async def tubes_command(ctx: Context) -> None:
    """``tubes``: every tube on the server, in name order."""
    names = sorted(await ctx.client.list_tubes())
    if ctx.out.as_json:
        ctx.out.json(names)
    else:
        ctx.out.lines(names)


def read_bodies(args: argparse.Namespace) -> list[bytes]:
    """The job bodies of ``put``, read before the event loop starts.

    stdin is read to its end first, so that nothing is sent for input that could not be
    read, and so that Ctrl-C during the read is an ordinary interruption.

    Args:
        args: ``body`` (text, ``-`` or ``None`` for stdin) and ``lines``.

    Returns:
        One body; with ``--lines`` one per non-empty line, without its line end.
    """
    body: str | None = args.body
    # os.fsencode gives back the exact bytes of the command line, even non-UTF-8 ones.
    data = sys.stdin.buffer.read() if body is None or body == "-" else os.fsencode(body)
    if not args.lines:
        return [data]
    return [line for line in (raw.removesuffix(b"\r") for raw in data.split(b"\n")) if line]


async def _each(observable: Observable[T], on_next: Callable[[T], None]) -> None:
    """Subscribe and wait for completion, handing every value to ``on_next``."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_error(error: Exception) -> None:
        if not done.done():
            done.set_exception(error)

    def on_completed() -> None:
        if not done.done():
            done.set_result(None)

    subscription = observable.subscribe(on_next, on_error, on_completed)
    try:
        await done
    finally:
        subscription.dispose()


async def put_command(ctx: Context) -> None:
    """``put TUBE [BODY|-]``: put one job, or one per line with ``--lines``.

    The ids of the jobs that were put are printed even when a later put fails, since
    those jobs exist.
    """
    args = ctx.args
    ids: list[int] = []
    try:
        await _each(
            ctx.client.put_many(
                args.bodies, priority=args.pri, delay=args.delay, ttr=args.ttr, tube=args.tube
            ),
            ids.append,
        )
    finally:
        if ctx.out.as_json:
            ctx.out.json({"tube": args.tube, "ids": ids})
        else:
            ctx.out.lines(str(job_id) for job_id in ids)


async def peek_command(ctx: Context) -> None:
    """``peek TUBE {ready,delayed,buried}``: the next job in that state, with its stats.

    Raises:
        CliError: The tube has no job in that state.
    """
    tube: str = ctx.args.tube
    state: str = ctx.args.state
    client = ctx.client
    await client.use(tube)
    peeks = {
        "ready": client.peek_ready,
        "delayed": client.peek_delayed,
        "buried": client.peek_buried,
    }
    try:
        job = await peeks[state]()
    except NotFoundError:
        raise CliError(f"no {state} job in tube {tube!r}") from None
    try:
        stats = await client.stats_job(job.id)
    except NotFoundError:
        stats = None  # deleted in between: the body we have is all there is
    if ctx.out.as_json:
        ctx.out.json({"id": job.id, **body_json(job.body), "stats": stats and stats_json(stats)})
        return
    rows = stats_rows(stats) if stats is not None else [("id", str(job.id))]
    rows.append(("body", plural(len(job.body), "byte")))
    lines = key_value_lines(rows)
    try:
        text = job.body.decode("utf-8")
    except UnicodeDecodeError:
        lines += ["", "(not UTF-8 text: --json shows the body in base64)"]
    else:
        lines += ["", *text.splitlines()]
    ctx.out.lines(lines)


async def kick_command(ctx: Context) -> None:
    """``kick TUBE N``: move up to N buried jobs (or, if none, delayed jobs) to ready."""
    tube: str = ctx.args.tube
    await ctx.client.use(tube)
    kicked = await ctx.client.kick(ctx.args.bound)
    if ctx.out.as_json:
        ctx.out.json({"tube": tube, "kicked": kicked})
    else:
        ctx.out.lines([f"kicked {plural(kicked, 'job')} in tube {tube!r}"])


async def delete_command(ctx: Context) -> None:
    """``delete ID``: delete a ready, delayed or buried job.

    Raises:
        CliError: No such job (or another client has it reserved).
    """
    job_id: int = ctx.args.id
    try:
        await ctx.client.delete(job_id)
    except NotFoundError:
        raise CliError(f"job {job_id} not found") from None
    if ctx.out.as_json:
        ctx.out.json({"deleted": job_id})
    else:
        ctx.out.lines([f"deleted job {job_id}"])


async def pause_command(ctx: Context) -> None:
    """``pause TUBE SECONDS``: no job of the tube is reserved for that long.

    Raises:
        CliError: The tube does not exist.
    """
    tube: str = ctx.args.tube
    seconds: int = ctx.args.seconds
    try:
        await ctx.client.pause_tube(tube, seconds)
    except NotFoundError:
        raise CliError(f"tube {tube!r} not found") from None
    if ctx.out.as_json:
        ctx.out.json({"tube": tube, "paused": seconds})
    else:
        ctx.out.lines([f"paused tube {tube!r} for {seconds} s"])


async def top_command(ctx: Context) -> None:
    """``top``: the live view of every tube (see ``_top``)."""
    args = ctx.args
    await run_top(
        ctx.client,
        ctx.address,
        interval=args.interval,
        iterations=args.iterations,
        once=args.once,
        as_json=ctx.out.as_json,
        stdin=sys.stdin,
        stdout=ctx.out.stdout,
    )


async def drain_command(ctx: Context) -> None:
    """``drain TUBE``: delete (or bury) every job, then report how many.

    The report goes to stdout however the drain ends (done, failed, interrupted), since
    the jobs it names are gone. A paused tube gives no job until its pause ends: when
    that is why ready jobs were left, a note on stderr says so.
    """
    args = ctx.args
    tube: str = args.tube
    result = DrainResult()
    progress = ProgressBar(ctx.out.stderr, f"drain {tube}", enabled=not args.quiet)
    try:
        await drain(
            ctx.client,
            tube,
            bury=args.bury,
            idle=args.idle,
            limit=args.limit,
            progress=progress,
            result=result,
        )
    finally:
        verb = "buried" if args.bury else "deleted"
        if ctx.out.as_json:
            ctx.out.json({"tube": tube, verb: result.settled, "seconds": round(result.seconds, 3)})
        else:
            ctx.out.lines(
                [
                    f"{verb} {plural(result.settled, 'job')} from tube {tube!r} "
                    f"in {result.seconds:.2f} s"
                ]
            )
    try:
        stats = await ctx.client.stats_tube(tube)
    except NotFoundError:
        return  # drained, and gone with nobody using it
    if stats.pause_time_left > 0 and stats.current_jobs_ready > 0:
        ctx.out.stderr.write(
            f"rxbeanstalk: note: tube {tube!r} is paused for {stats.pause_time_left} s more; "
            f"{plural(stats.current_jobs_ready, 'ready job')} left in it\n"
        )

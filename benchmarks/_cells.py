"""What one benchmark cell measures, for each client.

Every function here talks to a server that is already running and returns a raw
measurement: elapsed seconds for a throughput cell (the clock starts once the client is
connected, except for ``reserve_stream``, whose lanes connecting is part of the drain a
user sees), latency samples in nanoseconds, or memory figures. Placement (which core),
repetition and ratios are the caller's business (``_worker`` and ``run``, or ``guard``).

greenstalk and aiostalk are imported only when their cells run: they live in
``.venv-bench`` alone, and the guard must run in the test environments without them.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import socket
import time
import tracemalloc
from collections.abc import Callable
from types import ModuleType
from typing import Any

from rxbeanstalk import Client, Job
from rxbeanstalk.operators import Action, Outcome, process

from . import _raw

# Per-command Observables kept in flight at once (the "1,000 in flight").
WINDOW = 1000
# Unmeasured commands that first exercise each latency path.
LATENCY_WARMUP = 200
# Lanes must all be waiting within this many seconds, or the memory cell fails.
LANES_READY_TIMEOUT = 180.0


class PeerMissingError(RuntimeError):
    """A peer client (greenstalk, aiostalk) is not installed in this environment."""


def peer(name: str) -> ModuleType:
    """Import a peer client by name.

    Args:
        name: ``"greenstalk"`` or ``"aiostalk"``.

    Returns:
        The module.

    Raises:
        PeerMissingError: It is not installed (``make bench`` installs both).
    """
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise PeerMissingError(
            f"{name} is not installed here; `make bench` runs the suite in .venv-bench, "
            "which has it (pip install -r benchmarks/requirements.txt)"
        ) from error


# ------------------------------------------------------------------------------- put


async def put_raw(host: str, port: int, jobs: int, body: bytes) -> float:
    """RAW: ``jobs`` puts in pipelined batches.

    Returns:
        Elapsed seconds.
    """
    conn = await _raw.connect(host, port)
    try:
        start = time.perf_counter()
        await _raw.put_all(conn, jobs, body)
        return time.perf_counter() - start
    finally:
        conn.close()


def put_greenstalk(host: str, port: int, jobs: int, body: bytes) -> float:
    """greenstalk: ``jobs`` puts, each waiting for its reply.

    Returns:
        Elapsed seconds.
    """
    greenstalk = peer("greenstalk")
    with greenstalk.Client((host, port), encoding=None) as client:
        put = client.put
        start = time.perf_counter()
        for _ in range(jobs):
            put(body)
        return time.perf_counter() - start


async def put_aiostalk(host: str, port: int, jobs: int, body: bytes) -> float:
    """aiostalk: ``jobs`` awaited puts, one at a time (it cannot pipeline).

    Returns:
        Elapsed seconds.
    """
    aiostalk = peer("aiostalk")
    async with aiostalk.Client((host, port), encoding=None) as client:
        put = client.put
        start = time.perf_counter()
        for _ in range(jobs):
            await put(body)
        return time.perf_counter() - start


async def _rx_client_ready(client: Client, body: bytes) -> None:
    # A few awaited puts connect the command connection and apply the used tube, so the
    # clock measures commands, not the connect.
    for _ in range(3):
        await client.put(body)


async def put_rx_observables(
    host: str, port: int, jobs: int, body: bytes, *, window: int = WINDOW, tube: str = "default"
) -> float:
    """rxbeanstalk: one ``client.put(...)`` Observable per job, ``window`` in flight.

    Each emitted id subscribes the next put, so replies that arrive together start the
    next puts in the same loop tick, where the client pipelines them into one write.

    Args:
        host: Server host.
        port: Server port.
        jobs: How many puts.
        body: Each job's body.
        window: Subscriptions in flight at once.
        tube: The tube to put into (set as the client's used tube).

    Returns:
        Elapsed seconds.

    Raises:
        BeanstalkError: A put failed.
    """
    client = Client(host, port, use=tube)
    try:
        await _rx_client_ready(client, body)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        issued = 0
        landed = 0

        def on_error(error: Exception) -> None:
            if not done.done():
                done.set_exception(error)

        def on_next(_: int) -> None:
            nonlocal issued, landed
            landed += 1
            if issued < jobs:
                issued += 1
                client.put(body).subscribe(on_next, on_error)
            elif landed == jobs and not done.done():
                done.set_result(None)

        start = time.perf_counter()
        issued = min(window, jobs)
        for _ in range(issued):
            client.put(body).subscribe(on_next, on_error)
        await done
        return time.perf_counter() - start
    finally:
        client.close()


async def put_rx_many(host: str, port: int, jobs: int, body: bytes) -> float:
    """rxbeanstalk: one ``put_many`` over ``jobs`` bodies, awaited.

    The clock includes the call itself, which validates and encodes every body.

    Returns:
        Elapsed seconds.

    Raises:
        BeanstalkError: A put failed.
    """
    client = Client(host, port)
    try:
        await _rx_client_ready(client, body)
        bodies = [body] * jobs
        start = time.perf_counter()
        await client.put_many(bodies)
        return time.perf_counter() - start
    finally:
        client.close()


# ----------------------------------------------------------------------------- drain


async def drain_raw(
    host: str, port: int, jobs: int, body_size: int, tube: str = "default"
) -> float:
    """RAW: reserve and delete ``jobs`` ready jobs in pipelined batches.

    Returns:
        Elapsed seconds.
    """
    conn = await _raw.connect(host, port)
    try:
        await _raw.watch_only(conn, tube)
        start = time.perf_counter()
        await _raw.drain(conn, jobs, body_size)
        return time.perf_counter() - start
    finally:
        conn.close()


def drain_greenstalk(host: str, port: int, jobs: int) -> float:
    """greenstalk: reserve, then delete, one job at a time.

    Returns:
        Elapsed seconds.
    """
    greenstalk = peer("greenstalk")
    with greenstalk.Client((host, port), encoding=None) as client:
        reserve, delete = client.reserve, client.delete
        start = time.perf_counter()
        for _ in range(jobs):
            delete(reserve())
        return time.perf_counter() - start


async def drain_aiostalk(host: str, port: int, jobs: int) -> float:
    """aiostalk: awaited reserve, then awaited delete, one job at a time.

    Returns:
        Elapsed seconds.
    """
    aiostalk = peer("aiostalk")
    async with aiostalk.Client((host, port), encoding=None) as client:
        reserve, delete = client.reserve, client.delete
        start = time.perf_counter()
        for _ in range(jobs):
            await delete(await reserve())
        return time.perf_counter() - start


async def drain_rx_stream(
    host: str, port: int, jobs: int, lanes: int, tube: str = "default"
) -> float:
    """rxbeanstalk: ``reserve_stream(max_in_flight=lanes).pipe(process(handler))``.

    The handler is an empty coroutine, so what is measured is the stream, ``process``
    and the delete it sends. The clock stops at the ``jobs``-th ``DELETED`` outcome.

    Args:
        host: Server host.
        port: Server port.
        jobs: How many jobs the tube holds, all to be drained.
        lanes: ``max_in_flight``.
        tube: The tube to drain.

    Returns:
        Elapsed seconds.

    Raises:
        RuntimeError: A job was not deleted.
        BeanstalkError: The stream failed.
    """
    client = Client(host, port, use=tube, watch=(tube,))
    try:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deleted = 0

        async def handler(_: Job) -> None:
            return None

        def on_next(outcome: Outcome) -> None:
            nonlocal deleted
            if outcome.action is not Action.DELETED:
                on_error(RuntimeError(f"job {outcome.job.id} not deleted: {outcome.reason}"))
                return
            deleted += 1
            if deleted == jobs and not done.done():
                done.set_result(None)

        def on_error(error: Exception) -> None:
            if not done.done():
                done.set_exception(error)

        start = time.perf_counter()
        subscription = (
            client.reserve_stream(max_in_flight=lanes)
            .pipe(process(handler))
            .subscribe(on_next, on_error)
        )
        try:
            await done
            return time.perf_counter() - start
        finally:
            subscription.dispose()
    finally:
        client.close()


# --------------------------------------------------------------------------- latency


def _timed(samples: int, call: Callable[[], object]) -> list[int]:
    for _ in range(LATENCY_WARMUP):
        call()
    clock = time.perf_counter_ns
    out: list[int] = []
    for _ in range(samples):
        begin = clock()
        call()
        out.append(clock() - begin)
    return out


async def _atimed(samples: int, call: Callable[[], Any]) -> list[int]:
    for _ in range(LATENCY_WARMUP):
        await call()
    clock = time.perf_counter_ns
    out: list[int] = []
    for _ in range(samples):
        begin = clock()
        await call()
        out.append(clock() - begin)
    return out


async def latency_raw(host: str, port: int, samples: int, body: bytes) -> list[int]:
    """RAW: one put on the bare protocol, then wait for its reply.

    Returns:
        Per-put latencies in nanoseconds.
    """
    conn = await _raw.connect(host, port)
    command = _raw.put_command(body)
    try:
        return await _atimed(samples, lambda: conn.send(command, 1))
    finally:
        conn.close()


def latency_greenstalk(host: str, port: int, samples: int, body: bytes) -> list[int]:
    """greenstalk: one blocking put.

    Returns:
        Per-put latencies in nanoseconds.
    """
    greenstalk = peer("greenstalk")
    with greenstalk.Client((host, port), encoding=None) as client:
        return _timed(samples, lambda: client.put(body))


async def latency_aiostalk(host: str, port: int, samples: int, body: bytes) -> list[int]:
    """aiostalk: one awaited put.

    Returns:
        Per-put latencies in nanoseconds.
    """
    aiostalk = peer("aiostalk")
    async with aiostalk.Client((host, port), encoding=None) as client:
        return await _atimed(samples, lambda: client.put(body))


async def latency_rx_await(host: str, port: int, samples: int, body: bytes) -> list[int]:
    """rxbeanstalk: ``await client.put(body)`` on the client's own loop.

    Returns:
        Per-put latencies in nanoseconds.
    """
    client = Client(host, port)
    try:

        async def put() -> int:
            return await client.put(body)

        return await _atimed(samples, put)
    finally:
        client.close()


def latency_rx_run(host: str, port: int, samples: int, body: bytes) -> list[int]:
    """rxbeanstalk: ``client.put(body).run()`` from a plain thread (private loop thread).

    Returns:
        Per-put latencies in nanoseconds.
    """
    with Client(host, port) as client:
        return _timed(samples, lambda: client.put(body).run())


def percentile(samples: list[int], fraction: float) -> float:
    """Nearest-rank percentile.

    Args:
        samples: Values (need not be sorted).
        fraction: 0.5 for the median, 0.99 for p99.

    Returns:
        The value below which ``fraction`` of the samples lie.
    """
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return float(ordered[rank])


# ---------------------------------------------------------------------------- memory


def server_stats(host: str, port: int) -> dict[str, str]:
    """Read ``stats`` over a blocking socket of its own (a few ms; fine on the loop here).

    Returns:
        Every ``key: value`` of the reply, as strings.

    Raises:
        OSError: The server could not be reached.
        RuntimeError: The reply was not ``OK``.
    """
    with socket.create_connection((host, port), timeout=10.0) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while True:
            head, sep, rest = data.partition(b"\r\n")
            if sep:
                if not head.startswith(b"OK "):
                    raise RuntimeError(f"stats answered {head!r}")
                if len(rest) >= int(head.split()[1]) + 2:
                    break
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection during stats")
            data += chunk
    stats: dict[str, str] = {}
    for line in rest.decode().splitlines():
        key, colon, value = line.partition(":")
        if colon:
            stats[key.strip()] = value.strip()
    return stats


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _until_waiting(
    host: str, port: int, lanes: int, failed: list[Exception] | None = None
) -> None:
    deadline = time.monotonic() + LANES_READY_TIMEOUT
    while int(server_stats(host, port)["current-waiting"]) < lanes:
        if failed:
            raise failed[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{lanes} connections were not all waiting in a reserve in time")
        await asyncio.sleep(0.1)


class _Footprint:
    """Client memory before and after something, by tracemalloc and by RSS.

    RSS grows with tracemalloc's own bookkeeping too; that part is taken out again.
    """

    def __init__(self) -> None:
        gc.collect()
        tracemalloc.start()
        self._traced = tracemalloc.get_traced_memory()[0]
        self._overhead = tracemalloc.get_tracemalloc_memory()
        self._rss = _rss_bytes()

    def measure(self, count: int) -> dict[str, float]:
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - self._traced
        overhead = tracemalloc.get_tracemalloc_memory() - self._overhead
        rss = _rss_bytes() - self._rss - overhead
        tracemalloc.stop()
        return {
            "lanes": float(count),
            "traced_bytes": float(traced),
            "rss_bytes": float(rss),
            "traced_per_lane": traced / count,
            "rss_per_lane": rss / count,
        }


async def memory_raw(host: str, port: int, lanes: int) -> dict[str, float]:
    """RAW: ``lanes`` bare-Protocol connections, each waiting in a ``reserve``.

    Returns:
        Memory figures (see ``_Footprint.measure``).
    """
    footprint = _Footprint()
    protocols = await _raw.open_idle(host, port, lanes)
    try:
        await _until_waiting(host, port, lanes)
        return footprint.measure(lanes)
    finally:
        _raw.close_idle(protocols)


async def memory_rx_lanes(host: str, port: int, lanes: int) -> dict[str, float]:
    """rxbeanstalk: ``reserve_stream(max_in_flight=lanes)`` on an empty tube.

    Returns:
        Memory figures (see ``_Footprint.measure``).

    Raises:
        BeanstalkError: The stream failed (a lane could not connect, say).
    """
    failed: list[Exception] = []
    footprint = _Footprint()
    client = Client(host, port, connect_timeout=60.0)
    try:
        subscription = client.reserve_stream(max_in_flight=lanes).subscribe(
            lambda job: failed.append(RuntimeError(f"unexpected job {job.id}")), failed.append
        )
        try:
            await _until_waiting(host, port, lanes, failed)
            return footprint.measure(lanes)
        finally:
            subscription.dispose()
    finally:
        client.close()

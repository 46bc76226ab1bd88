"""Benchmark: ``put`` and drain across three beanstalkd servers, against one.

Run it on its own (it starts its own servers on 127.0.0.1)::

    python benchmarks/cluster.py [--jobs 20000] [--repeat 3] [--lanes 8] [--body 100]

Each configuration gets fresh servers. A run puts ``--jobs`` jobs with one
``put_many`` (pipelined, spread round robin over the servers), then drains them with
``reserve_stream(max_in_flight=--lanes)`` (lanes per server) piped into ``process``
with an empty coroutine handler, until the last job's ``DELETED`` outcome. The best of
``--repeat`` runs is kept, as the least disturbed by other work on the machine.

It prints a markdown table: ``Cluster`` over three servers, ``Cluster`` over one (the
same code path, one server), and a plain ``Client`` on one server (what the cluster
layer costs).

Every process here (the client and the servers) shares the machine's cores, so on a
small machine three servers add little: the client's one event loop is the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import reactivex

from rxbeanstalk import Client, Cluster, Job
from rxbeanstalk.operators import Action, Outcome, process
from rxbeanstalk.testing import BeanstalkdServer


async def _empty(_: Job) -> None:
    return None


async def _drain(stream: reactivex.Observable[Job], jobs: int) -> float:
    """Seconds until ``jobs`` jobs of ``stream`` were handled and deleted.

    Raises:
        RuntimeError: a job was not deleted.
    """
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    deleted = 0

    def on_next(outcome: Outcome) -> None:
        nonlocal deleted
        if outcome.action is not Action.DELETED:
            on_error(RuntimeError(f"job {outcome.job.id} was not deleted: {outcome.reason}"))
            return
        deleted += 1
        if deleted == jobs and not done.done():
            done.set_result(None)

    def on_error(error: Exception) -> None:
        if not done.done():
            done.set_exception(error)

    start = time.perf_counter()
    subscription = stream.pipe(process(_empty)).subscribe(on_next, on_error)
    try:
        await done
        return time.perf_counter() - start
    finally:
        subscription.dispose()


async def _put_many(
    put_many: Callable[[list[bytes]], reactivex.Observable[Any]], bodies: list[bytes]
) -> float:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_error(error: Exception) -> None:
        if not done.done():
            done.set_exception(error)

    def on_completed() -> None:
        if not done.done():
            done.set_result(None)

    start = time.perf_counter()
    put_many(bodies).subscribe(lambda _: None, on_error, on_completed)
    await done
    return time.perf_counter() - start


async def run_cluster(
    addresses: list[str], jobs: int, lanes: int, body: bytes
) -> tuple[float, float]:
    """One run over a ``Cluster``: (put seconds, drain seconds)."""
    async with Cluster(addresses) as cluster:
        for _ in addresses:  # connect every command connection before the clock starts
            await cluster.delete(await cluster.put(body))
        bodies = [body] * jobs
        put = await _put_many(lambda b: cluster.put_many(b), bodies)
        drain = await _drain(cluster.reserve_stream(max_in_flight=lanes), jobs)
        return put, drain


async def run_client(address: str, jobs: int, lanes: int, body: bytes) -> tuple[float, float]:
    """One run over a plain ``Client``: (put seconds, drain seconds)."""
    host, _, port = address.rpartition(":")
    async with Client(host, int(port)) as client:
        await client.delete(await client.put(body))
        bodies = [body] * jobs
        put = await _put_many(lambda b: client.put_many(b), bodies)
        drain = await _drain(client.reserve_stream(max_in_flight=lanes), jobs)
        return put, drain


@contextlib.contextmanager
def servers(count: int) -> Iterator[list[BeanstalkdServer]]:
    """``count`` fresh beanstalkd processes, stopped afterwards."""
    started: list[BeanstalkdServer] = []
    try:
        for _ in range(count):
            started.append(BeanstalkdServer().start())
        yield started
    finally:
        for server in started:
            server.stop()


def measure(
    kind: str, count: int, jobs: int, lanes: int, body: bytes, repeat: int
) -> tuple[float, float]:
    """Best put/s and drain/s over ``repeat`` runs on fresh servers."""
    best_put = best_drain = float("inf")
    with servers(count) as running:
        addresses = [s.address for s in running]
        for _ in range(repeat):
            if kind == "client":
                put, drain = asyncio.run(run_client(addresses[0], jobs, lanes, body))
            else:
                put, drain = asyncio.run(run_cluster(addresses, jobs, lanes, body))
            best_put, best_drain = min(best_put, put), min(best_drain, drain)
    return jobs / best_put, jobs / best_drain


def main() -> None:
    """Run the benchmark and print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row (best kept)")
    parser.add_argument("--lanes", type=int, default=8, help="max_in_flight, per server")
    parser.add_argument("--body", type=int, default=100, help="body size in bytes")
    args = parser.parse_args()
    body = b"x" * args.body
    rows = [
        ("Cluster, 3 servers", "cluster", 3),
        ("Cluster, 1 server", "cluster", 1),
        ("Client, 1 server", "client", 1),
    ]
    print(
        f"| setup | put/s (put_many, {args.jobs} x {args.body} B) "
        f"| drain/s (reserve_stream {args.lanes} lanes/server + process) |"
    )
    print("|---|---:|---:|")
    for label, kind, count in rows:
        put_rate, drain_rate = measure(kind, count, args.jobs, args.lanes, body, args.repeat)
        print(f"| {label} | {put_rate:,.0f} | {drain_rate:,.0f} |", flush=True)


if __name__ == "__main__":
    main()

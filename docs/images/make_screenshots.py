"""Render docs/images/monitor.png: the live monitor while producers and workers run.

    .venv-nb/bin/python docs/images/make_screenshots.py       # after `make notebooks`
    python docs/images/make_screenshots.py --output /tmp/monitor.png --seconds 8

Needs matplotlib and the ``beanstalkd`` binary; starts (and stops) its own throwaway
server. Takes about 16 s: a producer puts jobs in waves for ``--seconds`` (faster at its
peaks than the workers take them, so the queue builds up), puts a few delayed jobs with
each wave, and one job in 60 fails and is buried. The monitor runs with
``display=False`` (no notebook here); its figure is saved while the workers are draining
the queue (``--drain`` seconds after the producer stopped), as a live view would show it.
"""

from __future__ import annotations

import argparse
import asyncio
import math
from pathlib import Path

from reactivex import operators as ops

from rxbeanstalk import Client, Job
from rxbeanstalk.notebook import monitor
from rxbeanstalk.operators import process
from rxbeanstalk.testing import BeanstalkdServer

HERE = Path(__file__).resolve().parent
TUBE = "emails"
FAIL_EVERY = 60
MAX_IN_FLIGHT = 8


async def handle(job: Job) -> None:
    """The work: 60 ms each; bodies marked ``bad`` fail (and get buried)."""
    await asyncio.sleep(0.06)
    if job.body.startswith(b"bad"):
        raise ValueError("mailbox unavailable")


async def produce(client: Client, seconds: float) -> int:
    """Put jobs in waves (about 160 jobs/s on average) for ``seconds``; return how many."""
    loop = asyncio.get_running_loop()
    start, count = loop.time(), 0
    while (elapsed := loop.time() - start) < seconds:
        burst = int(40 + 35 * math.sin(elapsed * 0.8))
        bodies = [b"bad email" if (count + i) % FAIL_EVERY == 0 else b"email" for i in range(burst)]
        await client.put_many(bodies, tube=TUBE).pipe(ops.to_list())
        for _ in range(3):
            await client.put(b"reminder", tube=TUBE, delay=3)
        count += burst + 3
        await asyncio.sleep(0.25)
    return count


async def main(output: Path, seconds: float, drain: float) -> None:
    """Run the scenario under the monitor and save its figure to ``output``."""
    with BeanstalkdServer() as server:
        async with Client(server.host, server.port) as client:
            view = monitor(
                client, tubes=[TUBE], interval=0.25, window=20, display=False, figsize=(9, 5)
            )
            workers = (
                client.reserve_stream(tubes=[TUBE], max_in_flight=MAX_IN_FLIGHT)
                .pipe(process(handle, on_error="bury"))
                .subscribe(on_error=print)
            )
            try:
                produced = await produce(client, seconds)
                # Let the monitor draw a few seconds of the drain: wait for its snapshots
                # (not a fixed sleep, so a slow machine still gets the same picture).
                wanted = view.snapshots + round(drain / 0.25)
                await client.stats_stream(0.25, tubes=[]).pipe(
                    ops.first(lambda _: view.snapshots >= wanted)
                )
                output.parent.mkdir(parents=True, exist_ok=True)
                view.save(output, dpi=100)  # while running: the title says so
            finally:
                workers.dispose()
                view.stop()
            print(f"{output}: {produced} jobs, {view.snapshots} snapshots")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=HERE / "monitor.png")
    parser.add_argument("--seconds", type=float, default=12.0, help="producer run time (12)")
    parser.add_argument("--drain", type=float, default=3.5, help="seconds of drain shown (3.5)")
    args = parser.parse_args()
    asyncio.run(asyncio.wait_for(main(args.output, args.seconds, args.drain), timeout=120))

"""``Client.stats_stream``: periodic snapshots, against a real beanstalkd.

What is checked: the first snapshot comes at once and later ones every ``interval``; the
values follow what happens on the server; the stream is cold and each subscription has
its own timer on the client's loop; disposing (or an error) leaves no timer, no task and
no more commands on the server; errors are the typed ones, and ``retry_with_backoff``
carries the stream across a server restart.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import math
import time
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops

from rxbeanstalk import (
    Client,
    CommandTimeoutError,
    ConnectionLostError,
    InvalidArgumentError,
    TransportError,
    TubeStats,
)
from rxbeanstalk._stats_stream import StatsSnapshot, StatsStream, _Poller
from rxbeanstalk.operators import retry_with_backoff
from rxbeanstalk.testing import BeanstalkdServer, FaultProxy
from tests.conftest import activity, counters, eventually, make_client, run, stat, wait_until

aioreactive: Any
try:
    aioreactive = importlib.import_module("aioreactive")
except ImportError:
    if reactivex.__version__.startswith("4"):
        raise  # the reactivex-4 environment is the one that must run the asyncrx test
    aioreactive = None


class Recorder:
    """Subscribes with callbacks and keeps what arrives, with arrival times."""

    def __init__(self, stream: reactivex.Observable[StatsSnapshot]) -> None:
        self.snapshots: list[StatsSnapshot] = []
        self.arrived: list[float] = []
        self.errors: list[Exception] = []
        self.subscribed = time.monotonic()
        self.subscription = stream.subscribe(self._on_next, self.errors.append)

    def _on_next(self, snapshot: StatsSnapshot) -> None:
        self.arrived.append(time.monotonic())
        self.snapshots.append(snapshot)

    @property
    def last(self) -> StatsSnapshot:
        assert self.snapshots, "no snapshot yet"
        return self.snapshots[-1]

    def dispose(self) -> None:
        self.subscription.dispose()


def live_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """The stats-stream timers still scheduled on ``loop`` (cancelled ones excluded)."""
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [
        handle
        for handle in scheduled
        if not handle.cancelled()
        and isinstance(getattr(handle._callback, "__self__", None), _Poller)  # type: ignore[attr-defined]
    ]


# ----------------------------------------------------------------------------- values


def test_first_snapshot_comes_at_once(client: Client) -> None:
    async def main() -> None:
        await client.stats()  # connected, so the timing below is the stream's own
        recorder = Recorder(client.stats_stream(interval=30.0))
        await eventually(lambda: recorder.snapshots, "the first snapshot", timeout=3.0)
        # Long before the interval of 30 s: the first round does not wait for the timer.
        assert recorder.arrived[0] - recorder.subscribed < 3.0
        snapshot = recorder.last
        assert isinstance(snapshot, StatsSnapshot)
        assert abs(snapshot.at - time.time()) < 5.0
        assert list(snapshot.tubes) == ["default"]
        recorder.dispose()

    run(main(), client)


def test_values_follow_what_happens_on_the_server(beanstalkd: BeanstalkdServer) -> None:
    client = make_client(beanstalkd, watch=["work"])

    async def main() -> None:
        recorder = Recorder(client.stats_stream(0.05, tubes=["work"]))
        await eventually(lambda: recorder.snapshots, "the first snapshot")
        # The tube does not exist yet: left out of the mapping, read as empty.
        assert recorder.last.tubes == {}
        assert recorder.last.tube("work") == TubeStats(name="work")

        await client.put_many([b"a", b"b", b"c"], tube="work")
        await eventually(lambda: recorder.last.tube("work").current_jobs_ready == 3, "3 ready")
        assert recorder.last.server.total_jobs == 3
        assert recorder.last.server.cmd_put == 3
        assert recorder.last.tube("work").total_jobs == 3

        job = await client.reserve(timeout=0)
        await eventually(
            lambda: recorder.last.tube("work").current_jobs_reserved == 1, "1 reserved"
        )
        assert recorder.last.tube("work").current_jobs_ready == 2
        await job.bury()
        await eventually(lambda: recorder.last.tube("work").current_jobs_buried == 1, "1 buried")
        assert recorder.last.tube("work").current_jobs_reserved == 0

        job = await client.reserve(timeout=0)
        await job.delete()
        await eventually(lambda: recorder.last.tube("work").cmd_delete == 1, "1 deleted")
        assert recorder.last.server.cmd_delete == 1
        assert recorder.errors == []
        recorder.dispose()

    run(main(), client)


def test_tubes_none_takes_every_tube_each_round(client: Client) -> None:
    async def main() -> None:
        recorder = Recorder(client.stats_stream(0.05))
        await eventually(lambda: recorder.snapshots, "the first snapshot")
        assert list(recorder.last.tubes) == ["default"]
        await client.put(b"x", tube="alpha")
        await client.put(b"y", tube="beta")
        await eventually(lambda: len(recorder.last.tubes) == 3, "three tubes")
        assert list(recorder.last.tubes) == ["default", "alpha", "beta"]  # list-tubes order
        assert recorder.last.tubes["beta"].current_jobs_ready == 1
        recorder.dispose()

    run(main(), client)


def test_empty_tubes_sends_only_stats(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        await client.put(b"x")
        before = stat(beanstalkd, "cmd-stats-tube")
        recorder = Recorder(client.stats_stream(0.05, tubes=[]))
        await eventually(lambda: len(recorder.snapshots) >= 3, "three snapshots")
        recorder.dispose()
        assert recorder.last.tubes == {}
        assert recorder.last.server.current_jobs_ready == 1
        assert stat(beanstalkd, "cmd-stats-tube") == before
        assert stat(beanstalkd, "cmd-list-tubes") == 0

    run(main(), client)


def test_interval_is_kept(client: Client) -> None:
    interval = 0.2

    async def main() -> None:
        recorder = Recorder(client.stats_stream(interval, tubes=[]))
        await eventually(lambda: len(recorder.snapshots) >= 6, "six snapshots", timeout=10.0)
        recorder.dispose()
        stamps = [snapshot.at for snapshot in recorder.snapshots[:6]]
        gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
        # Never early (a round starts when its timer fires; the reply's arrival time may
        # vary by a round trip either way) ...
        assert min(gaps) > interval * 0.7, gaps
        # ... and a fixed rate: five intervals take about five intervals, not five
        # intervals plus five round trips (generous bounds: the machine is shared).
        assert interval * 5 * 0.9 < stamps[-1] - stamps[0] < interval * 5 + 1.0, gaps

    run(main(), client)


# ----------------------------------------------------------------------------- cold, timers


def test_cold_nothing_is_sent_before_subscribing(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await client.stats()
        before = counters(beanstalkd)
        stream = client.stats_stream(0.01)
        await client.list_tube_used()  # anything the stream had queued would go before it
        assert activity(before, counters(beanstalkd)) == {"cmd-list-tube-used": 1}
        assert isinstance(stream, StatsStream)
        assert live_timers(asyncio.get_running_loop()) == []

    run(main(), client)


def test_each_subscription_has_its_own_timer(client: Client) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stream = client.stats_stream(0.05, tubes=[])
        first, second = Recorder(stream), Recorder(stream)
        await eventually(lambda: first.snapshots and second.snapshots, "both subscribed")
        first.dispose()
        seen = len(second.snapshots)
        await eventually(lambda: len(second.snapshots) >= seen + 2, "the other one goes on")
        assert len(live_timers(loop)) <= 1
        second.dispose()
        assert live_timers(loop) == []

    run(main(), client)


def test_dispose_leaves_no_timer_no_task_and_no_more_commands(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await client.stats()
        tasks = asyncio.all_tasks()
        stopped = Recorder(client.stats_stream(0.02, tubes=["default"]))
        await eventually(lambda: len(stopped.snapshots) >= 3, "three snapshots")
        stopped.dispose()
        assert live_timers(loop) == []  # cancelled at once (dispose ran on the loop)
        assert asyncio.all_tasks() == tasks
        await client.list_tube_used()  # replies of a round in flight are in (and dropped)
        count = len(stopped.snapshots)

        # Measure against a control stream that keeps going: while it makes 5 rounds
        # the disposed one would make about as many; the server sees the control's only.
        control = Recorder(client.stats_stream(0.02, tubes=[]))
        await eventually(lambda: control.snapshots, "the control's first snapshot")
        before_stats = stat(beanstalkd, "cmd-stats")
        before_rounds = len(control.snapshots)
        await eventually(lambda: len(control.snapshots) >= before_rounds + 5, "5 more rounds")
        rounds = len(control.snapshots) - before_rounds
        control.dispose()
        sent = stat(beanstalkd, "cmd-stats") - before_stats - 1  # less that query's own
        assert rounds <= sent <= rounds + 1  # + a control round on its way
        assert stat(beanstalkd, "cmd-stats-tube") == count  # none since the dispose
        assert len(stopped.snapshots) == count
        assert stopped.errors == []
        assert live_timers(loop) == []

    run(main(), client)


def test_dispose_inside_on_next_stops_the_timer(client: Client) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        firsts = await client.stats_stream(0.01).pipe(ops.take(2), ops.to_list())
        assert len(firsts) == 2
        assert firsts[0].at <= firsts[1].at
        assert live_timers(loop) == []

    run(main(), client)


def test_private_loop_of_a_plain_script(beanstalkd: BeanstalkdServer) -> None:
    with make_client(beanstalkd) as client:
        recorder = Recorder(client.stats_stream(0.02, tubes=[]))
        wait_until(lambda: len(recorder.snapshots) >= 3, "three snapshots")
        loop = client.loop
        assert loop is not None and loop.is_running()
        recorder.dispose()  # from this thread: handed over to the client's loop

        async def timers() -> list[asyncio.TimerHandle]:
            return live_timers(asyncio.get_running_loop())

        # Queued behind the dispose (call_soon_threadsafe is FIFO), so it runs after it.
        assert asyncio.run_coroutine_threadsafe(timers(), loop).result(5.0) == []
        taken = client.stats_stream(0.02).pipe(ops.take(2), ops.to_list()).run()
        assert len(taken) == 2


# ----------------------------------------------------------------------------- errors


def test_await_and_run_are_refused(client: Client) -> None:
    stream = client.stats_stream()
    with pytest.raises(TypeError, match="never completes"):
        stream.run()

    async def main() -> None:
        with pytest.raises(TypeError, match="never completes"):
            await stream
        assert isinstance(await stream.pipe(ops.first()), StatsSnapshot)

    run(main(), client)


@pytest.mark.parametrize(
    ("interval", "tubes"),
    [
        (0, None),
        (-1, None),
        (math.nan, None),
        (math.inf, None),
        (True, None),
        ("1", None),
        (1.0, "default"),
        (1.0, ["no spaces"]),
        (1.0, ["-leading-dash"]),
    ],
)
def test_bad_arguments_are_refused_at_call_time(client: Client, interval: Any, tubes: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        client.stats_stream(interval, tubes)
    assert client.loop is None  # nothing was started


def test_a_lost_server_ends_the_stream_with_a_transport_error(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        recorder = Recorder(client.stats_stream(0.02))
        await eventually(lambda: recorder.snapshots, "the first snapshot")
        beanstalkd.stop()
        await eventually(lambda: recorder.errors, "the error")
        (error,) = recorder.errors
        assert isinstance(error, TransportError)
        assert live_timers(loop) == []
        count = len(recorder.snapshots)
        await client.stats().pipe(ops.catch(reactivex.empty()), ops.to_list())
        assert len(recorder.snapshots) == count

    run(main(), client)


def test_a_silent_server_ends_the_stream_with_command_timeout(
    beanstalkd: BeanstalkdServer,
) -> None:
    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            client = Client(**proxy.client_kwargs(), command_timeout=0.3)  # type: ignore[arg-type]
            try:
                recorder = Recorder(client.stats_stream(0.05, tubes=["default"]))
                await eventually(lambda: recorder.snapshots, "the first snapshot")
                proxy.stall()
                await eventually(lambda: recorder.errors, "the timeout")
                (error,) = recorder.errors
                assert isinstance(error, CommandTimeoutError)
                assert live_timers(asyncio.get_running_loop()) == []
            finally:
                client.close()

    run(main())


def test_closing_the_client_ends_the_stream(client: Client) -> None:
    async def main() -> None:
        recorder = Recorder(client.stats_stream(0.02))
        await eventually(lambda: recorder.snapshots, "the first snapshot")
        client.close()
        await eventually(lambda: recorder.errors, "the error")
        assert isinstance(recorder.errors[0], ConnectionLostError)
        assert live_timers(asyncio.get_running_loop()) == []

    run(main(), client)


def test_retry_with_backoff_carries_it_across_a_restart(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        recorder = Recorder(
            client.stats_stream(0.05, tubes=[]).pipe(retry_with_backoff(base=0.05, cap=0.2))
        )
        await eventually(lambda: recorder.snapshots, "the first snapshot")
        old_pid = recorder.last.server.pid
        beanstalkd.restart()
        await eventually(lambda: recorder.last.server.pid != old_pid, "the new server's stats")
        assert recorder.errors == []
        recorder.dispose()
        assert live_timers(asyncio.get_running_loop()) == []

    run(main(), client)


# ----------------------------------------------------------------------------- asyncrx


@pytest.mark.skipif(
    aioreactive is None,
    reason="aioreactive 0.20 needs reactivex<5: run in the reactivex-4.1 environment",
)
def test_async_client_stats_stream(beanstalkd: BeanstalkdServer) -> None:
    from rxbeanstalk.asyncrx import AsyncClient

    async def main() -> None:
        async with AsyncClient(beanstalkd.host, beanstalkd.port) as client:
            seen: list[StatsSnapshot] = []

            async def asend(snapshot: StatsSnapshot) -> None:
                seen.append(snapshot)

            tasks = asyncio.all_tasks()
            subscription = await client.stats_stream(0.02, tubes=["q"]).subscribe_async(asend)
            await eventually(lambda: seen, "the first snapshot")
            await client.client.put(b"x", tube="q")
            await eventually(lambda: seen[-1].tube("q").current_jobs_ready == 1, "1 ready")
            await subscription.dispose_async()
            assert live_timers(asyncio.get_running_loop()) == []
            # The relay's delivery task ends once woken by the dispose.
            await eventually(lambda: asyncio.all_tasks() <= tasks | {asyncio.current_task()})
            with pytest.raises(InvalidArgumentError):
                client.stats_stream(0)

    run(main())

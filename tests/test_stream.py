"""``reserve_stream`` and ``process`` against a real beanstalkd (issue 3, reactivex flavour).

What is asserted comes from the server (raw ``stats``/``stats-job`` on a socket of their
own) or from the wire (the proxy's logs), never from the client's own counters. Waiting
for a condition polls with a deadline; the few short sleeps give something that must
*not* happen the chance to happen.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import reactivex as rx
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOScheduler

from rxbeanstalk import Client, Job
from rxbeanstalk import operators as bops
from rxbeanstalk.errors import ConnectError, JobLostError, JobSettledError, TransportError
from rxbeanstalk.operators import Action, Outcome
from rxbeanstalk.testing import BeanstalkdServer, FaultProxy
from rxbeanstalk.testing.pytest_plugin import BeanstalkdFactory
from tests.conftest import eventually, make_client, run, stat, within

# Long enough for a lane that should stay quiet to have sent something if it were not.
QUIET = 0.2


# ----------------------------------------------------------------------------- helpers


class Recorder:
    """An observer that keeps what it gets; its end may arrive on any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.values: list[Any] = []
        self.error: Exception | None = None
        self.completed = False
        self.threads: set[int] = set()
        self._done: asyncio.Future[None] = self.loop.create_future()

    def on_next(self, value: Any) -> None:
        self.values.append(value)

    def on_error(self, error: Exception) -> None:
        self.error = error
        self.threads.add(threading.get_ident())
        self.loop.call_soon_threadsafe(self._end)

    def on_completed(self) -> None:
        self.completed = True
        self.threads.add(threading.get_ident())
        self.loop.call_soon_threadsafe(self._end)

    def _end(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    @property
    def ended(self) -> bool:
        return self._done.done()

    async def wait(self, seconds: float = 5.0) -> None:
        """Wait for the end (completion or error)."""
        await within(asyncio.shield(self._done), seconds)

    def subscribe(self, observable: rx.Observable[Any]) -> Any:
        return observable.subscribe(self.on_next, self.on_error, self.on_completed)


def loop_errors() -> list[dict[str, Any]]:
    """Collect what gets reported to the running loop's exception handler."""
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
    return reported


def reserved(server: BeanstalkdServer, tube: str | None = None) -> int:
    return stat(server, "current-jobs-reserved", tube)


def ready(server: BeanstalkdServer, tube: str | None = None) -> int:
    return stat(server, "current-jobs-ready", tube)


def connections(server: BeanstalkdServer) -> int:
    """Open connections, not counting the one asking."""
    return stat(server, "current-connections") - 1


def bodies(n: int, prefix: str = "job") -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


# ----------------------------------------------------------------------------- credit


def test_credit_holds_while_nothing_is_settled(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await within(client.put_many(bodies(20)))
        stream = client.reserve_stream(max_in_flight=3)
        got = Recorder()
        subscription = got.subscribe(stream)
        try:
            await eventually(lambda: len(got.values) == 3 and reserved(beanstalkd) == 3)
            await asyncio.sleep(QUIET)
            assert len(got.values) == 3
            assert reserved(beanstalkd) == 3
            # Each lane sent exactly one reserve: none goes out while its job is held.
            assert stat(beanstalkd, "cmd-reserve-with-timeout") == 3

            await within(got.values[0].delete())
            await eventually(lambda: len(got.values) == 4, what="a 4th job after a settle")
            await eventually(lambda: reserved(beanstalkd) == 3)
            assert stat(beanstalkd, "cmd-delete") == 1
            assert ready(beanstalkd) == 16
            await asyncio.sleep(QUIET)
            assert len(got.values) == 4
            assert len({job.id for job in got.values}) == 4
            assert got.error is None and not got.completed
        finally:
            subscription.dispose()

    run(main(), client)


def test_take_returns_unsettled_jobs_and_closes_lanes(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await within(client.put_many(bodies(10)))
        baseline = connections(beanstalkd)  # the client's command connection
        stream = client.reserve_stream(max_in_flight=4, drain_timeout=0.3)
        got = Recorder()
        got.subscribe(stream.pipe(ops.take(3)))
        await got.wait()
        assert got.completed and len(got.values) == 3
        # Delivered jobs are still held while the drain runs.
        assert reserved(beanstalkd) >= 3
        await eventually(
            lambda: (
                ready(beanstalkd) == 10
                and reserved(beanstalkd) == 0
                and connections(beanstalkd) == baseline
            ),
            what="jobs back and lanes closed after drain_timeout",
        )
        assert not stream.active
        assert stat(beanstalkd, "cmd-delete") == 0
        with pytest.raises(JobLostError):
            await within(got.values[0].delete())

    run(main(), client)


def test_jobs_settled_during_the_drain_close_their_lanes(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await within(client.put_many(bodies(5)))
        baseline = connections(beanstalkd)
        stream = client.reserve_stream(max_in_flight=2, drain_timeout=30)
        got = Recorder()
        got.subscribe(stream.pipe(ops.take(2)))
        await got.wait()
        assert len(got.values) == 2
        for job in got.values:
            await within(job.delete())
        # Well before the 30 s drain: each lane closes once its job's delete is answered.
        await eventually(lambda: connections(beanstalkd) == baseline, timeout=3.0)
        assert stat(beanstalkd, "cmd-delete") == 2
        assert ready(beanstalkd) == 3 and reserved(beanstalkd) == 0
        assert stat(beanstalkd, "cmd-reserve-with-timeout") == 2

    run(main(), client)


def test_subscribe_then_dispose_at_once_leaves_nothing_open(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await within(client.put_many(bodies(3)))
        baseline = connections(beanstalkd)
        stream = client.reserve_stream(max_in_flight=3, drain_timeout=0.1)
        for _ in range(3):  # each time while the lanes are still connecting
            stream.subscribe(lambda job: None).dispose()
        await eventually(
            lambda: (
                connections(beanstalkd) == baseline and ready(beanstalkd) == 3 and not stream.active
            )
        )
        assert stream.sessions_started == 3

        # Disposing from another thread is safe too.
        got = Recorder()
        subscription = got.subscribe(stream)
        await eventually(lambda: len(got.values) == 3 and reserved(beanstalkd) == 3)
        await within(asyncio.to_thread(subscription.dispose))
        await eventually(
            lambda: (
                connections(beanstalkd) == baseline and ready(beanstalkd) == 3 and not stream.active
            )
        )
        assert got.error is None and not got.completed

    run(main(), client)


def test_unreachable_server_errors_the_stream() -> None:
    with socket.socket() as taken:  # bound, not listening: connections are refused
        taken.bind(("127.0.0.1", 0))
        consumer = Client(port=taken.getsockname()[1], connect_timeout=2)
        stream = consumer.reserve_stream(max_in_flight=2)

        async def main() -> Recorder:
            got = Recorder()
            got.subscribe(stream.pipe(bops.retry_with_backoff(max_tries=3, base=0.01)))
            await got.wait()
            return got

        got = run(main(), consumer)
    assert isinstance(got.error, ConnectError), got.error
    assert stream.sessions_started == 3
    assert not stream.active


# ----------------------------------------------------------------------------- process


def test_process_deletes_every_job_once_within_the_credit(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    total, lanes = 200, 8
    seen: Counter[bytes] = Counter()
    active = peak = 0

    async def handler(job: Job) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(0.001 * (job.id % 3))
        finally:
            active -= 1
        seen[job.body] += 1

    async def main() -> list[Outcome]:
        await within(client.put_many(bodies(total), tube="batch"))
        stream = client.reserve_stream(tubes=["batch"], max_in_flight=lanes)
        got = Recorder()
        got.subscribe(stream.pipe(bops.process(handler), ops.take(total)))
        await got.wait(15)
        assert got.error is None
        await eventually(lambda: stat(beanstalkd, "current-jobs-reserved") == 0)
        return got.values

    outcomes = run(main(), client, timeout=20)
    assert len(outcomes) == total
    assert {outcome.action for outcome in outcomes} == {Action.DELETED}
    assert all(outcome.ok for outcome in outcomes)
    assert stat(beanstalkd, "cmd-delete") == total
    assert stat(beanstalkd, "current-jobs-ready") == 0
    assert seen == Counter(bodies(total))
    assert 1 < peak <= lanes


def test_process_runs_a_sync_handler_in_a_thread(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    states: list[str] = []
    threads: set[int] = set()

    def handler(job: Job) -> None:
        threads.add(threading.get_ident())
        # A sync handler may block on the client: its own job's stats, on its lane.
        states.append(client.stats_job(job).run().state.value)

    async def main() -> list[Outcome]:
        await within(client.put_many(bodies(6)))
        got = Recorder()
        got.subscribe(
            client.reserve_stream(max_in_flight=3).pipe(bops.process(handler), ops.take(6))
        )
        await got.wait(10)
        return got.values

    loop_thread = threading.get_ident()
    outcomes = run(main(), client)
    assert [outcome.action for outcome in outcomes] == [Action.DELETED] * 6
    assert states == ["reserved"] * 6
    assert loop_thread not in threads
    assert stat(beanstalkd, "cmd-delete") == 6


def test_failing_handler_is_released_then_buried(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def fail(job: Job) -> None:
        raise RuntimeError(f"cannot handle {job.id}")

    async def main() -> tuple[int, list[Outcome]]:
        job_id = await within(client.put(b"poison", priority=7))
        got = Recorder()
        got.subscribe(client.reserve_stream().pipe(bops.process(fail, max_releases=2), ops.take(3)))
        await got.wait()
        return job_id, got.values

    job_id, outcomes = run(main(), client)
    assert [outcome.action for outcome in outcomes] == [
        Action.RELEASED,
        Action.RELEASED,
        Action.BURIED,
    ]
    assert all(isinstance(outcome.error, RuntimeError) for outcome in outcomes)
    assert {outcome.job.id for outcome in outcomes} == {job_id}
    stats = beanstalkd.stats_job(job_id)
    assert stats["state"] == "buried"
    assert stats["releases"] == "2"
    assert stats["buries"] == "1"
    assert stats["pri"] == "7"  # released and buried with its own priority


def test_on_error_bury_buries_at_once(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def fail(job: Job) -> None:
        raise ValueError("bad job")

    async def main() -> tuple[int, list[Outcome]]:
        job_id = await within(client.put(b"x"))
        got = Recorder()
        got.subscribe(
            client.reserve_stream().pipe(bops.process(fail, on_error="bury"), ops.take(1))
        )
        await got.wait()
        return job_id, got.values

    job_id, outcomes = run(main(), client)
    assert [outcome.action for outcome in outcomes] == [Action.BURIED]
    assert isinstance(outcomes[0].error, ValueError) and not outcomes[0].ok
    stats = beanstalkd.stats_job(job_id)
    assert (stats["state"], stats["releases"], stats["buries"]) == ("buried", "0", "1")


def test_handler_timeout_releases_the_job(beanstalkd: BeanstalkdServer, client: Client) -> None:
    cancelled: list[int] = []

    async def slow(job: Job) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise

    async def main() -> tuple[int, list[Outcome]]:
        job_id = await within(client.put(b"slow"))
        got = Recorder()
        operator = bops.process(slow, timeout=0.2, release_delay=60)
        got.subscribe(client.reserve_stream().pipe(operator, ops.take(1)))
        await got.wait()
        return job_id, got.values

    job_id, outcomes = run(main(), client)
    (outcome,) = outcomes
    assert outcome.action is Action.RELEASED
    assert isinstance(outcome.error, TimeoutError)
    assert cancelled == [job_id]  # the async handler was cancelled
    stats = beanstalkd.stats_job(job_id)
    assert (stats["state"], stats["releases"]) == ("delayed", "1")


def test_sync_handler_timeout_releases_the_job(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    gate = threading.Event()

    def stuck(job: Job) -> None:
        gate.wait(10)  # a thread cannot be cancelled; the test lets it go at the end

    async def main() -> tuple[int, list[Outcome]]:
        job_id = await within(client.put(b"stuck"))
        got = Recorder()
        operator = bops.process(stuck, timeout=0.2, release_delay=60)
        got.subscribe(client.reserve_stream().pipe(operator, ops.take(1)))
        try:
            await got.wait()
        finally:
            gate.set()
        return job_id, got.values

    job_id, outcomes = run(main(), client)
    assert outcomes[0].action is Action.RELEASED
    assert isinstance(outcomes[0].error, TimeoutError)
    assert beanstalkd.stats_job(job_id)["state"] == "delayed"


# ----------------------------------------------------------------------------- sharing


def test_two_subscribers_share_one_lane_set(beanstalkd: BeanstalkdServer, client: Client) -> None:
    async def main() -> None:
        job_id = await within(client.put(b"shared"))
        baseline = connections(beanstalkd)
        stream = client.reserve_stream(max_in_flight=2, drain_timeout=0.1)
        first, second = Recorder(), Recorder()
        subscriptions = [first.subscribe(stream), second.subscribe(stream)]
        try:
            await eventually(lambda: len(first.values) == 1 and len(second.values) == 1)
            assert first.values[0].id == second.values[0].id == job_id
            await eventually(lambda: connections(beanstalkd) == baseline + 2)
            assert stream.sessions_started == 1
            assert stat(beanstalkd, "total-jobs") == 1 and reserved(beanstalkd) == 1

            assert await within(first.values[0].delete()) == job_id
            with pytest.raises(JobSettledError):
                await within(second.values[0].delete())
            assert stat(beanstalkd, "cmd-delete") == 1

            # A third subscriber joins the running lanes; it sees only later jobs.
            third = Recorder()
            subscriptions.append(third.subscribe(stream))
            later = await within(client.put(b"later"))
            await eventually(lambda: [job.id for job in third.values] == [later])
            assert [job.id for job in first.values] == [job_id, later]
            assert connections(beanstalkd) == baseline + 2
            assert stream.sessions_started == 1
        finally:
            for subscription in subscriptions:
                subscription.dispose()
        await eventually(lambda: connections(beanstalkd) == baseline and not stream.active)

    run(main(), client)


def test_two_process_pipelines_first_settle_wins(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def handler(job: Job) -> None:
        await asyncio.sleep(0)

    async def main() -> tuple[list[Outcome], list[Outcome]]:
        await within(client.put_many(bodies(5)))
        stream = client.reserve_stream(max_in_flight=2)
        first, second = Recorder(), Recorder()
        pipelines = [
            recorder.subscribe(stream.pipe(bops.process(handler))) for recorder in (first, second)
        ]
        try:
            await eventually(lambda: len(first.values) + len(second.values) == 10)
        finally:
            for subscription in pipelines:
                subscription.dispose()
        return first.values, second.values

    first, second = run(main(), client)
    by_job: dict[int, list[Action]] = {}
    for outcome in first + second:
        by_job.setdefault(outcome.job.id, []).append(outcome.action)
    assert len(by_job) == 5
    for actions in by_job.values():
        assert sorted(action.value for action in actions) == ["deleted", "settled_elsewhere"]
    assert stat(beanstalkd, "cmd-delete") == 5


@pytest.mark.parametrize("on_error", ["release", "bury"])
def test_a_failure_after_another_subscriber_settled_is_settled_elsewhere(
    beanstalkd: BeanstalkdServer, client: Client, on_error: Any
) -> None:
    """One pipeline deletes each job; the other fails on it a moment later."""
    deleted: set[int] = set()

    async def succeed(job: Job) -> None:
        pass

    async def fail_later(job: Job) -> None:
        await eventually(lambda: job.id in deleted)
        raise RuntimeError("too late anyway")

    def note(outcome: Outcome) -> None:
        deleted.add(outcome.job.id)

    async def main() -> tuple[list[Outcome], list[Outcome]]:
        await within(client.put_many(bodies(3)))
        stream = client.reserve_stream(max_in_flight=1)
        winner, loser = Recorder(), Recorder()
        subscriptions = [
            winner.subscribe(stream.pipe(bops.process(succeed), ops.do_action(note))),
            loser.subscribe(stream.pipe(bops.process(fail_later, on_error=on_error))),
        ]
        try:
            await eventually(lambda: len(loser.values) == 3 or loser.ended)
        finally:
            for subscription in subscriptions:
                subscription.dispose()
        assert loser.error is None and winner.error is None
        return winner.values, loser.values

    won, lost = run(main(), client)
    assert [o.action for o in won] == [Action.DELETED] * 3
    assert [o.action for o in lost] == [Action.SETTLED_ELSEWHERE] * 3
    assert all(isinstance(o.error, RuntimeError) for o in lost)
    assert stat(beanstalkd, "cmd-delete") == 3
    assert stat(beanstalkd, "cmd-release") == stat(beanstalkd, "cmd-bury") == 0


@pytest.mark.parametrize("on_error", ["release", "bury"])
def test_two_failing_pipelines_settle_each_job_once(
    beanstalkd: BeanstalkdServer, client: Client, on_error: Any
) -> None:
    async def fail(job: Job) -> None:
        raise RuntimeError("no")

    async def main() -> tuple[int, list[Outcome]]:
        job_id = await within(client.put(b"twice unlucky"))
        stream = client.reserve_stream(max_in_flight=1)
        first, second = Recorder(), Recorder()
        operator = bops.process(fail, on_error=on_error, release_delay=60)
        subscriptions = [
            first.subscribe(stream.pipe(operator)),
            second.subscribe(stream.pipe(operator)),
        ]
        try:
            await eventually(lambda: len(first.values) + len(second.values) == 2)
        finally:
            for subscription in subscriptions:
                subscription.dispose()
        assert first.error is None and second.error is None
        return job_id, first.values + second.values

    job_id, outcomes = run(main(), client)
    done = Action.RELEASED if on_error == "release" else Action.BURIED
    assert sorted(o.action.value for o in outcomes) == sorted([done.value, "settled_elsewhere"])
    stats = beanstalkd.stats_job(job_id)
    assert (stats["releases"], stats["buries"]) == (
        ("1", "0") if on_error == "release" else ("0", "1")
    )


# ----------------------------------------------------------------------------- ending


@pytest.mark.parametrize("scheduler", ["asyncio", "thread"])
def test_idle_stream_under_timeout_completes_and_closes_its_lanes(
    beanstalkd: BeanstalkdServer, client: Client, scheduler: str
) -> None:
    async def main() -> None:
        reported = loop_errors()
        await within(client.stats())
        baseline = connections(beanstalkd)
        stream = client.reserve_stream(max_in_flight=2)
        timing = AsyncIOScheduler(asyncio.get_running_loop()) if scheduler == "asyncio" else None
        got = Recorder()
        got.subscribe(stream.pipe(ops.timeout(0.5, other=rx.empty(), scheduler=timing)))
        await eventually(lambda: connections(beanstalkd) == baseline + 2, what="lanes up")
        await got.wait()
        assert got.completed and got.error is None and got.values == []
        if scheduler == "thread":
            assert threading.get_ident() not in got.threads  # it ended on the timer thread
        await eventually(
            lambda: connections(beanstalkd) == baseline and not stream.active,
            what="no lane connection left",
        )
        assert reported == []
        # The stream is reusable after that.
        job_id = await within(client.put(b"after"))
        again = Recorder()
        subscription = again.subscribe(stream)
        await eventually(lambda: [job.id for job in again.values] == [job_id])
        subscription.dispose()
        assert stream.sessions_started == 2

    run(main(), client)


@pytest.mark.parametrize("piped", [False, True])
def test_exception_in_on_next_releases_the_job_and_errors(
    beanstalkd: BeanstalkdServer, client: Client, piped: bool
) -> None:
    broke = ValueError("consumer broke")
    delivered: list[Job] = []

    def on_next(job: Job) -> None:
        delivered.append(job)
        raise broke

    async def main() -> None:
        job_id = await within(client.put(b"hot potato"))
        stream = client.reserve_stream()
        source: rx.Observable[Job] = stream.pipe(ops.map(lambda job: job)) if piped else stream
        got = Recorder()
        source.subscribe(on_next, got.on_error, got.on_completed)
        await got.wait()
        assert got.error is broke
        assert [job.id for job in delivered] == [job_id]
        await eventually(lambda: ready(beanstalkd) == 1 and reserved(beanstalkd) == 0)
        assert not stream.active
        with pytest.raises(JobLostError):
            await within(delivered[0].delete())

    run(main(), client)


def test_exception_in_on_next_after_process_ends_the_pipeline(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    broke = ValueError("outcome consumer broke")

    async def handler(job: Job) -> None:
        pass

    def on_next(outcome: Outcome) -> None:
        raise broke

    async def main() -> None:
        reported = loop_errors()
        await within(client.put_many(bodies(3)))
        stream = client.reserve_stream(drain_timeout=0.2)
        got = Recorder()
        stream.pipe(bops.process(handler)).subscribe(on_next, got.on_error, got.on_completed)
        await got.wait()
        assert got.error is broke
        await eventually(lambda: not stream.active and reserved(beanstalkd) == 0)
        # The outcome that broke the consumer was a delete; at most the job already
        # in progress was handled too. The rest stayed ready.
        deleted = stat(beanstalkd, "cmd-delete")
        assert 1 <= deleted <= 2 and ready(beanstalkd) == 3 - deleted
        assert reported == []

    run(main(), client)


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("rst", [True, False], ids=["rst", "fin"])
def test_dropped_connections_error_the_stream_and_return_the_jobs(
    beanstalkd: BeanstalkdServer, client: Client, rst: bool
) -> None:
    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = Client(**proxy.client_kwargs())  # type: ignore[arg-type]
            try:
                await within(client.put_many(bodies(5)))
                stream = consumer.reserve_stream(max_in_flight=2)
                got = Recorder()
                got.subscribe(stream)
                await eventually(lambda: len(got.values) == 2 and reserved(beanstalkd) == 2)
                assert proxy.drop_all(rst=rst) == 2
                await got.wait()
                assert isinstance(got.error, TransportError), got.error
                await eventually(lambda: ready(beanstalkd) == 5 and reserved(beanstalkd) == 0)
                assert not stream.active
                for job in got.values:
                    with pytest.raises(JobLostError):
                        await within(job.delete())

                # Subscribing again starts fresh lanes; the returned jobs come first.
                again = Recorder()
                subscription = again.subscribe(stream)
                await eventually(lambda: len(again.values) == 2)
                assert stream.sessions_started == 2
                assert {job.id for job in again.values} == {job.id for job in got.values}
                for job in again.values[:2]:  # (more arrive as these are deleted)
                    await within(job.delete())
                subscription.dispose()
                assert stat(beanstalkd, "cmd-delete") == 2
                assert proxy.stale_settles() == []
                assert proxy.accepted == 4
            finally:
                consumer.close()

    run(main(), client)


def test_server_restart_errors_the_stream_and_jobs_come_back(
    beanstalkd_factory: BeanstalkdFactory, tmp_path: Path
) -> None:
    server = beanstalkd_factory(binlog_dir=tmp_path / "binlog")
    client = make_client(server)

    async def main() -> None:
        await within(client.put_many(bodies(3)))
        stream = client.reserve_stream(max_in_flight=2)
        got = Recorder()
        got.subscribe(stream)
        await eventually(lambda: len(got.values) == 2 and reserved(server) == 2)
        await within(asyncio.to_thread(server.restart), 10)
        await got.wait()
        assert isinstance(got.error, TransportError), got.error
        assert ready(server) == 3 and reserved(server) == 0  # the binlog kept them

        again = Recorder()
        subscription = again.subscribe(stream)
        await eventually(lambda: len(again.values) == 2)
        assert stream.sessions_started == 2
        assert {job.id for job in again.values} == {job.id for job in got.values}
        subscription.dispose()

    run(main(), client)


def test_no_stale_settle_after_a_restart_without_binlog(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        old_id = await within(client.put(b"old"))
        got = Recorder()
        got.subscribe(client.reserve_stream())
        await eventually(lambda: len(got.values) == 1)
        await within(asyncio.to_thread(beanstalkd.restart), 10)
        await got.wait()
        assert isinstance(got.error, TransportError), got.error
        # The new process counts ids from 1 again: the old handle must not touch the
        # new job that now has the same id.
        new_id = await within(client.put(b"new"))
        assert new_id == old_id
        with pytest.raises(JobLostError):
            await within(got.values[0].delete())
        assert beanstalkd.stats_job(new_id)["state"] == "ready"
        assert stat(beanstalkd, "cmd-delete") == 0

    run(main(), client)


def test_credit_holds_when_a_subscriber_arrives_during_a_drain(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        await within(client.put_many(bodies(10)))
        stream = client.reserve_stream(max_in_flight=3, drain_timeout=10)
        first = Recorder()
        subscription = first.subscribe(stream)
        await eventually(lambda: len(first.values) == 3 and reserved(beanstalkd) == 3)
        subscription.dispose()  # the three delivered jobs drain; nobody settles them yet

        second = Recorder()
        later = second.subscribe(stream)
        for _ in range(10):  # a window in which extra lanes would have reserved
            await asyncio.sleep(QUIET / 10)
            assert reserved(beanstalkd) <= 3
        assert second.values == []

        # Each settled job gives its credit to the new subscriber, one lane at a time.
        for settled, job in enumerate(first.values, start=1):
            await within(job.delete())
            await eventually(lambda n=settled: len(second.values) == n)  # type: ignore[misc]
            assert reserved(beanstalkd) == 3
        later.dispose()
        for job in second.values:
            await within(job.delete())
        await eventually(lambda: reserved(beanstalkd) == 0 and connections(beanstalkd) == 1)
        assert stat(beanstalkd, "cmd-delete") == 6 and ready(beanstalkd) == 4

    run(main(), client)


def test_tubes_none_means_the_clients_watch_list_when_the_lanes_start(
    beanstalkd: BeanstalkdServer,
) -> None:
    client = make_client(beanstalkd, watch=["a"])

    async def main() -> None:
        await within(client.put(b"in default"))
        await within(client.put(b"in a", tube="a"))
        await within(client.put(b"in b", tube="b"))
        stream = client.reserve_stream(max_in_flight=3, drain_timeout=0.1)
        got = Recorder()
        subscription = got.subscribe(stream)
        await eventually(lambda: len(got.values) == 1)
        await asyncio.sleep(QUIET)
        assert [job.body for job in got.values] == [b"in a"]
        subscription.dispose()
        await eventually(lambda: not stream.active)
        # The old session drains its held job first; start the new one after that.
        await eventually(lambda: beanstalkd.stats()["current-jobs-reserved"] == "0")

        await within(client.watch("b"))
        again = Recorder()
        subscription = again.subscribe(stream)
        await eventually(lambda: len(again.values) == 2)
        await asyncio.sleep(QUIET)
        assert sorted(job.body for job in again.values) == [b"in a", b"in b"]
        subscription.dispose()

    run(main(), client)


def test_rx_retry_reconnects_with_a_fresh_session(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = Client(**proxy.client_kwargs())  # type: ignore[arg-type]
            try:
                await within(client.put_many(bodies(4)))
                stream = consumer.reserve_stream(max_in_flight=2, drain_timeout=0.1)
                got = Recorder()
                subscription = got.subscribe(stream.pipe(ops.retry(3)))
                await eventually(lambda: len(got.values) == 2)
                proxy.drop_all()
                # The retry does not fail at once on a dead shared subject: it gets the
                # two returned jobs again on new lanes.
                await eventually(lambda: len(got.values) == 4 and reserved(beanstalkd) == 2)
                assert got.error is None and not got.completed
                assert stream.sessions_started == 2
                assert {job.id for job in got.values[2:]} == {job.id for job in got.values[:2]}
                proxy.drop_all()
                await eventually(lambda: len(got.values) == 6)
                assert stream.sessions_started == 3 and got.error is None
                subscription.dispose()
                await eventually(lambda: reserved(beanstalkd) == 0 and ready(beanstalkd) == 4)
                assert proxy.stale_settles() == []
            finally:
                consumer.close()

    run(main(), client)


def test_retry_with_backoff_survives_repeated_drops(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    total, tube = 300, "chaos"
    handled: Counter[bytes] = Counter()

    async def handler(job: Job) -> None:
        await asyncio.sleep(0.02)
        handled[job.body] += 1

    async def main() -> tuple[FaultProxy, list[Outcome], dict[str, str], list[int]]:
        # The test's own client talks to the server directly: it is the anchor that
        # keeps the tube (and its counters) alive, and it puts the jobs.
        await within(client.use(tube))
        await within(client.put_many(bodies(total)))
        async with FaultProxy(beanstalkd.port) as proxy:
            consumer = Client(**proxy.client_kwargs())  # type: ignore[arg-type]
            got = Recorder()
            stream = consumer.reserve_stream(tubes=[tube], max_in_flight=4)
            subscription = got.subscribe(
                stream.pipe(bops.process(handler), bops.retry_with_backoff(base=0.05))
            )
            deleted_at_drop = [0]
            try:
                for _ in range(5):
                    await eventually(lambda: len(proxy.open_links) == 4, what="lanes back")
                    # Drop only once work has moved on since the last drop, so every drop
                    # hits jobs in progress.
                    since = deleted_at_drop[-1]
                    await eventually(
                        lambda since=since: stat(beanstalkd, "cmd-delete", tube) >= since + 20,  # type: ignore[misc]
                        what="20 more jobs deleted",
                    )
                    deleted_at_drop.append(stat(beanstalkd, "cmd-delete", tube))
                    proxy.drop_all()
                await eventually(lambda: stat(beanstalkd, "cmd-delete", tube) == total, timeout=15)
                assert got.error is None and not got.completed
            finally:
                subscription.dispose()
                consumer.close()
            await eventually(lambda: reserved(beanstalkd, tube) == 0)
            return proxy, got.values, beanstalkd.stats(tube), deleted_at_drop

    proxy, outcomes, tube_stats, deleted_at_drop = run(main(), client, timeout=30)
    # The drops hit while the jobs were being worked through.
    assert deleted_at_drop[-1] < total, deleted_at_drop
    assert tube_stats["cmd-delete"] == str(total)
    for state in ("ready", "reserved", "buried", "delayed"):
        assert tube_stats[f"current-jobs-{state}"] == "0", state
    assert set(handled) == set(bodies(total))  # every job handled at least once
    assert sum(handled.values()) > total  # the drops hit jobs in progress: redelivered
    assert sum(o.action is Action.DELETED for o in outcomes) <= total
    assert not any(o.action is Action.BURIED for o in outcomes)
    assert proxy.drops == 5 and proxy.accepted >= 5 * 4
    assert proxy.stale_settles() == []  # no settle crossed on a connection it did not belong to
    assert sum(len(link.settles()) for link in proxy.links) >= total


def test_the_proxy_sees_a_settle_on_the_wrong_connection(beanstalkd: BeanstalkdServer) -> None:
    """The proxy's own check: a delete sent where the job was not reserved is flagged."""

    async def main() -> FaultProxy:
        async with FaultProxy(beanstalkd.port) as proxy:
            beanstalkd.query(b"put 0 0 60 1\r\nx\r\n")
            a_reader, a_writer = await within(asyncio.open_connection("127.0.0.1", proxy.port))
            b_reader, b_writer = await within(asyncio.open_connection("127.0.0.1", proxy.port))
            a_writer.write(b"reserve-with-timeout 0\r\n")
            assert await within(a_reader.readline()) == b"RESERVED 1 1\r\n"
            await within(a_reader.readline())
            a_writer.write(b"touch 1\r\n")
            assert await within(a_reader.readline()) == b"TOUCHED\r\n"
            b_writer.write(b"delete 1\r\n")
            assert await within(b_reader.readline()) == b"NOT_FOUND\r\n"
            assert proxy.drop_all() == 2
            with pytest.raises(ConnectionResetError):  # reset under the client
                await within(a_reader.read())
            assert beanstalkd.stats_job(1)["state"] == "ready"
            for writer in (a_writer, b_writer):
                writer.close()
            return proxy

    proxy = run(main())
    assert proxy.accepted == 2
    assert [link.settles() for link in proxy.links] == [[(b"touch", 1)], [(b"delete", 1)]]
    assert proxy.stale_settles() == [(1, b"delete", 1)]
    assert all(link.dropped and link.closed for link in proxy.links)


# ----------------------------------------------------------------------------- TTR


@pytest.mark.slow
def test_auto_touch_keeps_a_slow_job(beanstalkd: BeanstalkdServer, client: Client) -> None:
    seen: list[dict[str, str]] = []

    async def slow(job: Job) -> None:
        await asyncio.sleep(4)
        seen.append(beanstalkd.stats_job(job.id))

    async def main() -> tuple[int, list[Outcome]]:
        job_id = await within(client.put(b"long", ttr=2))
        got = Recorder()
        stream = client.reserve_stream(auto_touch=True)
        got.subscribe(stream.pipe(bops.process(slow), ops.take(1)))
        await got.wait(10)
        return job_id, got.values

    job_id, outcomes = run(main(), client)
    assert [o.action for o in outcomes] == [Action.DELETED]
    (stats,) = seen
    assert stats["state"] == "reserved"
    assert (stats["reserves"], stats["timeouts"]) == ("1", "0")
    assert stat(beanstalkd, "cmd-delete") == 1
    assert stat(beanstalkd, "cmd-touch") >= 1
    with pytest.raises(LookupError):
        beanstalkd.stats_job(job_id)


def test_a_job_held_past_its_ttr_frees_its_lane(
    beanstalkd: BeanstalkdServer, client: Client
) -> None:
    async def main() -> None:
        job_id = await within(client.put(b"forgotten", ttr=1))
        got = Recorder()
        subscription = got.subscribe(client.reserve_stream())
        try:
            await eventually(lambda: len(got.values) == 2, timeout=4.0, what="redelivery")
            assert [job.id for job in got.values] == [job_id, job_id]
            assert beanstalkd.stats_job(job_id)["reserves"] == "2"
            with pytest.raises(JobLostError):
                await within(got.values[0].delete())
            assert await within(got.values[1].delete()) == job_id
        finally:
            subscription.dispose()
        assert stat(beanstalkd, "cmd-delete") == 1

    run(main(), client)

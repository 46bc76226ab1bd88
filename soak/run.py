r"""One soak run: a real beanstalkd, a fault proxy, producers, a consumer and chaos.

::

    producers (P clients) --\                      /-- anchor (raw socket, watches the tube)
                             >-- FaultProxy --> beanstalkd
    consumer (1 client) ----/      ^ chaos

The producers put ``jobs`` seqs while the consumer drains them and the chaos schedule
injects a fault every ``period`` seconds. When every seq is acknowledged, chaos stops
and its faults are undone, the run waits (bounded) until every acknowledged seq was
delivered and the server holds nothing in the tube, and then reconciles the seq ledger
with the anchor's ``stats-tube`` (see :mod:`soak.reconcile`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rxbeanstalk import Client
from rxbeanstalk.testing import BeanstalkdServer, FaultProxy

from .anchor import Anchor
from .chaos import DROP, MIXED, Chaos, FaultTiming
from .consumer import Consumer
from .ledger import Ledger
from .producer import Pacer, Producer
from .reconcile import SoakResult, reconcile

__all__ = ["CHAOS_MODES", "SoakConfig", "soak"]

CHAOS_MODES: dict[str, tuple[str, ...]] = {"none": (), "drop": DROP, "mixed": MIXED}
# rxbeanstalk's lanes wait this long in each reserve-with-timeout (``_lane.RESERVE_WAIT``):
# a lane whose connection went half-open while it waited notices after this plus the
# command timeout.
_RESERVE_WAIT = 5.0
_POLL = 0.02


@dataclass(frozen=True)
class SoakConfig:
    """What to run.

    Attributes:
        jobs: Seqs to put (each becomes at least one job).
        chaos: ``"none"``, ``"drop"``, ``"mixed"``, or a comma-separated list of fault
            kinds (see :mod:`soak.chaos`).
        binlog: Run beanstalkd with ``-b`` and ``kill -9`` + restart it ``restarts`` times.
        restarts: Restarts in a binlog run, spread evenly over the puts.
        producers: Producer clients.
        consumers: The consumer stream's ``max_in_flight``.
        put_window: Puts in flight per producer.
        put_rate: Puts per second in all; ``None`` for as fast as possible.
        period: Seconds between faults, uniform in ``(low, high)``.
        payload: Random payload size range in bytes.
        command_timeout: The clients' ``command_timeout``.
        connect_timeout: The clients' ``connect_timeout``.
        timing: Fault durations; ``None`` derives them from ``command_timeout``.
        drain_timeout: Bound on waiting for the tube to drain after the last put.
        timeout: Bound on the whole run.
        seed: Seed of the schedule and payloads; ``None`` for a random one.
        tube: The tube.
        max_attempts: Put attempts per seq before a producer gives up on it.
        retry_base: The consumer's ``retry_with_backoff`` first wait.
        retry_cap: The consumer's ``retry_with_backoff`` longest wait.
        max_tries: Consumer failures in a row before its pipeline gives up.
        work: Seconds the handler spends on each job, uniform in ``(low, high)``.
        progress: Print a progress line every second (stderr).
    """

    jobs: int = 100_000
    chaos: str = "drop"
    binlog: bool = False
    restarts: int = 1
    producers: int = 2
    consumers: int = 16
    put_window: int = 8
    put_rate: float | None = None
    period: tuple[float, float] = (2.0, 3.0)
    payload: tuple[int, int] = (16, 512)
    command_timeout: float = 2.0
    connect_timeout: float = 2.0
    timing: FaultTiming | None = None
    drain_timeout: float = 60.0
    timeout: float = 900.0
    seed: int | None = None
    tube: str = "soak"
    max_attempts: int = 100
    retry_base: float = 0.05
    retry_cap: float = 1.0
    max_tries: int = 30
    work: tuple[float, float] = (0.0, 0.002)
    progress: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(MIXED)
        if unknown or not self.chaos:
            raise ValueError(
                f"chaos must be one of {sorted(CHAOS_MODES)} or a comma-separated list of "
                f"{', '.join(MIXED)}; got {self.chaos!r}"
            )
        if self.jobs < 1 or self.producers < 1 or self.consumers < 1 or self.put_window < 1:
            raise ValueError("jobs, producers, consumers and put_window must be >= 1")
        low, high = self.period
        if not 0 < low <= high:
            raise ValueError(f"period must be 0 < low <= high, got {self.period}")
        if not 0 <= self.payload[0] <= self.payload[1]:
            raise ValueError(f"payload must be 0 <= low <= high, got {self.payload}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """The fault kinds ``chaos`` names."""
        if self.chaos in CHAOS_MODES:
            return CHAOS_MODES[self.chaos]
        return tuple(kind.strip() for kind in self.chaos.split(","))

    @property
    def name(self) -> str:
        """A short name: ``drop-100000``, ``mixed-3000``, ``binlog-drop-100000``."""
        chaos = self.chaos.replace(",", "+")
        return f"{'binlog-' if self.binlog else ''}{chaos}-{self.jobs}"

    def fault_timing(self) -> FaultTiming:
        """The fault durations: ``timing``, or ones derived from ``command_timeout``."""
        if self.timing is not None:
            return self.timing
        timeout = self.command_timeout
        return FaultTiming(
            stall_short=min(1.0, timeout / 2),
            stall_long=timeout + 1.0,
            halfopen_hold=_RESERVE_WAIT + timeout + 1.0,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        timing = self.fault_timing()
        data = {k: v for k, v in vars(self).items() if k != "timing"}
        data["timing"] = vars(timing)
        data["period"] = list(self.period)
        data["payload"] = list(self.payload)
        data["work"] = list(self.work)
        return data


@dataclass
class _State:
    """What the run collects besides the ledger."""

    epochs: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pipeline_failed: list[str] = field(default_factory=list)
    drained: bool = False
    put_elapsed: float = 0.0


async def soak(config: SoakConfig, server: BeanstalkdServer | None = None) -> SoakResult:
    """Run one soak and reconcile it.

    Args:
        config: What to run.
        server: A running beanstalkd to use, with a fresh ``config.tube`` (started with a
            binlog directory for a ``binlog`` run); ``None`` starts a private one.

    Returns:
        The result; ``result.passed`` says whether every invariant held.

    Raises:
        ValueError: ``server`` is not usable for this config.
    """
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    config = replace(config, seed=seed)
    binlog_dir: str | None = None
    own = server is None
    if server is None:
        if config.binlog:
            binlog_dir = tempfile.mkdtemp(prefix="soak-binlog-")
        server = BeanstalkdServer(binlog_dir=binlog_dir)
        await asyncio.to_thread(server.start)
    try:
        return await _run(config, server, seed)
    finally:
        if own:
            await asyncio.to_thread(server.stop)
        if binlog_dir is not None:
            shutil.rmtree(binlog_dir, ignore_errors=True)


async def _run(config: SoakConfig, server: BeanstalkdServer, seed: int) -> SoakResult:
    rng = random.Random(seed)
    run_id = f"{rng.getrandbits(32):08x}"
    loop = asyncio.get_running_loop()
    started = loop.time()

    def clock() -> float:
        return loop.time() - started

    anchor = Anchor(server.host, server.port, config.tube)
    try:
        await _check_server(anchor, config)
    except BaseException:
        await anchor.close()
        raise
    ledger = Ledger(config.jobs, run_id, clock)
    state = _State()
    proxy = FaultProxy(server.port, timeout=5.0)
    await proxy.start()
    options: dict[str, Any] = {
        **proxy.client_kwargs(),
        "command_timeout": config.command_timeout,
        "connect_timeout": config.connect_timeout,
    }
    producer_clients = [Client(use=config.tube, **options) for _ in range(config.producers)]
    consumer_client = Client(watch=(config.tube,), **options)
    pacer = Pacer(config.put_rate)
    producers = [
        Producer(
            client,
            ledger,
            range(index, config.jobs, config.producers),
            window=config.put_window,
            pacer=pacer,
            payload=config.payload,
            rng=random.Random(rng.getrandbits(64)),
            max_attempts=config.max_attempts,
        )
        for index, client in enumerate(producer_clients)
    ]

    def pipeline_failed(error: Exception) -> None:
        state.pipeline_failed.append(f"{type(error).__name__}: {error}")

    consumer = Consumer(
        consumer_client,
        ledger,
        config.tube,
        max_in_flight=config.consumers,
        retry_base=config.retry_base,
        retry_cap=config.retry_cap,
        max_tries=config.max_tries,
        work=config.work,
        rng=random.Random(rng.getrandbits(64)),
        on_failed=pipeline_failed,
    )

    async def before_restart() -> None:
        with contextlib.suppress(Exception):
            state.epochs.append(await anchor.stats_tube())

    async def after_restart() -> None:
        with contextlib.suppress(Exception):
            await anchor.stats_tube()  # watch the tube in the new process at once

    restarts = config.restarts if config.binlog else 0
    chaos = Chaos(
        proxy,
        config.kinds,
        period=config.period,
        timing=config.fault_timing(),
        rng=random.Random(rng.getrandbits(64)),
        clock=clock,
        in_flight=ledger.in_flight,
        server=server if restarts else None,
        restart_at=[(i + 1) / (restarts + 1) for i in range(restarts)],
        progress=lambda: ledger.settled_puts / config.jobs,
        before_restart=before_restart,
        after_restart=after_restart,
    )
    chaos_task: asyncio.Task[None] | None = None
    progress_task: asyncio.Task[None] | None = None
    elapsed = 0.0
    loop_errors = _LoopErrors(loop)
    try:
        async with asyncio.timeout(config.timeout):
            consumer.start()
            chaos_task = loop.create_task(chaos.run())
            if config.progress:
                progress_task = loop.create_task(_report_progress(ledger, chaos, proxy, clock))
            results = await asyncio.gather(
                *(producer.run() for producer in producers), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    state.errors.append(f"producer: {type(result).__name__}: {result}")
            state.put_elapsed = clock()
            # Chaos goes on while the consumer works through the queue.
            await _delivered(ledger, config.drain_timeout)
            chaos.stop()
            await chaos_task
            await chaos.clear()
            state.drained = await _drain(anchor, ledger, config.drain_timeout, state)
            elapsed = clock()
    except TimeoutError:
        state.errors.append(f"the run did not finish within {config.timeout:g} s")
        elapsed = clock()
    except Exception as error:  # the anchor or a restart failed: still reconcile
        state.errors.append(f"the run failed: {type(error).__name__}: {error}")
        elapsed = clock()
    finally:
        for task in (chaos_task, progress_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        chaos.finish()
        with contextlib.suppress(Exception):
            await chaos.clear()
        consumer.stop()
        for client in (*producer_clients, consumer_client):
            client.close()
    try:
        final_tube = await anchor.stats_tube()
        final_stats = await anchor.stats()
    except Exception as error:
        state.errors.append(f"anchor: {type(error).__name__}: {error}")
        final_tube, final_stats = {}, {}
    finally:
        loop_errors.restore()
        stale = proxy.stale_settles()
        accepted = proxy.accepted
        await proxy.stop()
        await anchor.close()
    return reconcile(
        config=config,
        ledger=ledger,
        faults=chaos.faults,
        windows=chaos.windows(),
        tube=final_tube,
        server=final_stats,
        epochs=[*state.epochs, final_tube],
        accepted=accepted,
        stale_settles=stale,
        consumer_errors=dict(consumer.errors),
        loop_errors=loop_errors.seen,
        errors=[*state.errors, *(f"consumer gave up: {e}" for e in state.pipeline_failed)],
        drained=state.drained,
        elapsed=elapsed,
        put_elapsed=state.put_elapsed,
    )


class _LoopErrors:
    """Records what reaches the loop's exception handler during the run.

    Under chaos the library must not leave errors nobody handles (a task exception never
    retrieved, an exception in a callback): they would be noise in a user's log.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.seen: list[str] = []
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._handle)

    def _handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.seen.append(f"{context.get('message')}: {context.get('exception')!r}")
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def restore(self) -> None:
        """Collect garbage (a dead task reports its unretrieved error then), then restore."""
        gc.collect()
        self.loop.set_exception_handler(self._previous)


async def _check_server(anchor: Anchor, config: SoakConfig) -> None:
    stats = await anchor.stats()
    if config.binlog and int(stats.get("binlog-current-index", "0") or 0) <= 0:
        raise ValueError("a binlog soak needs a beanstalkd started with -b (binlog_dir=...)")
    tube = await anchor.stats_tube()
    if tube.get("total-jobs") != "0":
        raise ValueError(f"tube {config.tube!r} is not fresh: total-jobs {tube.get('total-jobs')}")


async def _delivered(ledger: Ledger, timeout: float) -> None:
    """Wait (bounded) until every acknowledged seq was delivered at least once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ledger.all_acked_delivered and loop.time() < deadline:
        await asyncio.sleep(_POLL)


async def _drain(anchor: Anchor, ledger: Ledger, timeout: float, state: _State) -> bool:
    """Wait until every acknowledged seq was delivered and the tube holds nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if ledger.all_acked_delivered:
            tube = await anchor.stats_tube()
            if _left(tube) == 0:
                return True
        await asyncio.sleep(_POLL)
    state.errors.append(f"not drained within {timeout:g} s")
    return False


def _left(tube: dict[str, str]) -> int:
    return sum(
        int(tube.get(f"current-jobs-{what}", "0"))
        for what in ("ready", "reserved", "delayed", "buried")
    )


async def _report_progress(
    ledger: Ledger, chaos: Chaos, proxy: FaultProxy, clock: Callable[[], float]
) -> None:  # pragma: no cover - console output only
    wall = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        delivered = sum(len(d) for d in ledger.deliveries.values())
        last = chaos.faults[-1].kind if chaos.faults else "-"
        print(
            f"soak: {clock():6.1f} s  acked {len(ledger.acked):>7}  delivered {delivered:>7}  "
            f"faults {len(chaos.faults):>3} (last {last})  connections {proxy.accepted:>4}  "
            f"wall {time.monotonic() - wall:5.1f} s",
            file=sys.stderr,
            flush=True,
        )

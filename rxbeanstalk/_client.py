"""``Client``: every beanstalkd command as a cold ``reactivex.Observable``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ._channel import Address, Channel
from ._closing import Closing
from ._connection import Connection, Sink
from ._iter import ReserveIterator
from ._job import Holder, Job
from ._lane import RESERVE_WAIT
from ._loop import LoopBinding
from ._observable import CommandObservable, Emitter
from ._reservations import Reservations
from ._stats_stream import StatsStream, make_stats_stream
from ._stream import ReserveStream
from .errors import (
    ConnectionLostError,
    InvalidArgumentError,
    JobLostError,
    JobSettledError,
    LoopBindingError,
    NotFoundError,
)
from .protocol import (
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    MAX_BODY,
    Bury,
    Command,
    Delete,
    Ignore,
    JobData,
    JobStats,
    Kick,
    KickJob,
    ListTubes,
    ListTubesWatched,
    ListTubeUsed,
    PauseTube,
    Peek,
    PeekBuried,
    PeekDelayed,
    PeekReady,
    Put,
    Quit,
    RawCommand,
    Release,
    Reply,
    ReserveJob,
    ReserveWithTimeout,
    ServerStats,
    Stats,
    StatsJob,
    StatsTube,
    Touch,
    TubeStats,
    Use,
    Watch,
)
from .protocol import _validate as check

T = TypeVar("T")

JobRef = Job | int
"""A job argument: a ``Job`` or a job id."""

# put_many keeps at most this many puts, or this many body bytes, in flight at once.
_PUT_MANY_WINDOW = 1000
_PUT_MANY_BYTES = 1 << 20


class _OnSuccess:
    """A sink that passes a success to ``step`` and an error straight to the emitter.

    ``step`` emits the value (after updating the client's state), or sends the next
    command of a chain.
    """

    __slots__ = ("emitter", "step")

    def __init__(self, emitter: Emitter, step: Callable[[Any], None]) -> None:
        self.emitter = emitter
        self.step = step

    def resolve(self, value: Any) -> None:
        self.step(value)

    def reject(self, error: BaseException) -> None:
        self.emitter.reject(error)


class Client(Closing):
    """A beanstalkd client whose every command is a cold ``reactivex.Observable``.

    Construction does no I/O; the first subscription connects. Each subscription sends
    its command once and emits one value then completes, or errors with a
    ``BeanstalkError``. Commands from the same loop tick go out pipelined in one write.

    Producer and admin commands share one pipelined command connection; each reserve runs
    on a reserving connection of its own, and a reserved ``Job`` is settled on the
    connection that reserved it.

    Args:
        host: Server host.
        port: Server port.
        unix_path: Path of the server's unix socket (instead of host and port).
        use: The tube ``put`` uses when given none.
        watch: The tubes ``reserve`` takes jobs from.
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds of silence after which a command fails with
            ``CommandTimeoutError`` (a reserve with a timeout gets its timeout on top; a
            blocking reserve waits for ever, with TCP keepalive to notice a dead server).
        max_body_size: Largest reply body accepted (a job body or a stats payload).

    Raises:
        InvalidArgumentError: a bad tube name, port or timeout.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 11300,
        *,
        unix_path: str | None = None,
        use: str = DEFAULT_TUBE,
        watch: Sequence[str] = (DEFAULT_TUBE,),
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        max_body_size: int = MAX_BODY,
    ) -> None:
        check.integer(port, "port", 1, 65535)
        for value, what in (
            (connect_timeout, "connect_timeout"),
            (command_timeout, "command_timeout"),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgumentError(f"{what} must be a positive number, got {value!r}")
        if isinstance(watch, str):
            raise InvalidArgumentError("watch must be a sequence of tube names, not a str")
        self._used = check.tube_name(use)
        self._watch = tuple(dict.fromkeys(check.tube_name(t) for t in watch))
        if not self._watch:
            raise InvalidArgumentError("watch must name at least one tube")
        self._address = Address(
            host,
            port,
            unix_path,
            float(connect_timeout),
            float(command_timeout),
            check.integer(max_body_size, "max_body_size", 0, MAX_BODY),
        )
        self._binding = LoopBinding(self._reset)
        self._commands = Channel(self._address, state=self._tube_state)
        self._reservations = Reservations(self._address)
        self._held: dict[int, Job] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<rxbeanstalk.Client {self._address}>"

    # -- lifecycle --------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` or the unix socket path."""
        return str(self._address)

    @property
    def used(self) -> str:
        """The tube ``put`` uses when given none."""
        return self._used

    @property
    def watched(self) -> tuple[str, ...]:
        """The tubes reserves take jobs from."""
        return self._watch

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the client is bound to, once it was first used."""
        return self._binding.loop

    def _tube_state(self) -> tuple[str, tuple[str, ...]]:
        # What the command connection restores first after a reconnect.
        return self._used, self._watch

    def _reset(self) -> None:
        # The old loop was closed: its connections died with it.
        self._commands = Channel(self._address, state=self._tube_state)
        self._reservations = Reservations(self._address)
        self._held.clear()

    def close(self) -> None:
        """Close every connection and stop the client's private loop thread, if any.

        Reserved jobs go back to the server. Safe to call twice, from any thread.
        Returns at once on the client's loop; from another thread it waits at most a few
        seconds for the loop to carry it out.
        """
        if self._closed:
            return
        self._closed = True
        self._binding.close(self._close_now)

    def _close_now(self) -> None:
        self._commands.close()
        self._reservations.close()
        self._held.clear()

    # -- plumbing ---------------------------------------------------------------------

    def _observe(
        self, start: Callable[[Any, Emitter], None], argument: Any
    ) -> CommandObservable[Any]:
        return CommandObservable(self._binding, start, argument)

    def _send(self, command: Command[Any], emitter: Emitter) -> None:
        self._commands.send(command, emitter)

    def _send_in_used(self, command: Command[Any], emitter: Emitter) -> None:
        self._commands.send_in(command, emitter, self._used)

    def _send_in_watched(self, command: Command[Any], emitter: Emitter) -> None:
        self._commands.send(command, emitter, watch=self._watch)

    def _job_of(self, job: JobRef) -> Job | None:
        if isinstance(job, Job):
            return job if job._connection is not None else None
        check.job_id(job)
        return self._held.get(job)

    @staticmethod
    def _id(job: JobRef) -> int:
        return job.id if isinstance(job, Job) else check.job_id(job)

    def _make_job(self, data: JobData, conn: Connection, holder: Holder) -> Job:
        job = Job(data.id, data.body, self, conn, holder)
        held = self._held
        held[data.id] = job

        def forget(_: Connection) -> None:
            if held.get(data.id) is job:
                del held[data.id]

        conn.on_close(forget)
        return job

    # -- producer ---------------------------------------------------------------------

    def put(
        self,
        body: bytes | str,
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
        tube: str | None = None,
    ) -> CommandObservable[int]:
        """Put a job (cold; emits the new job's id).

        Args:
            body: The job body; a ``str`` is encoded as UTF-8.
            priority: 0 (most urgent) to ``2**32-1``.
            delay: Seconds before the job is ready.
            ttr: Seconds a worker may hold the job (0 is taken as 1 by the server).
            tube: The tube to put into; ``None`` for the client's used tube. The client's
                used tube does not change.

        Raises:
            InvalidArgumentError: a bad body type, number or tube name (at call time).
        """
        command = Put(body, priority, delay, ttr)  # type: ignore[arg-type]
        if tube is None:
            return CommandObservable(self._binding, self._send_in_used, command)
        check.tube_name(tube)
        return self._observe(self._put_in, (tube, command))

    def _put_in(self, argument: tuple[str, Command[Any]], emitter: Emitter) -> None:
        tube, command = argument
        self._commands.send_in(command, emitter, tube)

    def put_many(
        self,
        bodies: Iterable[bytes | str],
        *,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
        tube: str | None = None,
    ) -> CommandObservable[int]:
        """Put many jobs, pipelined in bounded batches (cold; emits each id in order).

        At most 1,000 puts or 1 MiB of bodies are in flight at once. The first error ends
        the sequence: its message says how many jobs were put before it; no later body
        is sent.

        Raises:
            InvalidArgumentError: any bad body or argument (at call time, nothing sent).
        """
        commands = [Put(body, priority, delay, ttr) for body in bodies]  # type: ignore[arg-type]
        if tube is not None:
            check.tube_name(tube)
        return self._observe(self._put_many, (tube, commands))

    def _put_many(self, argument: tuple[str | None, list[Put]], emitter: Emitter) -> None:
        tube, commands = argument
        _PutMany(self._commands, tube or self._used, commands, emitter).pump()

    def use(self, tube: str) -> CommandObservable[str]:
        """Use ``tube`` for later puts, peeks and kicks (cold; emits the tube).

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return self._observe(self._use, Use(tube))

    def _use(self, command: Use, emitter: Emitter) -> None:
        def used(tube: str) -> None:
            self._used = tube
            emitter.resolve(tube)

        self._commands.send(command, _OnSuccess(emitter, used))

    # -- consumer ---------------------------------------------------------------------

    def reserve(self, timeout: float | None = None) -> CommandObservable[Job]:
        """Reserve a job from the watched tubes (cold; emits a ``Job``).

        Runs on a reserving connection of its own, so it never delays other commands.
        Disposing the subscription cancels the reserve (and returns a job that was on
        its way).

        Args:
            timeout: Seconds to wait (rounded up to whole seconds); ``None`` waits for
                ever (for a job: a silent server still fails it, see below); ``0`` only
                takes a job that is ready now.

        Without a timeout it is sent as ``reserve-with-timeout 5`` again after each
        ``TIMED_OUT``, so that every wait has a deadline: a server that went silent (or
        a half-open connection) fails it with ``CommandTimeoutError`` within 5 s plus
        ``command_timeout``, where a bare ``reserve`` would wait for ever.

        Raises:
            InvalidArgumentError: a negative or too large timeout (at call time).
        """
        if timeout is None:
            forever = ReserveWithTimeout(RESERVE_WAIT)
            return self._observe(
                self._reserve, (forever, RESERVE_WAIT + self._address.command_timeout, True)
            )
        command = ReserveWithTimeout(timeout)  # type: ignore[arg-type]
        return self._observe(
            self._reserve, (command, command.seconds + self._address.command_timeout, False)
        )

    def _reserve(
        self, argument: tuple[Command[JobData], float | None, bool], emitter: Emitter
    ) -> None:
        command, timeout, repeat = argument
        self._reservations.reserve(
            command,
            emitter,
            timeout=timeout,
            watch=self._watch,
            make_job=self._make_job,
            repeat=repeat,
        )

    def reserve_job(self, job_id: int) -> CommandObservable[Job]:
        """Reserve the job with this id, whatever its state (cold; emits a ``Job``).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return self._observe(
            self._reserve, (ReserveJob(job_id), self._address.command_timeout, False)
        )

    def watch(self, tube: str) -> CommandObservable[int]:
        """Add ``tube`` to the watch list (cold; emits the number of watched tubes).

        Every reserving connection applies the new list before its next reserve.

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return self._observe(self._watch_cmd, Watch(tube))

    def _watch_cmd(self, command: Watch, emitter: Emitter) -> None:
        def watching(count: int) -> None:
            if command.tube not in self._watch:
                self._watch = (*self._watch, command.tube)
            emitter.resolve(count)

        self._commands.send(command, _OnSuccess(emitter, watching), watch=self._watch)

    def ignore(self, tube: str) -> CommandObservable[int]:
        """Remove ``tube`` from the watch list (cold; emits the number left).

        ``NotIgnoredError`` if it is the last watched tube.

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return self._observe(self._ignore, Ignore(tube))

    def _ignore(self, command: Ignore, emitter: Emitter) -> None:
        def ignored(count: int) -> None:
            self._watch = tuple(t for t in self._watch if t != command.tube)
            emitter.resolve(count)

        self._commands.send(command, _OnSuccess(emitter, ignored), watch=self._watch)

    # -- settling ---------------------------------------------------------------------

    def delete(self, job: JobRef) -> CommandObservable[int]:
        """Delete a job (cold; emits its id).

        A reserved ``Job`` (or the id of a job this client holds) is deleted on the
        connection that reserved it; any other id on the command connection, where the
        server deletes ready, delayed and buried jobs.

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return self._observe(self._settle, (job, "delete", Delete(self._id(job))))

    def release(
        self, job: JobRef, *, priority: int | None = None, delay: int = 0
    ) -> CommandObservable[int]:
        """Release a reserved job back to ready, or delayed (cold; emits its id).

        Args:
            job: The job or its id.
            priority: The new priority; ``None`` keeps the job's own.
            delay: Seconds before it is ready again.

        Raises:
            InvalidArgumentError: a bad id, priority or delay (at call time).
        """
        job_id = self._id(job)
        if priority is None:
            check.integer(delay, "delay")
            return self._observe(self._settle_keep_priority, (job, "release", delay))
        return self._observe(self._settle, (job, "release", Release(job_id, priority, delay)))

    def bury(self, job: JobRef, *, priority: int | None = None) -> CommandObservable[int]:
        """Bury a reserved job (cold; emits its id); ``priority=None`` keeps its own.

        Raises:
            InvalidArgumentError: a bad id or priority (at call time).
        """
        job_id = self._id(job)
        if priority is None:
            return self._observe(self._settle_keep_priority, (job, "bury", 0))
        return self._observe(self._settle, (job, "bury", Bury(job_id, priority)))

    def touch(self, job: JobRef) -> CommandObservable[int]:
        """Restart a reserved job's TTR (cold; emits its id).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return self._observe(self._settle, (job, None, Touch(self._id(job))))

    def _settle(self, argument: tuple[JobRef, str | None, Command[Any]], emitter: Sink) -> None:
        # ``emitter`` is any Sink: an Observable's emitter, or ``process``'s own callback
        # (``Job._delete_to``), which skips the Observable and its future per job.
        job_ref, how, command = argument
        job = self._job_of(job_ref)
        if job is not None and isinstance(command, StatsJob) and not job.reserved:
            job = None  # anyone may ask about a job this handle no longer holds
        if job is None:
            self._commands.send(command, emitter)
            return
        conn = job._connection
        holder = job._holder
        assert conn is not None and holder is not None
        if job._settled is not None:
            emitter.reject(JobSettledError(f"job {job.id} was already {job._settled}d"))
            return
        if conn.closed or job._lost is not None:
            why = job._lost or (
                "the connection that reserved it closed, so the server put the job back"
            )
            emitter.reject(
                JobLostError(f"job {job.id}'s reservation is gone: {why}; nothing was sent")
            )
            return
        if how is not None:
            job._settled = how
            self._held.pop(job.id, None)
        sink = _Touched(job, emitter) if isinstance(command, Touch) else _Settle(job, how, emitter)
        if how is None:
            conn.send(command, sink, self._address.command_timeout)
            return
        # Queued, not written yet: a stream lane reserves again as soon as its job is
        # settled, and that reserve goes out in the same write, right behind it.
        conn.send(command, sink, self._address.command_timeout, join=True)
        try:
            holder.job_settling(job)
        finally:
            conn.flush()

    def _settle_keep_priority(self, argument: tuple[JobRef, str, int], emitter: Emitter) -> None:
        job_ref, how, delay = argument
        job = self._job_of(job_ref)
        job_id = self._id(job_ref)

        def then(stats: JobStats) -> None:
            command: Command[Any] = (
                Release(job_id, stats.pri, delay) if how == "release" else Bury(job_id, stats.pri)
            )
            if job is not None:
                job._settled = None  # claimed below again, now with the real command
            self._settle((job if job is not None else job_id, how, command), emitter)

        if job is not None:
            conn = job._connection
            if job._settled is not None or job._lost is not None or conn is None or conn.closed:
                # Deliver JobSettledError / JobLostError, sending nothing. (A StatsJob here
                # would go to the command connection, as anyone may ask about a job.)
                placeholder = Release(job_id, 0, delay) if how == "release" else Bury(job_id, 0)
                self._settle((job, how, placeholder), emitter)
                return
            job._settled = how  # a second settle now gets JobSettledError
            conn.send(
                StatsJob(job_id),
                _Settle(job, None, _OnSuccess(emitter, then)),
                self._address.command_timeout,
            )
        else:
            self._commands.send(StatsJob(job_id), _OnSuccess(emitter, then))

    # -- streams ----------------------------------------------------------------------

    def reserve_stream(
        self,
        tubes: Sequence[str] | None = None,
        *,
        max_in_flight: int = 1,
        drain_timeout: float = 5.0,
        auto_touch: bool = False,
    ) -> ReserveStream:
        """A hot, shared stream of reserved jobs with credit backpressure.

        ``max_in_flight`` lanes (one connection each) reserve a job, deliver it to every
        current subscriber, and reserve again only once it is settled or lost: at most
        ``max_in_flight`` jobs are reserved and unsettled at any time, whatever the
        operators downstream do. The lanes start with the first subscriber and stop with
        the last one: waiting lanes close at once, delivered jobs get ``drain_timeout``
        seconds to be settled, then the server takes back whatever is left. An error
        closes the lanes; subscribing again (``ops.retry()``) starts new ones.

        Args:
            tubes: The tubes to reserve from; ``None`` for the client's watch list at the
                time the lanes start.
            max_in_flight: How many jobs may be reserved and unsettled at once (>= 1).
            drain_timeout: Seconds delivered jobs get to be settled after the last
                subscriber leaves.
            auto_touch: Touch each unsettled job shortly before its TTR runs out.

        Raises:
            InvalidArgumentError: bad tube names, credit or timeout (at call time).
        """
        watch = None if tubes is None else self._tubes(tubes)
        check.integer(max_in_flight, "max_in_flight", 1, 100_000)
        if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, int | float):
            raise InvalidArgumentError(f"drain_timeout must be a number, got {drain_timeout!r}")
        if not drain_timeout >= 0:
            raise InvalidArgumentError(f"drain_timeout must be >= 0, got {drain_timeout}")
        return ReserveStream(
            self,
            self._binding,
            self._address,
            watch,
            max_in_flight=max_in_flight,
            drain_timeout=float(drain_timeout),
            auto_touch=bool(auto_touch),
        )

    def reserve_iter(
        self, tubes: Sequence[str] | None = None, *, max_in_flight: int = 1
    ) -> ReserveIterator:
        """A pull-driven async iterator of reserved jobs (asyncio only).

        ::

            async with client.reserve_iter(tubes=["emails"], max_in_flight=4) as jobs:
                async for job in jobs:
                    await handle(job)
                    await job.delete()

        A reserve is sent only when the loop pulls and fewer than ``max_in_flight`` jobs
        are held unsettled. Leaving the block (``break``, an exception, cancellation)
        puts every unsettled job back to ready. A pull cancelled (by ``asyncio.timeout``,
        say) while its reserve is out keeps the job that reserve brings for the next pull.

        Args:
            tubes: The tubes to reserve from; ``None`` for the client's watch list.
            max_in_flight: How many jobs may be reserved and unsettled at once (>= 1).

        Raises:
            InvalidArgumentError: bad tube names or credit (at call time).
            LoopBindingError: not called on the client's event loop.
        """
        watch = self._watch if tubes is None else self._tubes(tubes)
        check.integer(max_in_flight, "max_in_flight", 1, 100_000)
        self._binding.bind()
        if not self._binding.on_loop_thread():
            raise LoopBindingError(
                "reserve_iter() works on the client's own event loop: call it from a "
                "coroutine running there"
            )
        return ReserveIterator(self, self._address, watch, max_in_flight)

    @staticmethod
    def _tubes(tubes: Sequence[str]) -> tuple[str, ...]:
        if isinstance(tubes, str):
            raise InvalidArgumentError("tubes must be a sequence of tube names, not a str")
        watch = tuple(dict.fromkeys(check.tube_name(t) for t in tubes))
        if not watch:
            raise InvalidArgumentError("tubes must name at least one tube")
        return watch

    # -- inspection -------------------------------------------------------------------

    def peek(self, job_id: int) -> CommandObservable[Job]:
        """The job with this id, in any state (cold; emits a ``Job``; ``NotFoundError``).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return self._observe(self._peek, Peek(job_id))

    def peek_ready(self) -> CommandObservable[Job]:
        """The next ready job in the used tube (``NotFoundError`` if none)."""
        return self._observe(self._peek, PeekReady())

    def peek_delayed(self) -> CommandObservable[Job]:
        """The delayed job in the used tube with the least delay left."""
        return self._observe(self._peek, PeekDelayed())

    def peek_buried(self) -> CommandObservable[Job]:
        """The oldest buried job in the used tube."""
        return self._observe(self._peek, PeekBuried())

    def _peek(self, command: Command[JobData], emitter: Emitter) -> None:
        def found(data: JobData) -> None:
            emitter.resolve(Job(data.id, data.body, self))

        self._commands.send(command, _OnSuccess(emitter, found), used=self._used)

    def kick(self, bound: int) -> CommandObservable[int]:
        """Kick up to ``bound`` buried jobs (or, if none, delayed jobs) of the used tube.

        Raises:
            InvalidArgumentError: a bad bound (at call time).
        """
        return self._observe(self._send_in_used, Kick(bound))

    def kick_job(self, job: JobRef) -> CommandObservable[int]:
        """Kick one buried or delayed job (cold; emits its id).

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return self._observe(self._send, KickJob(self._id(job)))

    def stats(self) -> CommandObservable[ServerStats]:
        """Server statistics (cold; emits ``ServerStats``)."""
        return self._observe(self._send, Stats())

    def stats_tube(self, tube: str) -> CommandObservable[TubeStats]:
        """Statistics of one tube (cold; emits ``TubeStats``; ``NotFoundError``).

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        return self._observe(self._send, StatsTube(tube))

    def stats_job(self, job: JobRef) -> CommandObservable[JobStats]:
        """Statistics of one job (cold; emits ``JobStats``; ``NotFoundError``).

        A job this client holds is asked about on its own connection.

        Raises:
            InvalidArgumentError: a bad id (at call time).
        """
        return self._observe(self._settle, (job, None, StatsJob(self._id(job))))

    def stats_stream(
        self, interval: float = 1.0, tubes: Sequence[str] | None = None
    ) -> StatsStream:
        """Periodic ``StatsSnapshot`` values of the server and its tubes (cold, endless).

        ::

            client.stats_stream(1.0, tubes=["emails"]).pipe(
                ops.map(lambda snap: snap.tube("emails").current_jobs_ready),
            ).subscribe(print)

        Each subscription emits a first snapshot at once, then one every ``interval``
        seconds, from a timer on the client's event loop (no thread), and never
        completes. A round sends ``stats`` and a ``stats-tube`` per tube, pipelined on
        the command connection (``tubes=None`` asks ``list-tubes`` first, each round);
        rounds never overlap, so a slow server delays the next one. A tube that does not
        exist at that moment is left out of ``StatsSnapshot.tubes``. Disposing cancels
        the timer: nothing stays scheduled.

        A failed round ends the stream with its error in ``on_error``, typed like any
        command's: ``CommandTimeoutError`` (a silent server), ``ConnectError`` or
        ``ConnectionLostError`` (``TransportError``), ``ProtocolError``,
        ``ServerError``. To keep watching through outages, pipe it into
        ``rxbeanstalk.operators.retry_with_backoff()``, which subscribes again (a new
        first snapshot at once, then the interval).

        The stream never ends, so ``await`` and ``.run()`` on it raise ``TypeError``:
        use ``stream.pipe(ops.take(n))`` to wait for values.

        Args:
            interval: Seconds between snapshots (> 0).
            tubes: The tubes to include; ``None`` for every tube on the server (from
                ``list-tubes``, each round); empty for the server's stats only.

        Returns:
            The cold stream of ``StatsSnapshot``.

        Raises:
            InvalidArgumentError: a bad interval or tube name, or ``tubes`` is a
                ``str`` (at call time).
        """
        return make_stats_stream(self._binding, self._send, interval, tubes)

    def list_tubes(self) -> CommandObservable[list[str]]:
        """Every tube on the server (cold)."""
        return self._observe(self._send, ListTubes())

    def list_tubes_watched(self) -> CommandObservable[list[str]]:
        """The client's watch list as the server has it (cold)."""
        return self._observe(self._send_in_watched, ListTubesWatched())

    def list_tube_used(self) -> CommandObservable[str]:
        """The client's used tube as the server has it (cold)."""
        return self._observe(self._send_in_used, ListTubeUsed())

    def pause_tube(self, tube: str, delay: int) -> CommandObservable[str]:
        """Pause reserves from ``tube`` for ``delay`` seconds (0 pauses for 1 s).

        Raises:
            InvalidArgumentError: a bad tube name or delay (at call time).
        """
        return self._observe(self._send, PauseTube(tube, delay))

    def quit(self) -> CommandObservable[None]:
        """Send ``quit`` on the command connection (cold).

        Emits ``None`` once the server closed the connection; the next command opens a
        new one.
        """
        return self._observe(self._send, Quit())

    def command(
        self, name: str, *args: str | int, body: bytes | str | None = None
    ) -> CommandObservable[Reply]:
        """Send any command line on the command connection (the raw escape hatch).

        Emits the ``Reply`` for any reply word that is not an error word; error words
        deliver their ``CommandError``. With ``body``, its length is appended to the
        arguments (as ``put`` wants) and the body follows the line. Use the parsers of
        ``rxbeanstalk.protocol`` (``parse_yaml_dict``, ...) on ``OK`` bodies.
        ``reserve``-type commands and ``quit`` are refused: use their methods.

        Raises:
            InvalidArgumentError: a word with spaces, CR, LF or NUL, a line over 224
                bytes, or a reserve/quit command (at call time).
        """
        body_bytes = None if body is None else check.body(body)
        return self._observe(self._send, RawCommand(name, args, body_bytes))


class _Settle:
    """Outcome of a command on a held job: tells the job's holder when it is settled."""

    __slots__ = ("emitter", "how", "job")

    def __init__(self, job: Job, how: str | None, emitter: Sink) -> None:
        self.job = job
        self.how = how
        self.emitter = emitter

    def _done(self) -> None:
        holder = self.job._holder
        if self.how is not None and holder is not None:
            holder.job_settled(self.job)

    def resolve(self, value: Any) -> None:
        self._done()
        self.emitter.resolve(value)

    def reject(self, error: BaseException) -> None:
        self._done()
        if isinstance(error, NotFoundError):
            # The server no longer counts the job as ours: its TTR ran out.
            error = _lost(self.job, "the server answered NOT_FOUND (its TTR ran out)", error)
        elif isinstance(error, ConnectionLostError) and not isinstance(error, JobLostError):
            error = _lost(self.job, f"its connection was lost ({error})", error)
        self.emitter.reject(error)


class _Touched(_Settle):
    """Outcome of a ``touch`` of a held job.

    The holder polices the job's TTR itself (the server can miss it on an idle
    connection), so it must hear that the TTR started again: else it would take a job
    its handler keeps touching for lost, and reserve again on a connection still holding it.
    """

    __slots__ = ()

    def __init__(self, job: Job, emitter: Sink) -> None:
        super().__init__(job, None, emitter)

    def resolve(self, value: Any) -> None:
        holder = self.job._holder
        if holder is not None:
            holder.job_touched(self.job)
        super().resolve(value)


def _lost(job: Job, why: str, cause: BaseException) -> JobLostError:
    error = JobLostError(f"job {job.id}: the reservation is gone: {why}")
    error.__cause__ = cause
    return error


class _PutMany:
    """Keeps a bounded window of pipelined puts in flight and emits ids in order."""

    __slots__ = (
        "_bytes",
        "_channel",
        "_commands",
        "_done",
        "_emitter",
        "_in_flight",
        "_next",
        "_tube",
    )

    def __init__(self, channel: Channel, tube: str, commands: list[Put], emitter: Emitter) -> None:
        self._channel = channel
        self._tube = tube
        self._commands = commands
        self._emitter = emitter
        self._next = 0
        self._done = 0
        self._in_flight = 0
        self._bytes = 0

    def pump(self) -> None:
        commands = self._commands
        if self._done == len(commands):
            self._emitter.complete()
            return
        while (
            self._next < len(commands)
            and self._in_flight < _PUT_MANY_WINDOW
            and (self._bytes < _PUT_MANY_BYTES or self._in_flight == 0)
            and not self._emitter.done
        ):
            command = commands[self._next]
            self._next += 1
            self._in_flight += 1
            self._bytes += len(command.body)
            self._channel.send_in(command, _PutOne(self, len(command.body)), self._tube)

    def result(self, size: int, job_id: int | None, error: BaseException | None) -> None:
        self._in_flight -= 1
        self._bytes -= size
        if self._emitter.done:
            return
        if error is not None:
            error.add_note(
                f"put_many: {self._done} of {len(self._commands)} jobs were put before this "
                "error; no later body was sent"
            )
            self._emitter.error(error)
            return
        self._done += 1
        self._emitter.next(job_id)
        self.pump()


class _PutOne:
    __slots__ = ("owner", "size")

    def __init__(self, owner: _PutMany, size: int) -> None:
        self.owner = owner
        self.size = size

    def resolve(self, value: int) -> None:
        self.owner.result(self.size, value, None)

    def reject(self, error: BaseException) -> None:
        self.owner.result(self.size, None, error)

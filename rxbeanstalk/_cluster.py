"""``Cluster``: several beanstalkd servers behind one set of Observables.

beanstalkd has no clustering of its own; users scale out by running several servers and
spreading jobs over them from the client side. A ``Cluster`` does that spreading, routes
every job command to the server its job lives on, merges the servers' job streams, and
rides out a server that goes away.

Decisions, and why:

- **One ``Client`` per server, all on the cluster's one loop binding.** Each member
  client gets the cluster's ``LoopBinding`` in place of its own before it is first used,
  so a plain script that calls ``.run()`` starts one private loop thread for the whole
  cluster (not one per server), asyncio code binds everything to its running loop, and
  the cluster's own work (choosing a server, falling through, merging) runs on that loop
  next to the clients' connections, without locks or thread hops. Servers get exactly
  the bytes a ``Client`` sends; nothing about the protocol is re-implemented here.
- **Job ids repeat across servers**, so ``put`` emits a ``JobRef(server, id)`` and every
  job command takes a ``JobRef`` or a ``Job`` (whose client is its server's member
  client); a bare ``int`` names no server and raises ``InvalidArgumentError`` at call
  time. A command on a job goes to that job's member client only, and a reserved
  ``Job`` is settled on the connection that reserved it, so a job of server A is never
  settled on server B.
- **Choosing a server.** ``put(body)`` goes round robin over the servers that are up
  (the counter moves once per put, so puts spread evenly over whatever is up).
  ``put(body, key=...)`` goes to the key's server on a consistent-hash ring (``_ring``:
  BLAKE2b, never the per-process salted ``hash()``), so related jobs land together and
  every process agrees where; a key whose server is down falls through to the next
  server along the ring (availability over locality). With ``strategy="hash"`` a key is
  required, so that a forgotten key is an error rather than a silent round robin.
- **A put moves on only when it surely made no job.** ``ConnectError`` is raised only before
  a connection exists and fails only commands that were waiting for it, so a put that
  gets it was never written: it is tried on the next server. Any other failure of a put
  whose bytes may have gone out (``ConnectionLostError``, ``CommandTimeoutError``) is
  delivered as it is, with a note, and never put again elsewhere: the job may exist.
  Servers marked down are skipped without a connect attempt (a "connection already
  known dead"). When no server is left, the put fails with ``ConnectError``, having
  made no job. One reply moves a put on as well: ``DRAINING``, which says that no job
  was made; so draining a server for maintenance sends new jobs to the others. (A
  draining server is not marked down: it still answers and its lanes still drain it;
  each put that picks it costs one extra round trip until it restarts.)
- **Down servers** (see ``_cluster_health``): any failure that closes a connection
  marks its server down; a background probe with capped, jittered exponential backoff
  (``retry_base``, ``retry_cap``) marks it up once it answers. ``cluster.down`` lists
  them. A server marked down by a blip comes back after the first probe.
- **The merged stream** (see ``_cluster_stream``): ``max_in_flight`` lanes per server,
  merged, hot and shared like ``Client.reserve_stream``. A server's failure closes its
  lanes only; they come back when a probe gets an answer. The stream fails only for
  errors no server can cure (a consumer's exception, ``BAD_FORMAT``), or with
  ``ConnectError`` once every server has been down for ``patience`` seconds (default 30:
  an outage of the whole cluster is news for the pipeline, and ``retry_with_backoff``
  turns it back into waiting; ``patience=None`` waits for ever).
- **Fan-out commands** (``stats``, ``summary``, ``stats_tube``, ``kick``,
  ``pause_tube``, ``peek_ready``, ...) go to every server that is up, concurrently, and
  report the servers that answered, in the order of ``addresses``; servers that fail
  are marked down and left out. With no answer at all they fail: with a server's reply
  word if one gave one, else ``ConnectError``.
- **Tube state** (``use``, ``watch``, ``ignore``) is client state: it is recorded on
  every member client (so a server that is down now gets it when its connection comes
  back, like any reconnect) and sent now to every server that is up. These never fail
  because a server is down.

Member clients are reached through a few private hooks (``Client._binding``,
``_used``, ``_watch``, ``_reset``, ``_close_now``), which keep ``Client`` itself
unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from reactivex import Observable

from ._client import Client
from ._closing import Closing
from ._cluster_health import Health, Member
from ._cluster_ops import FanOut, Put, PutMany, ReserveRace, first_failure
from ._cluster_stream import ClusterStream
from ._job import Job
from ._job_ref import JobRef
from ._loop import LoopBinding
from ._observable import CommandObservable, Emitter
from ._ring import HashRing
from .errors import CommandError, InvalidArgumentError, NotIgnoredError
from .protocol import (
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    MAX_BODY,
    JobStats,
    ServerStats,
    TubeStats,
)
from .protocol import Put as PutCommand
from .protocol import _validate as check

Strategy = Literal["round_robin", "hash"]
_STRATEGIES = ("round_robin", "hash")
_DEFAULT_PORT = 11300

ClusterJob = Job | JobRef
"""A job argument of a ``Cluster`` command: a ``Job`` or a ``JobRef``."""


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterSummary:
    """Totals of the ``stats`` of the servers that answered (``Cluster.summary()``).

    Attributes:
        servers: The servers that answered, in the order of ``Cluster.addresses``.
        down: The servers that did not (marked down), in the same order.
        current_jobs_urgent: Ready jobs with priority < 1024, on all of them.
        current_jobs_ready: Ready jobs.
        current_jobs_reserved: Reserved jobs.
        current_jobs_delayed: Delayed jobs.
        current_jobs_buried: Buried jobs.
        total_jobs: Jobs created since each server started.
        job_timeouts: Times a job's TTR ran out.
        cmd_put: ``put`` commands.
        cmd_delete: ``delete`` commands.
        current_connections: Open connections.
        current_producers: Open connections that have sent a ``put``.
        current_workers: Open connections that have sent a ``reserve``.
        current_waiting: Connections waiting in a ``reserve``.
        total_connections: Connections since each server started.
    """

    servers: tuple[str, ...]
    down: tuple[str, ...]
    current_jobs_urgent: int = 0
    current_jobs_ready: int = 0
    current_jobs_reserved: int = 0
    current_jobs_delayed: int = 0
    current_jobs_buried: int = 0
    total_jobs: int = 0
    job_timeouts: int = 0
    cmd_put: int = 0
    cmd_delete: int = 0
    current_connections: int = 0
    current_producers: int = 0
    current_workers: int = 0
    current_waiting: int = 0
    total_connections: int = 0

    @property
    def current_jobs(self) -> int:
        """Jobs that exist now: ready, reserved, delayed and buried."""
        return (
            self.current_jobs_ready
            + self.current_jobs_reserved
            + self.current_jobs_delayed
            + self.current_jobs_buried
        )

    @classmethod
    def of(cls, stats: Mapping[str, ServerStats], down: Sequence[str]) -> ClusterSummary:
        """Add up the stats of several servers.

        Args:
            stats: Each answering server's stats.
            down: The servers that did not answer.

        Returns:
            The totals.
        """
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("servers", "down")]
        totals = {name: sum(getattr(s, name) for s in stats.values()) for name in names}
        return cls(servers=tuple(stats), down=tuple(down), **totals)


def _client_options(address: str) -> dict[str, Any]:
    """``Client`` keyword arguments for ``host:port``, ``[v6]:port``, ``host`` or a path."""
    if not isinstance(address, str) or not address:
        raise InvalidArgumentError(f"a server address must be a non-empty str, got {address!r}")
    if address.startswith("/"):
        return {"unix_path": address}
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        host, port = address, str(_DEFAULT_PORT)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit():
        raise InvalidArgumentError(
            f"a server address is 'host:port', '[v6 address]:port', 'host' or a unix socket "
            f"path, got {address!r}"
        )
    return {"host": host, "port": int(port)}


class Cluster(Closing):
    """Several beanstalkd servers used as one: the methods of ``Client``, spread out.

    ::

        cluster = Cluster(["10.0.0.1:11300", "10.0.0.2:11300", "10.0.0.3:11300"])
        ref = cluster.put(b"hello").run()  # JobRef(server=..., id=...)
        cluster.put(b"x", key="customer-42").run()  # the same key, the same server
        cluster.reserve_stream(max_in_flight=4).pipe(process(handle)).subscribe(print)

    Every command returns a cold Observable (``await`` it, ``.run()`` it, or subscribe);
    the cluster binds to one event loop like a ``Client``. Construction does no I/O.

    Args:
        addresses: The servers: ``"host:port"``, ``"[v6 address]:port"``, ``"host"``
            (port 11300) or a unix socket path (starting with ``/``). At least one, no
            duplicates.
        strategy: ``"round_robin"``: a ``put`` without a key goes to the next server
            that is up, one with a key to the key's server on the hash ring.
            ``"hash"``: every ``put`` must have a key.
        use: The tube ``put`` uses when given none.
        watch: The tubes ``reserve`` and ``reserve_stream`` take jobs from.
        connect_timeout: Seconds to wait for a connection.
        command_timeout: Seconds of silence after which a command fails.
        max_body_size: Largest reply body accepted.
        retry_base: First wait before probing a server marked down, in seconds; also
            the first wait before a failed server's lanes are opened again.
        retry_cap: Longest wait between two probes of a server marked down, in seconds.

    Raises:
        InvalidArgumentError: no address, a bad or duplicate address, an unknown
            strategy, or a bad tube name, timeout or backoff.
    """

    def __init__(
        self,
        addresses: Iterable[str],
        *,
        strategy: Strategy = "round_robin",
        use: str = DEFAULT_TUBE,
        watch: Sequence[str] = (DEFAULT_TUBE,),
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        max_body_size: int = MAX_BODY,
        retry_base: float = 0.1,
        retry_cap: float = 5.0,
    ) -> None:
        if isinstance(addresses, str):
            raise InvalidArgumentError("addresses must be a sequence of addresses, not a str")
        if strategy not in _STRATEGIES:
            raise InvalidArgumentError(
                f"strategy must be 'round_robin' or 'hash', got {strategy!r}"
            )
        for value, what in ((retry_base, "retry_base"), (retry_cap, "retry_cap")):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgumentError(f"{what} must be a positive number, got {value!r}")
        self._binding = LoopBinding(self._reset)
        members: list[Member] = []
        for address in addresses:
            client = Client(
                **_client_options(address),
                use=use,
                watch=watch,
                connect_timeout=connect_timeout,
                command_timeout=command_timeout,
                max_body_size=max_body_size,
            )
            # The cluster's binding in place of the client's own, before any use: one
            # loop (one private thread, in a plain script) for every server.
            client._binding = self._binding
            if any(m.address == client.address for m in members):
                raise InvalidArgumentError(f"server {client.address} is listed twice")
            members.append(Member(client.address, client, len(members)))
        if not members:
            raise InvalidArgumentError("a cluster needs at least one server address")
        self._members = members
        self._by_address = {m.address: m for m in members}
        self._strategy: Strategy = strategy
        self._ring = HashRing([m.address for m in members])
        self._health = Health(members, retry_base=float(retry_base), retry_cap=float(retry_cap))
        self._next = 0
        self._used = members[0].client.used
        self._watch = members[0].client.watched
        self._closed = False

    def __repr__(self) -> str:
        down = self.down
        return f"<rxbeanstalk.Cluster {len(self._members)} servers, {len(down)} down>"

    # -- state ------------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[str, ...]:
        """The servers, in the order given (as ``Client.address`` spells them)."""
        return tuple(m.address for m in self._members)

    @property
    def clients(self) -> Mapping[str, Client]:
        """Each server's member client (on the cluster's loop; do not close them)."""
        return MappingProxyType({m.address: m.client for m in self._members})

    @property
    def down(self) -> list[str]:
        """The servers marked down now, in the order of ``addresses``."""
        return [m.address for m in self._members if m.down]

    @property
    def strategy(self) -> Strategy:
        """``"round_robin"`` or ``"hash"``."""
        return self._strategy

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
        """The event loop the cluster is bound to, once it was first used."""
        return self._binding.loop

    def server_for(self, key: str | bytes) -> str:
        """The server a ``put`` with this key goes to while every server is up.

        Args:
            key: The key (a ``str`` is taken as its UTF-8 bytes).

        Returns:
            The server's address, as in ``addresses``.

        Raises:
            InvalidArgumentError: ``key`` is not a ``str`` or ``bytes``.
        """
        return next(self._ring.walk(_key_bytes(key)))

    # -- lifecycle --------------------------------------------------------------------

    def _reset(self) -> None:
        # The old loop was closed: the member clients' connections and the probes died
        # with it.
        for member in self._members:
            member.client._reset()
        self._health.reset()

    def close(self) -> None:
        """Close every connection and stop the private loop thread, if any.

        Reserved jobs go back to their servers. Safe to call twice, from any thread.
        """
        if self._closed:
            return
        self._closed = True
        if not self._binding.close(self._close_now):
            for member in self._members:
                member.client._closed = True

    def _close_now(self) -> None:
        self._health.close()
        for member in self._members:
            # Not Client.close(): that would stop the loop thread the others share.
            member.client._closed = True
            member.client._close_now()

    # -- plumbing ---------------------------------------------------------------------

    def _observe(
        self, start: Callable[[Any, Emitter], None], argument: Any
    ) -> CommandObservable[Any]:
        return CommandObservable(self._binding, start, argument)

    def _member_of(self, job: object) -> tuple[Member, Job | int]:
        """The member a job argument belongs to, and what to pass to its client."""
        if isinstance(job, Job):
            for member in self._members:
                if member.client is job._client:
                    return member, job
            raise InvalidArgumentError(
                f"job {job.id} came from a client outside this cluster ({job._client.address})"
            )
        if isinstance(job, JobRef):
            owner = self._by_address.get(job.server)
            if owner is None:
                raise InvalidArgumentError(
                    f"{job!r} names a server outside this cluster; its servers are "
                    f"{', '.join(self.addresses)}"
                )
            return owner, check.job_id(job.id)
        if isinstance(job, int):
            raise InvalidArgumentError(
                f"a bare job id ({job!r}) names a job on every server of a cluster: pass the "
                "JobRef that put emitted, or the Job"
            )
        raise InvalidArgumentError(f"a job must be a Job or a JobRef, not {type(job).__name__}")

    def _round_robin(self) -> Iterator[Member]:
        up = [m for m in self._members if not m.down]
        start = self._next % len(up) if up else 0
        self._next += 1
        return itertools.chain(up[start:], up[:start], (m for m in self._members if m.down))

    def _ring_walk(self, key: bytes) -> Iterator[Member]:
        return (self._by_address[address] for address in self._ring.walk(key))

    def _candidates(self, key: bytes | None) -> Iterator[Member]:
        return self._round_robin() if key is None else self._ring_walk(key)

    def _key(self, key: str | bytes | None) -> bytes | None:
        if key is None:
            if self._strategy == "hash":
                raise InvalidArgumentError("this cluster's strategy is 'hash': put needs a key")
            return None
        return _key_bytes(key)

    def _fan_out(
        self,
        send: Callable[[Client], Observable[Any]],
        finish: Callable[
            [list[tuple[Member, Any]], list[tuple[Member, BaseException]], Emitter], None
        ],
    ) -> CommandObservable[Any]:
        def start(_: None, emitter: Emitter) -> None:
            def done(
                answers: list[tuple[Member, Any]], failures: list[tuple[Member, BaseException]]
            ) -> None:
                finish(answers, failures, emitter)

            FanOut(self._health, send, done, emitter).start()

        return self._observe(start, None)

    def _first_answer(
        self, what: str
    ) -> Callable[[list[tuple[Member, Any]], list[tuple[Member, BaseException]], Emitter], None]:
        def finish(
            answers: list[tuple[Member, Any]],
            failures: list[tuple[Member, BaseException]],
            emitter: Emitter,
        ) -> None:
            if answers:
                emitter.resolve(answers[0][1])
            else:
                emitter.reject(first_failure(what, failures, self._health.down))

        return finish

    # -- producer ---------------------------------------------------------------------

    def put(
        self,
        body: bytes | str,
        *,
        key: str | bytes | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
        tube: str | None = None,
    ) -> CommandObservable[JobRef]:
        """Put a job on one server (cold; emits its ``JobRef``).

        Without a key the server is the next one, round robin, of those that are up;
        with a key it is the key's server on the hash ring, or the next one along the
        ring while that one is down. The put moves to the next server only when nothing
        was sent to the one tried (``ConnectError``).

        Args:
            body: The job body; a ``str`` is encoded as UTF-8.
            key: Jobs with the same key go to the same server (a ``str`` or ``bytes``).
            priority: 0 (most urgent) to ``2**32-1``.
            delay: Seconds before the job is ready.
            ttr: Seconds a worker may hold the job.
            tube: The tube to put into; ``None`` for the cluster's used tube.

        Raises:
            InvalidArgumentError: a bad body, number, tube name or key, or no key with
                ``strategy="hash"`` (at call time).
        """
        command = PutCommand(body, priority, delay, ttr)  # type: ignore[arg-type]
        if tube is not None:
            check.tube_name(tube)
        key_bytes = self._key(key)

        def send(client: Client) -> Observable[int]:
            return client.put(command.body, priority=priority, delay=delay, ttr=ttr, tube=tube)

        def start(_: None, emitter: Emitter) -> None:
            Put(self._health, self._candidates(key_bytes), send, emitter).start()

        return self._observe(start, None)

    def put_many(
        self,
        bodies: Iterable[bytes | str],
        *,
        key: str | bytes | None = None,
        priority: int = DEFAULT_PRIORITY,
        delay: int = 0,
        ttr: int = DEFAULT_TTR,
        tube: str | None = None,
    ) -> CommandObservable[JobRef]:
        """Put many jobs (cold; emits each ``JobRef`` in the order of the bodies).

        Without a key the bodies are spread round robin over the servers that are up,
        and each server gets its share as one pipelined ``Client.put_many``; with a key
        they all go to the key's server. A share whose server could not be reached
        (nothing sent) goes to the other servers. The first other error ends the
        sequence; its notes say how many jobs were put.

        Raises:
            InvalidArgumentError: any bad body or argument (at call time, nothing sent).
        """
        # The checks of Put, once for the numbers and once per body: the member clients
        # build their own Put commands when the shares are sent.
        PutCommand(b"", priority, delay, ttr)
        validated = [check.body(b) for b in bodies]
        if tube is not None:
            check.tube_name(tube)
        key_bytes = self._key(key)

        def send(client: Client, share: list[bytes]) -> Observable[int]:
            return client.put_many(share, priority=priority, delay=delay, ttr=ttr, tube=tube)

        def assign(count: int, exclude: set[Member]) -> list[Member] | None:
            if key_bytes is not None:
                walk = self._ring_walk(key_bytes)
                home = next((m for m in walk if not m.down and m not in exclude), None)
                return None if home is None else [home] * count
            up = [m for m in self._members if not m.down and m not in exclude]
            if not up:
                return None
            start, self._next = self._next, self._next + count
            return [up[(start + i) % len(up)] for i in range(count)]

        def start(_: None, emitter: Emitter) -> None:
            PutMany(self._health, validated, assign, send, emitter).start()

        return self._observe(start, None)

    # -- tube state -------------------------------------------------------------------

    def use(self, tube: str) -> CommandObservable[str]:
        """Use ``tube`` for later puts, peeks and kicks, on every server (emits the tube).

        Recorded on every member client; sent now to each server that is up, and on
        reconnect to the others.

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        check.tube_name(tube)

        def start(_: None, emitter: Emitter) -> None:
            self._fan_out_state(lambda c: c.use(tube), emitter, lambda: tube)
            self._used = tube
            for member in self._members:
                member.client._used = tube

        return self._observe(start, None)

    def watch(self, tube: str) -> CommandObservable[int]:
        """Add ``tube`` to the watch list of every server (emits the number watched).

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        check.tube_name(tube)

        def start(_: None, emitter: Emitter) -> None:
            watch = self._watch if tube in self._watch else (*self._watch, tube)
            self._fan_out_state(lambda c: c.watch(tube), emitter, lambda: len(watch))
            self._set_watch(watch)

        return self._observe(start, None)

    def ignore(self, tube: str) -> CommandObservable[int]:
        """Remove ``tube`` from the watch list of every server (emits the number left).

        ``NotIgnoredError``, with nothing sent, if it is the last watched tube.

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        check.tube_name(tube)

        def start(_: None, emitter: Emitter) -> None:
            if self._watch == (tube,):
                emitter.reject(NotIgnoredError(f"'ignore {tube}': the last watched tube"))
                return
            watch = tuple(t for t in self._watch if t != tube)
            self._fan_out_state(lambda c: c.ignore(tube), emitter, lambda: len(watch))
            self._set_watch(watch)

        return self._observe(start, None)

    def _set_watch(self, watch: tuple[str, ...]) -> None:
        self._watch = watch
        for member in self._members:
            member.client._watch = watch

    def _fan_out_state(
        self, send: Callable[[Client], Observable[Any]], emitter: Emitter, value: Callable[[], Any]
    ) -> None:
        def done(_: list[tuple[Member, Any]], failures: list[tuple[Member, BaseException]]) -> None:
            # Only a reply word is news here: a server that could not be reached gets
            # the state on reconnect, from its client's record.
            errors = [e for _, e in failures if isinstance(e, CommandError)]
            if errors:
                emitter.reject(errors[0])
            else:
                emitter.resolve(value())

        FanOut(self._health, send, done, emitter).start()

    # -- consumer ---------------------------------------------------------------------

    def reserve(self, timeout: float | None = None) -> CommandObservable[Job]:
        """Reserve a job from whichever server has one first (cold; emits a ``Job``).

        A reserve goes to every server that is up; the first job wins and the other
        reserves are cancelled (their connections close, so the server hands back a job
        that was on its way). ``TimedOutError`` when every server timed out. Each call
        costs a connection per losing server: for a steady flow of jobs use
        ``reserve_stream``.

        Args:
            timeout: Seconds to wait; ``None`` waits for ever; ``0`` takes only a job
                that is ready now.

        Raises:
            InvalidArgumentError: a negative or too large timeout (at call time).
        """
        if timeout is not None:
            check.reserve_timeout(timeout)

        def send(client: Client) -> Observable[Job]:
            return client.reserve(timeout)

        def start(_: None, emitter: Emitter) -> None:
            ReserveRace(self._health, send, emitter).start()

        return self._observe(start, None)

    def reserve_job(self, job: ClusterJob) -> CommandObservable[Job]:
        """Reserve this job on its server (cold; emits a ``Job``).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.reserve_job(ref if isinstance(ref, int) else ref.id)

    def reserve_stream(
        self,
        tubes: Sequence[str] | None = None,
        *,
        max_in_flight: int = 1,
        drain_timeout: float = 5.0,
        auto_touch: bool = False,
        patience: float | None = 30.0,
    ) -> ClusterStream:
        """A hot stream of the jobs of every server: ``max_in_flight`` lanes per server.

        At most ``max_in_flight`` jobs per server are reserved and unsettled at once.
        When a server fails, its lanes close (the server takes back their jobs) and
        open again once the server answers a probe; the stream runs on with the others.

        Args:
            tubes: The tubes to reserve from; ``None`` for the watch list when each
                server's lanes start.
            max_in_flight: Lanes (and jobs held at most) per server.
            drain_timeout: Seconds delivered jobs get to be settled after the last
                subscriber leaves.
            auto_touch: Touch each unsettled job shortly before its TTR runs out.
            patience: Seconds every server may be down at once before the stream fails
                with ``ConnectError``; ``None`` waits for ever.

        Raises:
            InvalidArgumentError: bad tube names, credit, timeout or patience (at call
                time).
        """
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int | float) or patience <= 0
        ):
            raise InvalidArgumentError(
                f"patience must be a positive number or None, got {patience!r}"
            )
        streams = [
            (
                member,
                member.client.reserve_stream(
                    tubes,
                    max_in_flight=max_in_flight,
                    drain_timeout=drain_timeout,
                    auto_touch=auto_touch,
                ),
            )
            for member in self._members
        ]
        return ClusterStream(
            self._binding,
            self._health,
            streams,
            patience=None if patience is None else float(patience),
        )

    # -- job commands -----------------------------------------------------------------

    def delete(self, job: ClusterJob) -> CommandObservable[int]:
        """Delete a job on its server (cold; emits its id).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.delete(ref)

    def release(
        self, job: ClusterJob, *, priority: int | None = None, delay: int = 0
    ) -> CommandObservable[int]:
        """Release a reserved job on its server (cold; emits its id).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster, or a bad
                priority or delay (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.release(ref, priority=priority, delay=delay)

    def bury(self, job: ClusterJob, *, priority: int | None = None) -> CommandObservable[int]:
        """Bury a reserved job on its server (cold; emits its id).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster, or a bad
                priority (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.bury(ref, priority=priority)

    def touch(self, job: ClusterJob) -> CommandObservable[int]:
        """Restart a reserved job's TTR on its server (cold; emits its id).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.touch(ref)

    def kick_job(self, job: ClusterJob) -> CommandObservable[int]:
        """Kick one buried or delayed job on its server (cold; emits its id).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.kick_job(ref)

    def stats_job(self, job: ClusterJob) -> CommandObservable[JobStats]:
        """Statistics of one job, from its server (cold; emits ``JobStats``).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.stats_job(ref)

    def peek(self, job: ClusterJob) -> CommandObservable[Job]:
        """The job, in any state, from its server (cold; emits a ``Job``).

        Raises:
            InvalidArgumentError: not a ``Job`` or ``JobRef`` of this cluster (at call time).
        """
        member, ref = self._member_of(job)
        return member.client.peek(ref if isinstance(ref, int) else ref.id)

    # -- every server -----------------------------------------------------------------

    def peek_ready(self) -> CommandObservable[Job]:
        """A ready job of the used tube, from the first server (in address order) with one.

        ``NotFoundError`` if no server that answered has one.
        """
        return self._fan_out(lambda c: c.peek_ready(), self._first_answer("peek-ready"))

    def peek_delayed(self) -> CommandObservable[Job]:
        """A delayed job of the used tube, from the first server with one."""
        return self._fan_out(lambda c: c.peek_delayed(), self._first_answer("peek-delayed"))

    def peek_buried(self) -> CommandObservable[Job]:
        """A buried job of the used tube, from the first server with one."""
        return self._fan_out(lambda c: c.peek_buried(), self._first_answer("peek-buried"))

    def kick(self, bound: int) -> CommandObservable[int]:
        """Kick up to ``bound`` jobs of the used tube on each server (emits the total).

        Raises:
            InvalidArgumentError: a bad bound (at call time).
        """
        check.integer(bound, "bound")
        return self._fan_out(lambda c: c.kick(bound), self._total("kick"))

    def _total(
        self, what: str
    ) -> Callable[[list[tuple[Member, Any]], list[tuple[Member, BaseException]], Emitter], None]:
        def finish(
            answers: list[tuple[Member, Any]],
            failures: list[tuple[Member, BaseException]],
            emitter: Emitter,
        ) -> None:
            if answers:
                emitter.resolve(sum(value for _, value in answers))
            else:
                emitter.reject(first_failure(what, failures, self._health.down))

        return finish

    def pause_tube(self, tube: str, delay: int) -> CommandObservable[str]:
        """Pause ``tube`` for ``delay`` seconds on every server that has it (emits it).

        ``NotFoundError`` if no server that answered has the tube.

        Raises:
            InvalidArgumentError: a bad tube name or delay (at call time).
        """
        check.tube_name(tube)
        check.integer(delay, "delay")
        return self._fan_out(lambda c: c.pause_tube(tube, delay), self._first_answer("pause-tube"))

    def stats(self) -> CommandObservable[dict[str, ServerStats]]:
        """Each server's statistics (emits ``{address: ServerStats}``).

        Only the servers that answered are in the mapping, in the order of
        ``addresses``; ``down`` names the others. ``ConnectError`` if none answered.
        """
        return self._fan_out(lambda c: c.stats(), self._mapping("stats"))

    def stats_tube(self, tube: str) -> CommandObservable[dict[str, TubeStats]]:
        """The tube's statistics on each server that has it (``{address: TubeStats}``).

        ``NotFoundError`` if no server that answered has the tube.

        Raises:
            InvalidArgumentError: a bad tube name (at call time).
        """
        check.tube_name(tube)
        return self._fan_out(lambda c: c.stats_tube(tube), self._mapping("stats-tube"))

    def _mapping(
        self, what: str
    ) -> Callable[[list[tuple[Member, Any]], list[tuple[Member, BaseException]], Emitter], None]:
        def finish(
            answers: list[tuple[Member, Any]],
            failures: list[tuple[Member, BaseException]],
            emitter: Emitter,
        ) -> None:
            if answers:
                emitter.resolve({m.address: value for m, value in answers})
            else:
                emitter.reject(first_failure(what, failures, self._health.down))

        return finish

    def summary(self) -> CommandObservable[ClusterSummary]:
        """Totals over the servers that answered ``stats`` (emits a ``ClusterSummary``).

        ``ConnectError`` if none answered.
        """

        def finish(
            answers: list[tuple[Member, Any]],
            failures: list[tuple[Member, BaseException]],
            emitter: Emitter,
        ) -> None:
            if not answers:
                emitter.reject(first_failure("stats", failures, self._health.down))
                return
            stats = {m.address: value for m, value in answers}
            down = [m.address for m in self._members if m.address not in stats]
            emitter.resolve(ClusterSummary.of(stats, down))

        return self._fan_out(lambda c: c.stats(), finish)

    def list_tubes(self) -> CommandObservable[list[str]]:
        """Every tube on any server that answered, each once (first seen first)."""

        def finish(
            answers: list[tuple[Member, Any]],
            failures: list[tuple[Member, BaseException]],
            emitter: Emitter,
        ) -> None:
            if not answers:
                emitter.reject(first_failure("list-tubes", failures, self._health.down))
                return
            emitter.resolve(list(dict.fromkeys(t for _, tubes in answers for t in tubes)))

        return self._fan_out(lambda c: c.list_tubes(), finish)

    def list_tube_used(self) -> CommandObservable[str]:
        """The used tube, as the first server that answered has it."""
        return self._fan_out(lambda c: c.list_tube_used(), self._first_answer("list-tube-used"))

    def list_tubes_watched(self) -> CommandObservable[list[str]]:
        """The watch list, as the first server that answered has it."""
        return self._fan_out(
            lambda c: c.list_tubes_watched(), self._first_answer("list-tubes-watched")
        )


def _key_bytes(key: object) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    raise InvalidArgumentError(f"a key must be a str or bytes, not {type(key).__name__}")

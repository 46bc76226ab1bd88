"""Commands that involve several servers of a cluster: put, put_many, fan-out, reserve.

Each class here is started on the cluster's loop with the ``Emitter`` of one
subscription, subscribes to the member clients' own command Observables (so each server
gets exactly the bytes a ``Client`` would send), and ends the emitter once.

The one rule that matters for ``put``: a server is left for the next one only when the
put's bytes were never written. That is knowable from the error alone. ``ConnectError``
is raised only by ``open_connection`` (``_connection.py``), before the connection exists;
the channel queues a command until its connection is open and fails the queue with the
``ConnectError`` when it cannot open one (``_channel.py``), so a command that gets it was
never written anywhere. Once a connection is open, every failure of a command sent on it
is a ``ConnectionLostError`` (or a ``CommandTimeoutError``, one of those), whether or not
its bytes had left: the put may have created its job, so it is reported, never repeated
elsewhere (that would be a duplicate job on another server).

One reply also moves a put on: ``DRAINING``. The server answered, so the bytes did go
out, but the answer says that it made no job (a server in drain mode refuses every put
until it restarts), so the next server is as safe a place as after a refused connect.
That is what draining a server for maintenance means to a cluster: new jobs go to the
others, while its lanes drain what it holds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc

from ._client import Client
from ._cluster_health import Health, Member
from ._job import Job
from ._job_ref import JobRef
from ._observable import Emitter
from .errors import (
    CommandError,
    ConnectError,
    ConnectionLostError,
    DrainingError,
    TimedOutError,
)

T = TypeVar("T")


def no_server(
    what: str,
    skipped: Sequence[Member],
    tried: Sequence[tuple[Member, BaseException]],
    outcome: str = "",
) -> ConnectError:
    """The error of a command no server could take, with each server's reason.

    Args:
        what: The command, for the message (``"put"``).
        skipped: Servers passed over because they were marked down.
        tried: Servers tried, with the error each gave.
        outcome: What that means, for the message (``"no job was made"``).

    Returns:
        A ``ConnectError``, caused by the last reason.
    """
    reasons = [f"{m.address}: marked down ({m.reason})" for m in skipped]
    reasons += [f"{m.address}: {error}" for m, error in tried]
    head = f"no server could take the {what}" + (f"; {outcome}" if outcome else "")
    error = ConnectError(f"{head}: " + "; ".join(reasons) if reasons else head)
    last = tried[-1][1] if tried else (skipped[-1].reason if skipped else None)
    if last is not None:
        error.__cause__ = last
    return error


def made_no_job(error: BaseException) -> bool:
    """Whether a failed put certainly made no job, so that the next server may take it.

    ``ConnectError``: its bytes were never written. ``DrainingError``: the server
    answered that it takes no new jobs.
    """
    return isinstance(error, ConnectError | DrainingError)


def put_refused(
    what: str, skipped: Sequence[Member], tried: Sequence[tuple[Member, BaseException]]
) -> BaseException:
    """The error of a put that no server took (and that made no job anywhere).

    Returns:
        The ``DrainingError`` when every server tried answered ``DRAINING`` and none was
        skipped; else a ``ConnectError`` naming each server's reason.
    """
    if tried and not skipped and all(isinstance(e, DrainingError) for _, e in tried):
        error = tried[-1][1]
        error.add_note(f"every server of the cluster is draining; the {what} made no job")
        return error
    return no_server(what, skipped, tried, "no job was made")


def _lost_note(error: BaseException, member: Member, what: str) -> None:
    if isinstance(error, ConnectionLostError):
        error.add_note(
            f"the {what} was sent to {member.address} and its reply was lost: the job may "
            "exist there; it was not put on any other server"
        )


class Put:
    """One ``put``: tries servers in order, moving on only while no job was made.

    Args:
        health: The cluster's down marks.
        candidates: The servers in the order to try them.
        send: Makes the put Observable of one member's client.
        emitter: Where the ``JobRef`` (or the error) goes.
    """

    __slots__ = (
        "_attempt",
        "_candidates",
        "_emitter",
        "_health",
        "_send",
        "_skipped",
        "_sub",
        "_tried",
    )

    def __init__(
        self,
        health: Health,
        candidates: Iterator[Member],
        send: Callable[[Client], Observable[int]],
        emitter: Emitter,
    ) -> None:
        self._health = health
        self._candidates = candidates
        self._send = send
        self._emitter = emitter
        self._skipped: list[Member] = []
        self._tried: list[tuple[Member, BaseException]] = []
        self._sub: abc.DisposableBase | None = None
        self._attempt = 0

    def start(self) -> None:
        """Send the put to the first candidate that is not marked down."""
        self._emitter.on_cancel = self._cancel
        self._next()

    def _cancel(self) -> None:
        if self._sub is not None:
            self._sub.dispose()

    def _next(self) -> None:
        for member in self._candidates:
            if member.down:
                self._skipped.append(member)
                continue
            self._attempt += 1
            attempt = self._attempt
            sub = self._send(member.client).subscribe(
                functools.partial(self._put, member), functools.partial(self._failed, member)
            )
            if attempt == self._attempt:  # (no later attempt started inside subscribe)
                self._sub = sub
            return
        self._emitter.reject(put_refused("put", self._skipped, self._tried))

    def _put(self, member: Member, job_id: int) -> None:
        self._emitter.resolve(JobRef(member.address, job_id))

    def _failed(self, member: Member, error: BaseException) -> None:
        self._health.failed(member, error)
        if made_no_job(error) and not self._emitter.done:
            self._tried.append((member, error))
            self._next()
            return
        _lost_note(error, member, "put")
        self._emitter.reject(error)


class PutMany:
    """``put_many``: bodies spread over servers, one pipelined ``put_many`` per server.

    JobRefs are emitted in the order of the bodies. A server's batch that fails with
    ``ConnectError`` had none of its unacknowledged puts sent (the first error of a
    ``put_many`` ends it; a connection that was open fails its puts with
    ``ConnectionLostError`` first), and one that fails with ``DrainingError`` made no
    job from them (drain mode lasts until the server restarts, so every later put of
    the batch got ``DRAINING`` too): those bodies are handed to the other servers.

    Args:
        health: The cluster's down marks.
        bodies: The validated bodies.
        assign: Picks the servers for ``count`` bodies, one each, none of them in
            ``exclude``: ``assign(count, exclude)``; ``None`` when no server is left.
        send: Makes the ``put_many`` Observable of one member's client for some bodies.
        emitter: Where the JobRefs go.
    """

    def __init__(
        self,
        health: Health,
        bodies: list[bytes],
        assign: Callable[[int, set[Member]], list[Member] | None],
        send: Callable[[Client, list[bytes]], Observable[int]],
        emitter: Emitter,
    ) -> None:
        self._health = health
        self._bodies = bodies
        self._assign = assign
        self._send = send
        self._emitter = emitter
        self._refs: list[JobRef | None] = [None] * len(bodies)
        self._emitted = 0
        self._put = 0
        self._subs: list[abc.DisposableBase] = []
        self._skipped: list[Member] = []
        self._tried: list[tuple[Member, BaseException]] = []

    def start(self) -> None:
        """Spread the bodies and send each server its batch."""
        self._emitter.on_cancel = self._cancel
        if not self._bodies:
            self._emitter.complete()
            return
        self._spread(list(range(len(self._bodies))), set())

    def _cancel(self) -> None:
        for sub in self._subs:
            sub.dispose()

    def _spread(self, indices: list[int], exclude: set[Member]) -> None:
        if not indices:
            return
        members = self._assign(len(indices), exclude)
        if members is None:
            tried = {m for m, _ in self._tried}
            skipped = [m for m in self._health.down if m not in tried]
            self._fail(put_refused("put_many", skipped, self._tried))
            return
        batches: dict[Member, list[int]] = {}
        for index, member in zip(indices, members, strict=True):
            batches.setdefault(member, []).append(index)
        for member, batch in batches.items():
            self._subs.append(self._batch(member, batch, exclude))
            if self._emitter.done:
                return

    def _batch(self, member: Member, batch: list[int], exclude: set[Member]) -> abc.DisposableBase:
        acked = 0

        def on_next(job_id: int) -> None:
            nonlocal acked
            self._refs[batch[acked]] = JobRef(member.address, job_id)
            acked += 1
            self._put += 1
            self._flush()

        def on_error(error: Exception) -> None:
            self._health.failed(member, error)
            if self._emitter.done:
                return
            if made_no_job(error):
                self._tried.append((member, error))
                self._spread(batch[acked:], exclude | {member})
                return
            _lost_note(error, member, "put_many batch")
            self._fail(error)

        return self._send(member.client, [self._bodies[i] for i in batch]).subscribe(
            on_next, on_error
        )

    def _flush(self) -> None:
        refs = self._refs
        while self._emitted < len(refs) and (ref := refs[self._emitted]) is not None:
            self._emitted += 1
            self._emitter.next(ref)
        if self._emitted == len(refs):
            self._emitter.complete()

    def _fail(self, error: BaseException) -> None:
        error.add_note(
            f"put_many: {self._put} of {len(self._bodies)} jobs were put before this error "
            f"(the JobRefs of the first {self._emitted} were emitted)"
        )
        self._cancel()
        self._emitter.error(error)


Finish = Callable[[list[tuple[Member, Any]], list[tuple[Member, BaseException]]], None]


class FanOut(Generic[T]):
    """One command on every server that is not marked down, gathered into one result.

    Servers whose connection fails are marked down; ``finish`` gets the answers and the
    failures, each in address order, once every server answered or failed.

    Args:
        health: The cluster's down marks.
        send: Makes the command Observable of one member's client.
        finish: Ends the emitter from ``(answers, failures)``.
        emitter: The subscription's emitter (for cancelling).
    """

    def __init__(
        self,
        health: Health,
        send: Callable[[Client], Observable[T]],
        finish: Finish,
        emitter: Emitter,
    ) -> None:
        self._health = health
        self._send = send
        self._finish = finish
        self._emitter = emitter
        self._answers: dict[Member, T] = {}
        self._failures: dict[Member, BaseException] = {}
        self._pending = 0
        self._subs: list[abc.DisposableBase] = []

    def start(self) -> None:
        """Send the command to every server that is up."""
        self._emitter.on_cancel = self._cancel
        members = [m for m in self._health.members if not m.down]
        self._pending = len(members)
        for member in members:
            self._subs.append(
                self._send(member.client).subscribe(
                    functools.partial(self._answer, member),
                    functools.partial(self._failed, member),
                )
            )
        if not members:
            self._end()

    def _cancel(self) -> None:
        for sub in self._subs:
            sub.dispose()

    def _answer(self, member: Member, value: T) -> None:
        self._answers[member] = value
        self._done()

    def _failed(self, member: Member, error: BaseException) -> None:
        self._health.failed(member, error)
        self._failures[member] = error
        self._done()

    def _done(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._end()

    def _end(self) -> None:
        if self._emitter.done:
            return
        order = self._health.members
        answers = [(m, self._answers[m]) for m in order if m in self._answers]
        failures = [(m, self._failures[m]) for m in order if m in self._failures]
        self._finish(answers, failures)


def first_failure(
    what: str, failures: list[tuple[Member, BaseException]], down: Sequence[Member]
) -> BaseException:
    """The error of a fan-out nobody answered: a reply word if any, else ``ConnectError``.

    Args:
        what: The command, for the message.
        failures: The failures, in address order.
        down: The servers that were skipped as down.

    Returns:
        The first ``CommandError`` (the servers answered, with an error word), or a
        ``ConnectError`` listing why no server could be reached.
    """
    for _, error in failures:
        if isinstance(error, CommandError):
            return error
    skipped = [m for m in down if m not in {f[0] for f in failures}]
    return no_server(what, skipped, failures)


class ReserveRace:
    """``reserve``: a reserve on every server that is up; the first job wins.

    The other reserves are disposed at once, which closes their connections: a job that
    was already on its way back on one of them goes back to its server untouched.

    Args:
        health: The cluster's down marks.
        send: Makes the reserve Observable of one member's client.
        emitter: Where the job goes.
    """

    def __init__(
        self, health: Health, send: Callable[[Client], Observable[Job]], emitter: Emitter
    ) -> None:
        self._health = health
        self._send = send
        self._emitter = emitter
        self._subs: list[abc.DisposableBase] = []
        self._pending = 0
        self._failures: list[tuple[Member, BaseException]] = []

    def start(self) -> None:
        """Send a reserve to every server that is up."""
        self._emitter.on_cancel = self._cancel
        members = [m for m in self._health.members if not m.down]
        self._pending = len(members)
        if not members:
            self._emitter.reject(no_server("reserve", self._health.down, []))
            return
        for member in members:
            self._subs.append(
                self._send(member.client).subscribe(
                    self._job, functools.partial(self._failed, member)
                )
            )

    def _cancel(self) -> None:
        for sub in self._subs:
            sub.dispose()

    def _job(self, job: Job) -> None:
        if self._emitter.done:
            return
        # Dispose the losers before delivering: a job arriving on one of them later is
        # handed back by its reserve (its connection closes), never delivered twice.
        self._emitter.on_cancel = None
        self._cancel()
        self._emitter.resolve(job)

    def _failed(self, member: Member, error: BaseException) -> None:
        self._health.failed(member, error)
        if self._emitter.done:
            return
        self._pending -= 1
        if isinstance(error, CommandError) and not isinstance(error, TimedOutError):
            # A reply word other than TIMED_OUT (DEADLINE_SOON, a server error) is news
            # for the caller, as it would be from a single server.
            self._cancel()
            self._emitter.reject(error)
            return
        self._failures.append((member, error))
        if self._pending == 0:
            timed_out = [e for _, e in self._failures if isinstance(e, TimedOutError)]
            if timed_out:
                self._emitter.reject(timed_out[0])
            elif all(isinstance(e, ConnectError) for _, e in self._failures):
                self._emitter.reject(no_server("reserve", [], self._failures))
            else:
                # Some server was reached and then lost: its error says more than a
                # refusal elsewhere.
                lost = [e for _, e in self._failures if not isinstance(e, ConnectError)]
                self._emitter.reject(lost[0])

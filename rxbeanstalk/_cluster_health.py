"""Which servers of a cluster are down, and the background probes that bring them back.

A server is marked down when the cluster learns that a connection to it failed: a
``ConnectError`` (refused, timed out), or a ``ConnectionLostError`` or ``ProtocolError``
on a command or a reserving lane (each means that connection was closed). From then on
``put`` skips it without trying it, so no put waits for a dead server's connect timeout,
and a probe task asks it ``list-tube-used`` after a capped, jittered exponential backoff
until it answers. The probe goes over the server's own command channel, so once it
answers, the channel's connection is open and its tube state restored for the next put.
An answer marks the server up and tells every listener (the merged reserve streams
re-open the server's lanes then).

Everything here runs on the cluster's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from ._client import Client
from .errors import BeanstalkError, ProtocolError, TransportError


def backoff(failures: int, base: float, cap: float) -> float:
    """Seconds to wait after ``failures`` failures in a row (>= 1).

    ``min(cap, base * 2**(failures - 1))`` times a random factor between 0.5 and 1, so
    the clients of many processes do not come back to a server in step.

    Args:
        failures: Consecutive failures so far.
        base: The first wait.
        cap: The longest wait.

    Returns:
        The wait, in seconds.
    """
    return min(cap, base * 2.0 ** max(0, failures - 1)) * random.uniform(0.5, 1.0)


def marks_down(error: BaseException) -> bool:
    """Whether ``error`` means the connection it happened on is gone."""
    return isinstance(error, TransportError | ProtocolError)


class Member:
    """One server of a cluster: its address, its client, and whether it is down.

    Attributes:
        address: The server's address (``Client.address``).
        client: The client that talks to it.
        index: Its position in ``Cluster.addresses``.
        down: Whether it is marked down.
        reason: The failure that marked it down (the latest one while it stays down).
        down_since: ``time.monotonic()`` when it was marked down.
    """

    __slots__ = ("_probe", "address", "client", "down", "down_since", "index", "reason")

    def __init__(self, address: str, client: Client, index: int) -> None:
        self.address = address
        self.client = client
        self.index = index
        self.down = False
        self.reason: BaseException | None = None
        self.down_since = 0.0
        self._probe: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Member {self.address} {'down' if self.down else 'up'}>"


Listener = Callable[[Member], None]
"""Called with a member each time it is marked down or up."""


class Health:
    """The down marks of a cluster's members and the probes behind them.

    Args:
        members: The members, in address order.
        retry_base: The first wait before probing a server marked down, in seconds.
        retry_cap: The longest wait between two probes, in seconds.
    """

    def __init__(self, members: list[Member], *, retry_base: float, retry_cap: float) -> None:
        self.members = members
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.closed = False
        self._listeners: list[Listener] = []

    @property
    def down(self) -> list[Member]:
        """The members marked down, in address order."""
        return [member for member in self.members if member.down]

    def listen(self, listener: Listener) -> None:
        """Call ``listener(member)`` on every change of a member's mark."""
        self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _notify(self, member: Member) -> None:
        for listener in list(self._listeners):
            listener(member)

    def failed(self, member: Member, error: BaseException) -> None:
        """A command or lane on ``member`` failed with ``error``: mark it down if need be.

        Only errors that close a connection (``TransportError``, ``ProtocolError``) mark
        a server down; a reply word (a ``CommandError``) shows that it is up.
        """
        if marks_down(error):
            self.mark_down(member, error)

    def mark_down(self, member: Member, reason: BaseException) -> None:
        """Mark ``member`` down (it stays down until a probe gets an answer)."""
        member.reason = reason
        if member.down or self.closed:
            return
        member.down = True
        member.down_since = time.monotonic()
        member._probe = asyncio.get_running_loop().create_task(self._probe(member))
        self._notify(member)

    def mark_up(self, member: Member) -> None:
        """Mark ``member`` up again (a probe got an answer)."""
        if not member.down:
            return
        member.down = False
        member.reason = None
        self._notify(member)

    async def _probe(self, member: Member) -> None:
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(backoff(failures, self.retry_base, self.retry_cap))
            try:
                await member.client.list_tube_used()
            except (TransportError, ProtocolError) as error:
                member.reason = error
                continue
            except BeanstalkError:
                pass  # an error word is an answer too: the server is up
            break
        member._probe = None
        self.mark_up(member)

    def reset(self) -> None:
        """Forget every mark: the loop the probes ran on was closed (a rebind)."""
        for member in self.members:
            member._probe = None  # its task died with the old loop
            member.down = False
            member.reason = None

    def close(self) -> None:
        """Stop every probe; nothing is marked down or probed any more."""
        self.closed = True
        for member in self.members:
            task, member._probe = member._probe, None
            if task is not None:
                task.cancel()

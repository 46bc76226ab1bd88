"""A consistent-hash ring: which server a key's jobs go to, and where they fall through.

Each server is placed on a 64-bit ring at ``replicas`` points, each the BLAKE2b hash of
``"<address>#<n>"``; a key goes to the first point at or after its own hash. Compared
with ``hash(key) % servers`` this has two properties a cluster needs:

- Adding or removing a server moves only the keys whose points it takes or frees (about
  ``1/servers`` of them), so related jobs keep landing together through a resize.
- Walking on from a key's point gives an order of fall-back servers that differs from
  key to key, so the keys of a server that is down spread over all the others instead
  of piling onto one neighbour.

BLAKE2b over UTF-8 bytes, not Python's ``hash()``: ``hash()`` of a ``str`` is salted per
process (``PYTHONHASHSEED``), so two producers would disagree about where a key lives.
The ring depends only on the set of addresses, not on the order they were given in.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator, Sequence

# Points per server. More points spread keys more evenly (the spread's relative
# deviation shrinks like 1/sqrt(replicas)); 160 keeps it within a few percent for a
# handful of servers, and building the ring costs well under a millisecond.
DEFAULT_REPLICAS = 160


def stable_hash(data: bytes) -> int:
    """A 64-bit hash of ``data`` that is the same in every process and on every platform.

    Args:
        data: The bytes to hash.

    Returns:
        An ``int`` in ``0 .. 2**64 - 1``.
    """
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """Servers placed on a ring of 64-bit hashes.

    Args:
        nodes: The server addresses (distinct).
        replicas: Points per server on the ring.
    """

    __slots__ = ("_hashes", "_nodes", "_size")

    def __init__(self, nodes: Sequence[str], replicas: int = DEFAULT_REPLICAS) -> None:
        points = sorted(
            (stable_hash(f"{node}#{n}".encode()), node) for node in nodes for n in range(replicas)
        )
        self._hashes = [point for point, _ in points]
        self._nodes = [node for _, node in points]
        self._size = len(set(nodes))

    def walk(self, key: bytes) -> Iterator[str]:
        """Every server once, starting with the key's own, in ring order after it.

        The first is where the key lives while every server is up; the next ones are
        where it falls through to when the earlier ones are down.

        Args:
            key: The key's bytes.

        Yields:
            Server addresses, each once.
        """
        if not self._nodes:
            return
        count = len(self._nodes)
        start = bisect.bisect_left(self._hashes, stable_hash(key))
        seen: set[str] = set()
        for step in range(count):
            node = self._nodes[(start + step) % count]
            if node not in seen:
                seen.add(node)
                yield node
                if len(seen) == self._size:
                    return

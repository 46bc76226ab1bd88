"""``Closing``: ``with`` and ``async with`` for objects whose ``close()`` is synchronous.

``Client`` and ``Cluster`` close the same way inside either block: ``close()`` returns at
once on the object's loop and is bounded from any other thread, so the async exit needs
nothing to await.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """Mixin: both context-manager protocols, each ending with ``self.close()``."""

    __slots__ = ()

    def close(self) -> None:
        """Release everything the object holds (subclasses implement it)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

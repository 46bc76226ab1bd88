"""Which event loop a client belongs to, and how to reach it from any thread.

A client is bound to one loop: the loop running when it is first used (asyncio code,
Jupyter), or, when no loop is running (a plain script), a private loop in a daemon
thread that it starts itself. Work for the loop is called directly on the loop's own
thread and handed over with ``call_soon_threadsafe`` from any other thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from .errors import LoopBindingError

# The C-level accessor: unlike get_running_loop() it returns None instead of raising,
# and it is the cheapest way to ask on every subscription.
# (Also used by the Observables' fast path, to see they run on the client's loop.)
running_loop = asyncio._get_running_loop
_running_loop = running_loop


class LoopBinding:
    """The event loop a client is bound to.

    Args:
        on_rebind: Called (on the new loop) when the old loop was closed and the client
            moves to a new one, so that state tied to the old loop can be dropped.
    """

    def __init__(self, on_rebind: Callable[[], None]) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._on_rebind = on_rebind

    @property
    def private(self) -> bool:
        """Whether the loop is the client's own, in its own thread."""
        return self._thread is not None

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the bound loop's thread."""
        return self._thread_id == threading.get_ident()

    def bind(self) -> asyncio.AbstractEventLoop:
        """Return the bound loop, binding one on first use.

        Returns:
            The loop.

        Raises:
            LoopBindingError: another loop is running in this thread.
        """
        loop = self.loop
        running = _running_loop()
        if loop is not None and not loop.is_closed():
            if running is None or running is loop:
                return loop
            if self.private and not self.on_loop_thread():
                # A different loop runs here while the client has its own: hand work
                # over to the client's thread like any other foreign thread.
                return loop
            raise LoopBindingError(
                "this client is bound to another event loop; create one client per loop"
            )
        with self._lock:
            if self.loop is not None and not self.loop.is_closed():
                return self.loop
            rebind = self.loop is not None
            if running is not None:
                self.loop = running
                self._thread_id = threading.get_ident()
                self._thread = None
            else:
                self._start_private()
            assert self.loop is not None
        if rebind:
            self._on_rebind()
        return self.loop

    def _start_private(self) -> None:
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=main, name="rxbeanstalk-loop", daemon=True)
        thread.start()
        started.wait()
        self.loop = loop
        self._thread = thread
        self._thread_id = thread.ident

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop: now if on its thread, else as soon as it can."""
        loop = self.loop
        assert loop is not None
        if self._thread_id == threading.get_ident():
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def close(self, close_now: Callable[[], None], timeout: float = 5.0) -> bool:
        """Run ``close_now`` on the bound loop, then stop the private loop thread, if any.

        On the loop's own thread ``close_now`` runs at once; from any other thread this
        waits at most ``timeout`` seconds for the loop to run it (a loop that is gone or
        stuck cannot be helped, and the wait gives up quietly).

        Returns:
            False when the binding has no live loop (nothing was run).
        """
        loop = self.loop
        if loop is None or loop.is_closed():
            return False
        if self.on_loop_thread():
            close_now()
        else:

            async def run_close() -> None:
                close_now()

            done = asyncio.run_coroutine_threadsafe(run_close(), loop)
            with contextlib.suppress(Exception):
                done.result(timeout=timeout)
        self.stop(timeout)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the private loop thread, if there is one (waits at most ``timeout``)."""
        thread, loop = self._thread, self.loop
        if thread is None or loop is None or loop.is_closed():
            return
        if thread.ident == threading.get_ident():
            loop.stop()
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

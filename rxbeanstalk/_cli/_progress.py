"""A progress bar on stderr that redraws in place on a terminal and logs lines elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressBar"]

_BAR_WIDTH = 30
# Redraw at most this often: a terminal in place, anything else (a log file) one line each.
_TTY_EVERY = 0.1
_LOG_EVERY = 1.0


class ProgressBar:
    """Shows ``done`` out of an estimated ``total`` with a rate, throttled.

    On a terminal the line is redrawn in place (carriage return); on anything else a new
    line is written at most once a second, so a log is not flooded. ``close()`` always
    writes the final state on its own line.

    Args:
        stream: Where to draw (stderr, so that stdout stays clean for results).
        label: Put in front of the bar, for example ``drain emails``.
        enabled: ``False`` draws nothing at all (``--quiet``).
        clock: Monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = label
        self._enabled = enabled
        self._clock = clock
        self._tty = _isatty(stream)
        self._started = clock()
        self._drawn_at: float | None = None
        self._done = 0
        self._total: int | None = None
        self._closed = False

    def update(self, done: int, total: int | None = None) -> None:
        """Record progress and redraw if the last drawing is old enough.

        Args:
            done: Units finished so far.
            total: The expected number of units, if known; never shown below ``done``.
        """
        self._done = done
        if total is not None:
            self._total = total
        now = self._clock()
        every = _TTY_EVERY if self._tty else _LOG_EVERY
        if self._drawn_at is None or now - self._drawn_at >= every:
            self._draw(now, final=False)

    def close(self) -> None:
        """Draw the final state and end the line (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._draw(self._clock(), final=True)

    def render(self, now: float) -> str:
        """The progress line as it would be drawn at ``now``, without control characters.

        Args:
            now: A reading of the clock.

        Returns:
            For example ``drain emails [###---] 30/100  30%  1,200/s``.
        """
        done = self._done
        elapsed = now - self._started
        speed = f"{done / elapsed:,.0f}/s" if elapsed > 0 else "-/s"
        total = self._total
        if total is None:
            return f"{self._label} {done:,}  {speed}"
        total = max(total, done)  # more jobs arrived than the estimate knew of
        fraction = done / total if total else 1.0
        bar = "#" * int(_BAR_WIDTH * fraction)
        return f"{self._label} [{bar:<{_BAR_WIDTH}}] {done:,}/{total:,} {fraction:4.0%}  {speed}"

    def _draw(self, now: float, *, final: bool) -> None:
        if not self._enabled:
            return
        self._drawn_at = now
        text = self.render(now)
        if self._tty:
            # \x1b[K clears what a longer previous line left behind.
            self._stream.write(f"\r{text}\x1b[K" + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False

"""The terminal of ``top``: alternate screen, cbreak keys, and a promise to restore both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import termios
import tty
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TextIO

__all__ = ["Screen"]

# ANSI / xterm control sequences.
_ALT_SCREEN_ON = "\x1b[?1049h"
_ALT_SCREEN_OFF = "\x1b[?1049l"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"
_HOME = "\x1b[H"
_CLEAR_LINE_END = "\x1b[K"
_CLEAR_SCREEN_END = "\x1b[J"


class Screen:
    """Full-screen drawing on a terminal, with single key presses from stdin.

    Entering switches to the alternate screen (so the user's scrollback survives),
    hides the cursor and, when stdin is a terminal, puts it in cbreak mode: keys arrive
    one at a time without echo, while Ctrl-C still sends SIGINT. Leaving undoes all of
    it, whatever ended the block (an error, a cancellation by Ctrl-C), and stops
    reading keys.

    Args:
        stdin: Where keys come from; ignored unless it is a terminal.
        stdout: The terminal to draw on.
        on_key: Called on the event loop with each chunk of keys read.
    """

    def __init__(self, stdin: TextIO, stdout: TextIO, on_key: Callable[[bytes], None]) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._on_key = on_key
        self._fd: int | None = None
        self._saved: list[Any] | None = None  # termios attributes, as tcgetattr gives them
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> Screen:
        fd = _tty_fd(self._stdin)
        if fd is not None:
            self._saved = termios.tcgetattr(fd)
            self._fd = fd
            try:
                tty.setcbreak(fd, termios.TCSANOW)
                self._loop = asyncio.get_running_loop()
                self._loop.add_reader(fd, self._read_keys)
            except BaseException:
                self._restore_terminal()
                raise
        self._write(_ALT_SCREEN_ON + _HIDE_CURSOR)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._write(_SHOW_CURSOR + _ALT_SCREEN_OFF)
        finally:
            self._restore_terminal()

    def size(self) -> tuple[int, int]:
        """The terminal's ``(columns, lines)``, asked anew each time (it may be resized)."""
        columns, lines = shutil.get_terminal_size()
        return columns, lines

    def draw(self, lines: Sequence[str]) -> None:
        """Replace the screen's contents with ``lines`` (cut to the terminal's size).

        Args:
            lines: The frame, one string per line, without newlines.
        """
        columns, rows = self.size()
        shown = [line[:columns] + _CLEAR_LINE_END for line in lines[:rows]]
        # Overwrite in place rather than clear first: clearing makes the screen flicker.
        self._write(_HOME + "\n".join(shown) + _CLEAR_SCREEN_END)

    def _read_keys(self) -> None:
        if self._fd is None:  # restored already; a late callback has nothing to read
            return
        try:
            keys = os.read(self._fd, 64)
        except OSError:
            keys = b""
        if not keys:  # end of input: stop watching it, keys can no longer come
            self._stop_reading()
            return
        self._on_key(keys)

    def _stop_reading(self) -> None:
        if self._loop is not None and self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._loop = None

    def _restore_terminal(self) -> None:
        self._stop_reading()
        if self._fd is not None and self._saved is not None:
            # TCSADRAIN: let the last frame and the screen switch reach the terminal first.
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        self._fd = None
        self._saved = None

    def _write(self, text: str) -> None:
        self._stdout.write(text)
        self._stdout.flush()


def _tty_fd(stream: TextIO) -> int | None:
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test, closed, ...
        return None
    return fd if os.isatty(fd) else None

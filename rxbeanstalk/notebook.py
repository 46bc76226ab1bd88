"""Live views for Jupyter: ``monitor(client)`` plots tube depth and throughput as it goes.

Needs matplotlib (``pip install matplotlib``); IPython is used when present, for the
display in the notebook. Both are imported only when ``monitor`` is called.

    >>> from rxbeanstalk import Client
    >>> from rxbeanstalk.notebook import monitor
    >>> client = Client("127.0.0.1", 11300)  # doctest: +SKIP
    >>> view = monitor(client, tubes=["emails"], interval=1.0)  # doctest: +SKIP
    >>> view.stop()  # doctest: +SKIP

The monitor is built on ``Client.stats_stream``: its timer runs on the client's event
loop. In Jupyter that is the kernel's own loop (cells run on it, so ``await client.put()``
and ``.subscribe`` both work there), and the view updates between and during cells
whenever the loop is free, e.g. while a cell awaits. No widget library is involved: the
figure is drawn with matplotlib's Agg renderer and shown with ``IPython.display`` under a
display id that each snapshot updates in place, so it also works in plain ``nbclient``
execution. Without IPython (a script, a test) the figure is kept up to date all the
same, and ``Monitor.save`` writes it to a file.
"""

from __future__ import annotations

import contextvars
import io
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from ._client import Client
from ._stats_stream import StatsSnapshot
from .errors import InvalidArgumentError

if TYPE_CHECKING:
    from matplotlib.axes import Axes  # type: ignore[import-not-found,unused-ignore]
    from matplotlib.figure import Figure  # type: ignore[import-not-found,unused-ignore]
    from matplotlib.lines import Line2D  # type: ignore[import-not-found,unused-ignore]
    from reactivex import abc

__all__ = ["Monitor", "Sample", "monitor"]

_INSTALL_HINT = "rxbeanstalk.notebook.monitor needs matplotlib: pip install matplotlib"

# The four states a job can be in, in the order the protocol lists them, with the colours
# of matplotlib's default cycle, so the same state has the same colour in every view.
_DEPTH = (
    ("ready", "tab:blue"),
    ("reserved", "tab:orange"),
    ("delayed", "tab:purple"),
    ("buried", "tab:red"),
)
_RATES = (
    ("put/s", "tab:green"),
    ("deleted/s", "tab:gray"),
)


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of the monitor's plot (from one ``StatsSnapshot``).

    Attributes:
        t: Seconds since the monitor's first snapshot.
        ready: Ready jobs in the monitored tubes (or on the server).
        reserved: Reserved jobs.
        delayed: Delayed jobs.
        buried: Buried jobs.
        put_rate: Jobs created per second since the previous snapshot (``total-jobs``);
            NaN for the first snapshot.
        delete_rate: Jobs deleted per second since the previous snapshot
            (``cmd-delete``); NaN for the first snapshot.
    """

    t: float
    ready: int
    reserved: int
    delayed: int
    buried: int
    put_rate: float
    delete_rate: float


def monitor(
    client: Client,
    tubes: Sequence[str] | None = None,
    interval: float = 1.0,
    window: float = 120.0,
    *,
    display: bool | None = None,
    figsize: tuple[float, float] = (8.0, 5.0),
) -> Monitor:
    """Start a live plot of tube depth and throughput.

    The top panel shows how many jobs are ready, reserved, delayed and buried; the
    bottom one how many jobs per second were put (from ``total-jobs``) and deleted (from
    ``cmd-delete``) between two snapshots. With ``tubes`` the numbers are the sum over
    those tubes (a tube that does not exist counts as empty); without, they are the
    whole server's.

    The plot updates in place on every snapshot until ``Monitor.stop()`` (or the end of
    a ``with`` block, or a failed ``stats`` round, whose error is shown in the title and
    kept in ``Monitor.error``). Its only background work is the stream's timer on the
    client's event loop, which ``stop`` cancels and which cannot outlive that loop.

    Args:
        client: The client to poll with (its command connection).
        tubes: The tubes to sum over; ``None`` for the whole server.
        interval: Seconds between snapshots (> 0). With a display, each snapshot also
            renders a PNG on the event loop (about 0.1 s), so stay at 0.5 s or more in
            a notebook.
        window: Seconds of history to keep and show (> 0); older points are dropped.
        display: Show the plot with ``IPython.display`` and update it in place:
            ``None`` (default) does so in an IPython kernel (Jupyter, nbclient),
            ``True`` always (needs IPython), ``False`` never (read ``Monitor.figure``
            or ``save`` it).
        figsize: The figure's size in inches.

    Returns:
        The running ``Monitor``.

    Raises:
        ImportError: matplotlib is not installed (or IPython, with ``display=True``).
        InvalidArgumentError: a bad interval, window or tube name (before anything
            starts).
    """
    if (
        isinstance(window, bool)
        or not isinstance(window, int | float)
        or not math.isfinite(window)
        or not window > 0
    ):
        raise InvalidArgumentError(f"window must be a finite number of seconds > 0, got {window!r}")
    stream = client.stats_stream(interval, tubes)  # checks interval and tubes
    show = _ipython_running() if display is None else display
    view = Monitor(
        client,
        None if tubes is None else stream.tubes,
        float(window),
        figsize,
        interval=stream.interval,
    )
    if show:
        view._open_display()
    view._start(stream)
    return view


class Monitor:
    """A running (or stopped) live plot; ``monitor()`` makes one.

    Use it as a context manager to stop it at the end of a block. All methods may be
    called from any thread; the plot is updated on the client's event loop.

    Attributes:
        figure: The matplotlib ``Figure`` (drawn with Agg; no pyplot state involved).
        error: The error that stopped it, if a ``stats`` round failed.
    """

    def __init__(
        self,
        client: Client,
        tubes: tuple[str, ...] | None,
        window: float,
        figsize: tuple[float, float],
        *,
        interval: float,
    ) -> None:
        figure_class, canvas_class = _matplotlib()
        self._client = client
        self._tubes = tubes
        self._window = window
        self._interval = interval
        # Figure updates arrive on the loop's thread, save()/stop() may come from any
        # other: matplotlib artists are not thread-safe, so one lock guards the figure
        # and the samples.
        self._lock = threading.Lock()
        self._samples: deque[Sample] = deque()
        self._last: StatsSnapshot | None = None
        self._first_at: float | None = None
        self._count = 0
        self._subscription: abc.DisposableBase | None = None
        self._stopped = False
        self._display: Any = None
        self._title = ""
        # ipykernel tells cells apart by context variables, and snapshots arrive in the
        # context the connection was opened in (maybe another cell's): updates run in
        # the context monitor() was called in, so they belong to the monitor's cell.
        self._context = contextvars.copy_context()
        self.error: BaseException | None = None

        self.figure: Figure = figure_class(figsize=figsize, layout="constrained")
        canvas_class(self.figure)
        depth, rates = self.figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        self._depth_axes: Axes = depth
        self._rate_axes: Axes = rates
        self._depth_lines: list[Line2D] = [
            depth.plot([], [], label=name, color=color, linewidth=1.8)[0] for name, color in _DEPTH
        ]
        self._rate_lines: list[Line2D] = [
            rates.plot([], [], label=name, color=color, linewidth=1.4)[0] for name, color in _RATES
        ]
        depth.set_ylabel("jobs")
        rates.set_ylabel("jobs / s")
        rates.set_xlabel("seconds")
        for axes in (depth, rates):
            axes.grid(True, alpha=0.3)
            axes.set_xlim(0.0, window)
            axes.set_ylim(0.0, 1.0)
            axes.legend(loc="upper left", fontsize="small")
        self._set_title("waiting for the first snapshot")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        what = "the server" if self._tubes is None else f"tubes {list(self._tubes)}"
        return (
            f"<rxbeanstalk Monitor of {what} at {self._client.address}, {state},"
            f" {self._count} snapshots>"
        )

    # -- state ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether snapshots still come: not stopped, not failed, and the loop is open."""
        loop = self._client.loop
        return not self._stopped and not (loop is not None and loop.is_closed())

    @property
    def snapshots(self) -> int:
        """How many snapshots were plotted so far."""
        return self._count

    @property
    def last(self) -> StatsSnapshot | None:
        """The latest snapshot, or ``None`` before the first one."""
        return self._last

    @property
    def title(self) -> str:
        """The figure's title: what is monitored, and the state (or the error that stopped it)."""
        return self._title

    @property
    def samples(self) -> list[Sample]:
        """The plotted points, oldest first (at most ``window`` seconds of them)."""
        with self._lock:
            return list(self._samples)

    # -- control ----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop polling; the plot keeps its last state (its title says it stopped).

        Cancels the stream's timer on the client's loop (a round already sent is read
        and dropped). Safe to call twice, and from any thread.
        """
        self._halt("stopped")

    def save(self, fname: str | PathLike[str] | IO[bytes], **savefig: Any) -> None:
        """Write the figure as it is now (``Figure.savefig``; PNG unless told otherwise).

        Args:
            fname: A path or a binary file object.
            **savefig: Passed on to ``Figure.savefig`` (``dpi=``, ``format=``, ...).
        """
        with self._lock:
            self.figure.savefig(fname, **savefig)

    def png(self) -> bytes:
        """The figure as it is now, as PNG bytes."""
        buffer = io.BytesIO()
        self.save(buffer, format="png")
        return buffer.getvalue()

    def show(self) -> None:
        """Display the figure as it is now, as a new static image (needs IPython).

        Raises:
            ImportError: IPython is not installed.
        """
        ipython = _ipython_display()
        ipython.display(ipython.Image(data=self.png(), format="png"))

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- plumbing ---------------------------------------------------------------------

    def _open_display(self) -> None:
        ipython = _ipython_display()
        self._display = ipython.display(
            ipython.Image(data=self.png(), format="png"), display_id=True
        )

    def _update_display(self) -> None:
        if self._display is None:
            return
        ipython = _ipython_display()
        self._display.update(ipython.Image(data=self.png(), format="png"))

    def _start(self, stream: Any) -> None:
        subscription = stream.subscribe(self._on_snapshot, self._on_error)
        with self._lock:
            stopped = self._stopped
            self._subscription = subscription
        if stopped:  # stopped (or failed) before subscribe returned
            subscription.dispose()

    def _halt(self, why: str, error: BaseException | None = None) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self.error = error
            subscription, self._subscription = self._subscription, None
        loop = self._client.loop
        # A closed loop took the stream's timer with it; handing the dispose over to it
        # would only raise.
        if subscription is not None and not (loop is not None and loop.is_closed()):
            subscription.dispose()
        with self._lock:
            self._set_title(why)
        self._update_display()

    def _on_error(self, error: Exception) -> None:
        self._halt(f"stopped by {type(error).__name__}: {error}", error)

    def _on_snapshot(self, snapshot: StatsSnapshot) -> None:
        with self._lock:
            if self._stopped:
                return
            self._add(snapshot)
            self._redraw()
        if self._display is not None:
            self._context.run(self._update_display)

    def _add(self, snapshot: StatsSnapshot) -> None:
        previous = self._last
        if self._first_at is None:
            self._first_at = snapshot.at
        t = snapshot.at - self._first_at
        ready, reserved, delayed, buried = _depth(snapshot, self._tubes)
        put_rate = delete_rate = math.nan
        if previous is not None and snapshot.at > previous.at:
            elapsed = snapshot.at - previous.at
            put_rate = _growth(previous, snapshot, self._tubes, "total_jobs") / elapsed
            delete_rate = _growth(previous, snapshot, self._tubes, "cmd_delete") / elapsed
        self._samples.append(Sample(t, ready, reserved, delayed, buried, put_rate, delete_rate))
        while self._samples and self._samples[0].t < t - self._window:
            self._samples.popleft()
        self._last = snapshot
        self._count += 1

    def _redraw(self) -> None:
        samples = self._samples
        times = [s.t for s in samples]
        depth_values = [
            [s.ready for s in samples],
            [s.reserved for s in samples],
            [s.delayed for s in samples],
            [s.buried for s in samples],
        ]
        rate_values = [[s.put_rate for s in samples], [s.delete_rate for s in samples]]
        for line, counts, (name, _) in zip(self._depth_lines, depth_values, _DEPTH, strict=True):
            line.set_data(times, counts)
            line.set_label(f"{name} ({counts[-1]})")
        for line, rates, (name, _) in zip(self._rate_lines, rate_values, _RATES, strict=True):
            line.set_data(times, rates)
            latest = rates[-1]
            line.set_label(name if math.isnan(latest) else f"{name} ({latest:,.0f})")
        last = times[-1]
        left = max(0.0, last - self._window)
        top_depth = max((max(values) for values in depth_values), default=0)
        finite_rates = [v for values in rate_values for v in values if not math.isnan(v)]
        top_rate = max(finite_rates, default=0.0)
        for axes, top in ((self._depth_axes, top_depth), (self._rate_axes, top_rate)):
            axes.set_xlim(left, left + self._window)
            axes.set_ylim(0.0, max(1.0, top * 1.15))
            axes.legend(loc="upper left", fontsize="small")
        self._set_title(f"{self._count} snapshots, every {self._interval:g} s")

    def _set_title(self, status: str) -> None:
        what = "server" if self._tubes is None else ", ".join(self._tubes) or "no tubes"
        self._title = f"beanstalkd {self._client.address}: {what} ({status})"
        self.figure.suptitle(self._title)


def _depth(snapshot: StatsSnapshot, tubes: tuple[str, ...] | None) -> tuple[int, int, int, int]:
    """Ready, reserved, delayed and buried jobs: the server's, or summed over ``tubes``."""
    counts = [snapshot.server] if tubes is None else [snapshot.tube(name) for name in tubes]
    return (
        sum(c.current_jobs_ready for c in counts),
        sum(c.current_jobs_reserved for c in counts),
        sum(c.current_jobs_delayed for c in counts),
        sum(c.current_jobs_buried for c in counts),
    )


def _growth(
    before: StatsSnapshot, after: StatsSnapshot, tubes: tuple[str, ...] | None, field: str
) -> int:
    """How much a cumulative counter grew between two snapshots, counted per tube.

    A counter that went down was reset: beanstalkd drops an empty, unused tube and
    starts its counters from zero when it makes it again (and a restarted server starts
    all of them from zero), so everything it counts now is new.
    """
    pairs = (
        [(getattr(before.server, field), getattr(after.server, field))]
        if tubes is None
        else [
            (getattr(before.tube(name), field), getattr(after.tube(name), field)) for name in tubes
        ]
    )
    return sum(now - then if now >= then else now for then, now in pairs)


# -- optional imports ---------------------------------------------------------------


def _matplotlib() -> tuple[Any, Any]:
    """``Figure`` and the Agg canvas class, imported on first use.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import (  # type: ignore[import-not-found,unused-ignore]
            FigureCanvasAgg,
        )
        from matplotlib.figure import Figure  # type: ignore[import-not-found,unused-ignore]
    except ImportError as missing:
        raise ImportError(_INSTALL_HINT) from missing
    return Figure, FigureCanvasAgg


class _IPythonDisplay:
    """``IPython.display``'s ``display`` and ``Image``, imported on first use."""

    def __init__(self) -> None:
        try:
            from IPython.display import (  # type: ignore[import-not-found,unused-ignore]
                Image,
                display,
            )
        except ImportError as missing:
            raise ImportError(
                "showing the monitor in a notebook needs IPython: pip install ipython "
                "(or call monitor(..., display=False) and save() the figure)"
            ) from missing
        self.display: Any = display
        self.Image: Any = Image


def _ipython_display() -> _IPythonDisplay:
    return _IPythonDisplay()


def _ipython_running() -> bool:
    """Whether this code runs in an IPython kernel (Jupyter, nbclient), which shows images.

    (The terminal IPython shell would print ``<IPython.core.display.Image object>``.)
    """
    try:
        from IPython import get_ipython  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None

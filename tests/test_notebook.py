"""``rxbeanstalk.notebook.monitor`` without a kernel: Agg figures against a real beanstalkd.

The monitor must work where IPython's display is not available (a script, this test):
the figure is kept up to date and can be saved. Checked: the plotted data follows what
happens on the server (depth and throughput), stopping (``stop``, a ``with`` block, an
error, a closed loop) leaves no timer or task behind, and the in-place display path
updates one display handle. Tests that draw need matplotlib and skip without it.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rxbeanstalk import Client, InvalidArgumentError, ServerStats, TransportError, TubeStats
from rxbeanstalk._stats_stream import StatsSnapshot, _Poller
from rxbeanstalk.testing import BeanstalkdServer
from tests.conftest import eventually, make_client, run, wait_until

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def agg() -> Iterator[Any]:
    """matplotlib, with the Agg backend (the monitor draws with Agg whatever is set)."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    yield matplotlib


def live_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    """The stats-stream timers still scheduled on ``loop``."""
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return [
        handle
        for handle in scheduled
        if not handle.cancelled()
        and isinstance(getattr(handle._callback, "__self__", None), _Poller)  # type: ignore[attr-defined]
    ]


def ydata(monitor: Any, panel: int, line: int) -> list[float]:
    """The y values of one line of the figure, as drawn."""
    return [float(y) for y in monitor.figure.axes[panel].lines[line].get_ydata()]


# ----------------------------------------------------------------------------- drawing


def test_figure_follows_depth_and_throughput(
    agg: Any, beanstalkd: BeanstalkdServer, tmp_path: Path
) -> None:
    from rxbeanstalk.notebook import monitor

    client = make_client(beanstalkd, watch=["work"])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await client.stats()
        tasks = asyncio.all_tasks()
        view = monitor(client, tubes=["work"], interval=0.05, display=False)
        assert view.running
        await eventually(lambda: view.snapshots >= 1, "the first snapshot")

        await client.put_many([b"job"] * 20, tube="work")
        await eventually(lambda: view.samples[-1].ready == 20, "20 ready")
        assert ydata(view, 0, 0)[-1] == 20  # top panel, "ready"
        jobs = [await client.reserve(timeout=0) for _ in range(5)]
        await eventually(lambda: view.samples[-1].reserved == 5, "5 reserved")
        assert ydata(view, 0, 1)[-1] == 5  # "reserved"
        assert ydata(view, 0, 0)[-1] == 15
        await jobs[0].bury()
        for job in jobs[1:]:
            await job.delete()
        await eventually(lambda: view.samples[-1].buried == 1, "1 buried")
        assert ydata(view, 0, 3)[-1] == 1  # "buried"
        await eventually(lambda: view.samples[-1].reserved == 0, "none reserved")

        view.stop()
        assert not view.running
        assert live_timers(loop) == []
        assert asyncio.all_tasks() == tasks

        # Rates times the time between snapshots add up to the counters' growth exactly:
        # 20 jobs put, 4 deleted, all after the first snapshot.
        samples = view.samples
        steps = [b.t - a.t for a, b in itertools.pairwise(samples)]
        put = sum(s.put_rate * dt for s, dt in zip(samples[1:], steps, strict=True))
        deleted = sum(s.delete_rate * dt for s, dt in zip(samples[1:], steps, strict=True))
        assert round(put) == 20
        assert round(deleted) == 4
        drawn = ydata(view, 1, 1)  # bottom panel, "deleted/s"
        assert max(y for y in drawn[1:]) > 0
        assert "stopped" in view.title

        path = tmp_path / "monitor.png"
        view.save(path)
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert view.png().startswith(PNG_MAGIC)

    run(main(), client)


def test_whole_server_without_tubes(agg: Any, client: Client) -> None:
    from rxbeanstalk.notebook import monitor

    async def main() -> None:
        with monitor(client, interval=0.05, display=False) as view:
            await client.put(b"a", tube="one")
            await client.put(b"b", tube="two", delay=600)
            await eventually(lambda: view.samples and view.samples[-1].ready == 1, "the ready job")
            await eventually(lambda: view.samples[-1].delayed == 1, "the delayed job")
        assert not view.running  # the with block stopped it
        assert live_timers(asyncio.get_running_loop()) == []
        assert "server" in view.title

    run(main(), client)


def test_window_drops_old_points(agg: Any, client: Client) -> None:
    from rxbeanstalk.notebook import monitor

    async def main() -> None:
        with monitor(client, tubes=[], interval=0.02, window=0.2, display=False) as view:
            await eventually(lambda: view.snapshots >= 25, "25 snapshots")
        samples = view.samples
        assert len(samples) < view.snapshots
        assert samples[-1].t - samples[0].t <= 0.2
        left, right = view.figure.axes[0].get_xlim()
        assert right - left == pytest.approx(0.2)

    run(main(), client)


def test_private_loop_of_a_plain_script(agg: Any, beanstalkd: BeanstalkdServer) -> None:
    from rxbeanstalk.notebook import monitor

    with make_client(beanstalkd) as client:
        view = monitor(client, tubes=["default"], interval=0.02, display=False)
        client.put(b"x").run()
        wait_until(lambda: view.samples and view.samples[-1].ready == 1, "the job plotted")
        view.stop()  # from this thread, while the loop thread draws
        loop = client.loop
        assert loop is not None

        async def timers() -> list[asyncio.TimerHandle]:
            return live_timers(asyncio.get_running_loop())

        assert asyncio.run_coroutine_threadsafe(timers(), loop).result(5.0) == []
        assert view.png().startswith(PNG_MAGIC)


# ----------------------------------------------------------------------------- stopping


def test_a_failed_round_stops_it_and_says_why(
    agg: Any, beanstalkd: BeanstalkdServer, client: Client
) -> None:
    from rxbeanstalk.notebook import monitor

    async def main() -> None:
        view = monitor(client, interval=0.02, display=False)
        await eventually(lambda: view.snapshots, "the first snapshot")
        beanstalkd.stop()
        await eventually(lambda: not view.running, "stopped by the error")
        assert isinstance(view.error, TransportError)
        assert type(view.error).__name__ in view.title
        assert live_timers(asyncio.get_running_loop()) == []
        view.stop()  # harmless

    run(main(), client)


def test_a_closed_loop_takes_it_down(agg: Any, beanstalkd: BeanstalkdServer) -> None:
    from rxbeanstalk.notebook import Monitor, monitor

    client = make_client(beanstalkd)

    async def main() -> Monitor:
        view = monitor(client, interval=0.02, display=False)
        await eventually(lambda: view.snapshots, "the first snapshot")
        return view  # left running: the loop closes under it

    try:
        view = asyncio.run(main())
        assert not view.running
        view.stop()  # nothing to cancel on a closed loop, and no error
        assert "stopped" in view.title
    finally:
        client.close()


# ----------------------------------------------------------------------------- display


class FakeImage:
    def __init__(self, data: bytes, format: str) -> None:
        self.data = data
        self.format = format


class FakeHandle:
    def __init__(self) -> None:
        self.updates: list[FakeImage] = []

    def update(self, image: FakeImage) -> None:
        self.updates.append(image)


class FakeIPython:
    """Stands in for ``IPython.display`` (``display`` and ``Image``)."""

    def __init__(self) -> None:
        self.shown: list[tuple[FakeImage, bool]] = []
        self.handles: list[FakeHandle] = []
        self.Image = FakeImage

    def display(self, image: FakeImage, display_id: bool = False) -> FakeHandle | None:
        self.shown.append((image, display_id))
        if not display_id:
            return None
        handle = FakeHandle()
        self.handles.append(handle)
        return handle


def test_display_is_one_handle_updated_in_place(
    agg: Any, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rxbeanstalk.notebook as notebook

    fake = FakeIPython()
    monkeypatch.setattr(notebook, "_ipython_display", lambda: fake)

    async def main() -> None:
        view = notebook.monitor(client, interval=0.02, display=True)
        assert len(fake.shown) == 1  # shown at once, before the first snapshot
        image, display_id = fake.shown[0]
        assert display_id is True
        assert image.data.startswith(PNG_MAGIC)
        (handle,) = fake.handles
        await eventually(lambda: len(handle.updates) >= 3, "three updates")
        view.stop()
        updates = len(handle.updates)
        assert handle.updates[-1].data.startswith(PNG_MAGIC)  # the "stopped" state
        view.show()  # a static copy, as a new output
        assert len(fake.shown) == 2 and fake.shown[1][1] is False
        await client.stats()
        assert len(handle.updates) == updates
        assert len(fake.handles) == 1

    run(main(), client)


def test_display_defaults_to_off_outside_a_kernel(agg: Any, client: Client) -> None:
    from rxbeanstalk.notebook import monitor

    async def main() -> None:
        with monitor(client, interval=0.05) as view:  # display=None: no kernel here
            await eventually(lambda: view.snapshots, "the first snapshot")
            assert view._display is None

    run(main(), client)


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("options", "what"),
    [
        ({"window": 0}, "window"),
        ({"window": float("inf")}, "window"),
        ({"interval": -1}, "interval"),
        ({"tubes": "default"}, "tubes"),
    ],
)
def test_bad_arguments(client: Client, options: dict[str, Any], what: str) -> None:
    from rxbeanstalk.notebook import monitor

    with pytest.raises(InvalidArgumentError, match=what):
        monitor(client, **options)
    assert client.loop is None  # nothing started


def test_missing_matplotlib_says_what_to_install(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rxbeanstalk.notebook import monitor

    # None in sys.modules makes the import fail, whether matplotlib is installed or not.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        monitor(client, display=False)
    assert client.loop is None


def test_throughput_counts_a_tube_that_was_dropped_and_made_again() -> None:
    from rxbeanstalk.notebook import _growth

    server = ServerStats(pid=1, version="1.12")

    def snap(at: float, total_jobs: int) -> StatsSnapshot:
        return StatsSnapshot(at, server, {"t": TubeStats(name="t", total_jobs=total_jobs)})

    assert _growth(snap(0, 10), snap(1, 14), ("t",), "total_jobs") == 4
    # Counters went down: the tube was dropped and made again; all 3 are new.
    assert _growth(snap(0, 10), snap(1, 3), ("t",), "total_jobs") == 3
    # A tube missing from one snapshot reads as empty.
    missing = StatsSnapshot(0, server, {})
    assert _growth(missing, snap(1, 2), ("t",), "total_jobs") == 2

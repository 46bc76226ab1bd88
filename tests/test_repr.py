"""``__repr__`` and ``_repr_html_`` of Job, ServerStats, TubeStats, JobStats, StatsSnapshot.

What a notebook user sees: the plain repr names the object and its key numbers on one
line; the HTML is a well-formed, compact table whose every value is escaped (tube names,
host names and job bodies come from other people).
"""

from __future__ import annotations

import dataclasses
import html.parser
import time
from types import MappingProxyType

import pytest

from rxbeanstalk import Client, JobState, JobStats, ServerStats, StatsSnapshot, TubeStats
from rxbeanstalk.protocol import parse_server_stats
from rxbeanstalk.testing import BeanstalkdServer
from tests.conftest import run

HOSTILE = '<script>alert("x")</script> & co'


class _Checker(html.parser.HTMLParser):
    """Collects text and checks that every tag is closed, in order."""

    VOID = frozenset({"br"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack, f"</{tag}> closes nothing"
        opened = self.stack.pop()
        assert opened == tag, f"</{tag}> closes <{opened}>"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_html(fragment: str) -> _Checker:
    """Parse an HTML fragment; fail unless it is well-formed. Returns the parser."""
    checker = _Checker()
    checker.feed(fragment)
    checker.close()
    assert checker.stack == [], f"unclosed tags {checker.stack}"
    assert "script" not in checker.tags, "a value got through unescaped"
    return checker


def visible_text(fragment: str) -> str:
    return " ".join(part.strip() for part in parse_html(fragment).text if part.strip())


def server_stats(**fields: object) -> ServerStats:
    values: dict[str, object] = {"pid": 4242, "version": "1.12", **fields}
    return ServerStats(**values)  # type: ignore[arg-type]


# ------------------------------------------------------------------- ServerStats


def test_server_stats_repr_is_one_line_with_the_key_numbers() -> None:
    stats = server_stats(
        current_jobs_ready=3,
        current_jobs_reserved=2,
        current_jobs_delayed=1,
        current_jobs_buried=4,
        current_jobs_urgent=5,
        total_jobs=99,
        current_tubes=2,
        current_connections=7,
        uptime=12,
    )
    text = repr(stats)
    assert "\n" not in text
    assert text == (
        "<ServerStats beanstalkd 1.12 pid=4242 uptime=12s: ready=3 reserved=2 delayed=1"
        " buried=4 urgent=5 total_jobs=99 tubes=2 connections=7>"
    )
    assert "draining" in repr(server_stats(draining=True))


def test_server_stats_html_shows_counts_and_every_field_escaped() -> None:
    stats = server_stats(
        current_jobs_ready=12345,
        hostname=HOSTILE,
        os="#1 SMP <b>",
        extra={"new-key<": "v>"},
    )
    fragment = stats._repr_html_()
    text = visible_text(fragment)
    assert f"beanstalkd 1.12 on {HOSTILE}" in text
    assert "12,345" in text  # the at-a-glance row groups digits
    assert "#1 SMP <b>" in text  # shown as text, not as markup
    assert "new-key<" in text and "v>" in text
    declared = len(dataclasses.fields(ServerStats)) - 1  # less ``extra`` itself
    assert f"all {declared + 1} fields" in text  # ... plus the one extra key
    assert "<b>" not in fragment


def test_server_stats_from_a_real_server(beanstalkd: BeanstalkdServer) -> None:
    async def main(client: Client) -> ServerStats:
        await client.put(b"x")
        return await client.stats()

    client = Client(beanstalkd.host, beanstalkd.port)
    stats = run(main(client), client)
    assert repr(stats).startswith(f"<ServerStats beanstalkd {stats.version} pid={beanstalkd.pid}")
    assert "ready=1" in repr(stats)
    text = visible_text(stats._repr_html_())
    assert f"pid {beanstalkd.pid}" in text
    assert stats.os in text  # may hold '#' and ': ', kept verbatim


# ------------------------------------------------------------------- TubeStats


def test_tube_stats_repr() -> None:
    stats = TubeStats(
        name="emails",
        current_jobs_ready=1,
        current_jobs_reserved=2,
        current_jobs_delayed=3,
        current_jobs_buried=4,
        total_jobs=10,
        cmd_delete=6,
        current_watching=1,
    )
    assert repr(stats) == (
        "<TubeStats 'emails': ready=1 reserved=2 delayed=3 buried=4 urgent=0 total_jobs=10"
        " deleted=6 watching=1 waiting=0>"
    )
    paused = TubeStats(name="123", pause=30, pause_time_left=29)
    assert repr(paused).startswith("<TubeStats '123':")  # a numeric name stays a str
    assert repr(paused).endswith(" paused=29s>")


def test_tube_stats_html() -> None:
    stats = TubeStats(name="a(b)", current_jobs_ready=7, pause=30, pause_time_left=29)
    text = visible_text(stats._repr_html_())
    assert "tube 'a(b)'" in text
    assert "paused for 30 s, 29 s left" in text
    assert "ready" in text and "7" in text
    hostile = TubeStats(name=HOSTILE)._repr_html_()
    assert HOSTILE in visible_text(hostile)


# ------------------------------------------------------------------- JobStats


def test_job_stats_repr_and_html() -> None:
    stats = JobStats(
        id=42, tube="emails", state=JobState.RESERVED, pri=10, age=3, ttr=60, time_left=57
    )
    assert repr(stats) == (
        "<JobStats 42 in 'emails': reserved pri=10 age=3s delay=0s ttr=60s time_left=57s"
        " reserves=0 timeouts=0 releases=0 buries=0 kicks=0>"
    )
    text = visible_text(stats._repr_html_())
    assert "job 42 in tube 'emails': reserved" in text
    assert "time left (s)" in text and "57" in text


# ------------------------------------------------------------------- Job


def test_job_repr_and_html_follow_its_life(beanstalkd: BeanstalkdServer) -> None:
    body = HOSTILE.encode()

    async def main(client: Client) -> list[tuple[str, str]]:
        seen = []
        job_id = await client.put(body)
        peeked = await client.peek(job_id)
        seen.append((repr(peeked), peeked._repr_html_()))
        job = await client.reserve(timeout=0)
        seen.append((repr(job), job._repr_html_()))
        await job.delete()
        seen.append((repr(job), job._repr_html_()))
        return seen

    client = Client(beanstalkd.host, beanstalkd.port)
    (peeked, peeked_html), (held, held_html), (deleted, deleted_html) = run(main(client), client)
    assert peeked.startswith(f"<Job 1 peeked {len(body)} bytes b'<script>")
    assert held.startswith("<Job 1 reserved ")
    assert deleted.startswith("<Job 1 deleted ")
    for fragment, state in (
        (peeked_html, "peeked"),
        (held_html, "reserved"),
        (deleted_html, "deleted"),
    ):
        text = visible_text(fragment)
        assert "job 1" in text and state in text
        assert HOSTILE in text  # the body, as text


def test_job_html_of_long_and_binary_bodies(client: Client) -> None:
    from rxbeanstalk import Job

    long_job = Job(7, b"a" * 1000, client)
    text = visible_text(long_job._repr_html_())
    assert "a" * 300 + " ... (700 more characters)" in text
    binary = Job(8, b"\xff\xfe" * 10, client)
    assert repr(b"\xff\xfe" * 10) in visible_text(binary._repr_html_())
    assert repr(long_job) == "<Job 7 peeked 1000 bytes b'" + "a" * 40 + "'...>"


# ------------------------------------------------------------------- StatsSnapshot


def test_snapshot_repr_and_html() -> None:
    server = parse_server_stats(b"---\npid: 1\nversion: 1.12\ncurrent-jobs-ready: 5\n")
    tubes = MappingProxyType(
        {
            "default": TubeStats(name="default"),
            "emails": TubeStats(name="emails", current_jobs_ready=5, total_jobs=20000),
        }
    )
    at = time.mktime((2024, 5, 6, 7, 8, 9, 0, 0, -1)) + 0.25
    snapshot = StatsSnapshot(at, server, tubes)
    assert repr(snapshot) == (
        "<StatsSnapshot 07:08:09.250 ready=5 reserved=0 delayed=0 buried=0 total_jobs=0"
        " tubes=['default', 'emails']>"
    )
    text = visible_text(snapshot._repr_html_())
    assert "beanstalkd 1.12 at 07:08:09" in text
    assert "emails 5 0 0 0 0 20,000" in text
    assert "(server) 5" in text
    assert snapshot.tube("ghost") == TubeStats(name="ghost")


@pytest.mark.parametrize(
    "obj",
    [
        server_stats(),
        TubeStats(name="t"),
        JobStats(id=1, tube="t", state=JobState.BURIED),
    ],
    ids=lambda obj: type(obj).__name__,
)
def test_every_field_is_in_the_html(obj: object) -> None:
    text = visible_text(obj._repr_html_())  # type: ignore[attr-defined]
    for name in obj.__dataclass_fields__:  # type: ignore[attr-defined]
        if name != "extra":
            assert name in text

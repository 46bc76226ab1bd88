"""Aligned tables for people, plain dictionaries for ``--json``."""

from __future__ import annotations

import base64
import dataclasses
import enum
from collections.abc import Iterable, Sequence
from typing import Any

from ..protocol import JobStats, ServerStats, TubeStats

__all__ = [
    "body_json",
    "duration",
    "key_value_lines",
    "plural",
    "rate",
    "server_stats_sections",
    "stats_json",
    "stats_rows",
    "table_lines",
]

Stats = ServerStats | TubeStats | JobStats


def stats_json(stats: Stats) -> dict[str, Any]:
    """Every field of a stats dataclass under its Python name, ready for ``json.dumps``.

    Keys are the snake_case field names (``current_jobs_ready``), the same as in the
    Python API, so ``jq .current_jobs_ready`` works without quoting. Enums become their
    value (``"ready"``) and ``extra`` (keys of a newer server) stays a nested object.

    Args:
        stats: A ``ServerStats``, ``TubeStats`` or ``JobStats``.

    Returns:
        A new dictionary.
    """
    result: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif field.name == "extra":
            value = dict(value)
        result[field.name] = value
    return result


def stats_rows(stats: Stats) -> list[tuple[str, str]]:
    """The fields of a stats dataclass as ``(wire-key, text)`` rows, ``extra`` last.

    People read the keys as beanstalkd's protocol document spells them
    (``current-jobs-ready``), which is also what ``grep`` on the output finds.

    Args:
        stats: A ``ServerStats``, ``TubeStats`` or ``JobStats``.

    Returns:
        One row per field, in declaration order, then one per extra key.
    """
    rows: list[tuple[str, str]] = []
    for field in dataclasses.fields(stats):
        if field.name == "extra":
            continue
        rows.append((field.name.replace("_", "-"), _text(getattr(stats, field.name))))
    rows.extend(stats.extra.items())
    return rows


# Server stats come in groups, shown in this order.
_SECTIONS = ("jobs", "connections", "commands", "binlog", "server")


def _section(key: str) -> str:
    # cmd-stats-job and binlog-max-size are commands and binlog, not jobs: test them first.
    if key.startswith("cmd-"):
        return "commands"
    if key.startswith("binlog-"):
        return "binlog"
    if "job" in key or key == "current-tubes":
        return "jobs"
    if key.endswith(("connections", "producers", "workers", "waiting")):
        return "connections"
    return "server"


def server_stats_sections(stats: ServerStats) -> list[tuple[str, list[tuple[str, str]]]]:
    """The rows of ``stats`` grouped: jobs, connections, commands, binlog, server, extra.

    Args:
        stats: The server's statistics.

    Returns:
        ``(title, rows)`` pairs, without empty groups.
    """
    groups: dict[str, list[tuple[str, str]]] = {title: [] for title in (*_SECTIONS, "extra")}
    extra = set(stats.extra)
    for key, value in stats_rows(stats):
        groups["extra" if key in extra else _section(key)].append((key, value))
    return [(title, rows) for title, rows in groups.items() if rows]


def key_value_lines(rows: Sequence[tuple[str, str]], indent: str = "") -> list[str]:
    """Two aligned columns: keys, then values (right-aligned when all are numbers).

    Args:
        rows: ``(key, value)`` pairs.
        indent: Put before every line.

    Returns:
        The lines, without trailing spaces.
    """
    key_width = max((len(key) for key, _ in rows), default=0)
    # Numbers line up by their last digit; a column that mixes in text (a host name, a
    # state) reads better left-aligned throughout.
    numbers = all(_numeric(value) for _, value in rows)
    value_width = max((len(value) for _, value in rows), default=0) if numbers else 0
    return [
        f"{indent}{key.ljust(key_width)}  {value.rjust(value_width)}".rstrip()
        for key, value in rows
    ]


def table_lines(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A table with a header row: the first column left-aligned, the others right-aligned.

    Args:
        header: Column titles.
        rows: Cells, as many per row as titles.

    Returns:
        The header line and one line per row, without trailing spaces.
    """
    body = [list(row) for row in rows]
    widths = [len(title) for title in header]
    for row in body:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(header), *body]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def body_json(body: bytes) -> dict[str, str]:
    """A job body for JSON: ``{"body": text}`` if it is UTF-8, else ``{"body_base64": ...}``.

    JSON strings cannot carry arbitrary bytes; base64 keeps a binary body exact.

    Args:
        body: The job body.

    Returns:
        A one-key dictionary.
    """
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode("ascii")}


def duration(seconds: float) -> str:
    """A short, human duration: ``42s``, ``5m 03s``, ``2h 05m``, ``3d 04h``.

    Args:
        seconds: A non-negative number of seconds.

    Returns:
        The text.
    """
    whole = max(int(seconds), 0)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def plural(count: int, word: str) -> str:
    """``1 job``, ``2 jobs``: a count and a regular noun.

    Args:
        count: How many.
        word: The noun in the singular.

    Returns:
        The count and the noun, with an ``s`` unless the count is 1.
    """
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def rate(value: float | None) -> str:
    """A rate per second for a table cell; ``-`` when it is not known yet.

    Args:
        value: Events per second, or ``None``.

    Returns:
        ``-``, one decimal below 100, a whole number from 100 on.
    """
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as the server writes it
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _numeric(text: str) -> bool:
    return text.removeprefix("-").replace(".", "", 1).isdigit()

"""Small HTML tables for the ``_repr_html_`` of jobs and stats (Jupyter's rich display).

Every value goes through ``html.escape``: tube names, host names, ``os`` strings and job
bodies come from the server or from other producers, and a notebook renders this HTML
as is. No styling beyond a few inline attributes, so the host's (Jupyter's, a docs
theme's) table style applies and light and dark themes both read well.

Standard library only: this module belongs to the sans-IO protocol package.
"""

from __future__ import annotations

import dataclasses
import enum
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["body_preview", "compact", "field_items", "grid", "text", "value_text"]

# Right-aligned cells line the digits up; text (an ``os`` string, a host name) reads
# better left-aligned, and may wrap.
_NUMBER = ' style="text-align:right"'
_TEXT = ' style="text-align:left"'
# Label/value pairs per row of the "all fields" table: three pairs fit a notebook column.
_PAIRS_PER_ROW = 3


def text(value: object) -> str:
    """``str(value)``, escaped for HTML (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def value_text(value: object, *, grouped: bool = False) -> str:
    """The display text of one stats value (not escaped).

    Booleans read ``true``/``false`` as on the wire, enums show their wire value, and
    floats keep at most six significant digits (``rusage_utime`` is ``0.004848``).

    Args:
        value: The value.
        grouped: Write integers of five digits or more with thousands separators
            (counters; not ids such as ``pid``).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return f"{value:,}" if grouped and abs(value) >= 10_000 else str(value)
    return str(value)


def field_items(stats: Any) -> list[tuple[str, object]]:
    """Every dataclass field of ``stats`` but ``extra``, then each ``extra`` key.

    Args:
        stats: A stats dataclass instance.

    Returns:
        ``(name, value)`` pairs in declaration order; keys of ``extra`` (which a newer
        server sent) keep their wire spelling, so they read apart from the known fields.
    """
    items: list[tuple[str, object]] = []
    extra: Mapping[str, str] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if field.name == "extra":
            extra = value
        else:
            items.append((field.name, value))
    items.extend(extra.items())
    return items


def body_preview(body: bytes, limit: int = 300) -> str:
    """The start of a job body as text: UTF-8 if it decodes, else its ``bytes`` repr.

    Args:
        body: The body.
        limit: Characters (of text) or bytes (of a binary body) to show at most.

    Returns:
        The preview, ending with a note of how much was left out, if anything was.
    """
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError:
        shown = repr(body[:limit])
        left = len(body) - limit
        return shown + (f" ... ({left:,} more bytes)" if left > 0 else "")
    left = len(decoded) - limit
    return decoded[:limit] + (f" ... ({left:,} more characters)" if left > 0 else "")


def _row_table(headers: Sequence[str], values: Sequence[object]) -> str:
    head = "".join(f"<th{_NUMBER}>{text(name)}</th>" for name in headers)
    body = "".join(f"<td{_NUMBER}>{text(value_text(value, grouped=True))}</td>" for value in values)
    return f"<table><thead><tr>{head}</tr></thead><tbody><tr>{body}</tr></tbody></table>"


def _pairs_table(items: Sequence[tuple[str, object]]) -> str:
    rows = []
    for start in range(0, len(items), _PAIRS_PER_ROW):
        cells = "".join(
            f"<th{_TEXT}>{text(name)}</th>"
            f"<td{_TEXT if isinstance(value, str) else _NUMBER}>{text(value_text(value))}</td>"
            for name, value in items[start : start + _PAIRS_PER_ROW]
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def compact(
    title: str,
    counters: Iterable[tuple[str, object]],
    details: Sequence[tuple[str, object]] = (),
    *,
    note: str = "",
    pre: str = "",
) -> str:
    """A titled one-row table of the values that matter, with every field folded below.

    Args:
        title: The heading (plain text; escaped here).
        counters: ``(label, value)`` pairs shown side by side, the at-a-glance row.
        details: ``(label, value)`` pairs for a collapsed ``<details>`` table (all the
            fields); nothing is folded when empty.
        note: A line of plain text under the heading (escaped here); none when empty.
        pre: Preformatted plain text (a job body) shown under the table (escaped here);
            none when empty.

    Returns:
        An HTML fragment.
    """
    pairs = list(counters)
    parts = [f'<div class="rxbeanstalk"><strong>{text(title)}</strong>']
    if note:
        parts.append(f"<br><small>{text(note)}</small>")
    if pairs:
        parts.append(_row_table([name for name, _ in pairs], [value for _, value in pairs]))
    if pre:
        parts.append(f'<pre style="white-space:pre-wrap">{text(pre)}</pre>')
    if details:
        parts.append(
            f"<details><summary>all {len(details)} fields</summary>"
            f"{_pairs_table(details)}</details>"
        )
    parts.append("</div>")
    return "".join(parts)


def grid(
    title: str,
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    note: str = "",
    empty: str = "(none)",
) -> str:
    """A titled table with one row per item (a tube, say), its first column as labels.

    Args:
        title: The heading (plain text; escaped here).
        headers: The column names.
        rows: The rows, each as long as ``headers``; the first value labels the row.
        note: A line of plain text under the heading (escaped here); none when empty.
        empty: What the table says when there are no rows.

    Returns:
        An HTML fragment.
    """
    head = "".join(
        f"<th{_TEXT if index == 0 else _NUMBER}>{text(name)}</th>"
        for index, name in enumerate(headers)
    )
    body = []
    for row in rows:
        label, *values = row
        cells = "".join(
            f"<td{_NUMBER}>{text(value_text(value, grouped=True))}</td>" for value in values
        )
        body.append(f"<tr><th{_TEXT}>{text(label)}</th>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}">{text(empty)}</td></tr>')
    parts = [f'<div class="rxbeanstalk"><strong>{text(title)}</strong>']
    if note:
        parts.append(f"<br><small>{text(note)}</small>")
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
    parts.append("</div>")
    return "".join(parts)

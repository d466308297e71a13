"""How the CLI writes ids, times, sizes, failure reasons and tables: pure, no I/O.

A table fits the terminal: each column has a rank, and while the rows are wider than the
terminal the highest-ranked optional column goes, then the one flexible column (a name, a
command line) is cut with an ellipsis; a line that still does not fit is cut at the edge. So
at 80 columns every row is one line, and a wider terminal shows more columns.

Rejected: rich's Table. It wraps cells inside their column ("succee/ded") instead of
dropping columns, and a row grows to several lines; what to leave out is a choice only the
command can make, so each command ranks its columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..protocol import Task, format_size

SHORT = 12  # characters of an id shown in tables and messages
GAP = "  "


def short(some_id: str | None) -> str:
    """The first 12 characters of an id (what tables show and commands accept)."""
    return "" if not some_id else some_id[:SHORT]


def duration(seconds: float) -> str:
    """`3 s`, `2 min`, `1 h 5 min`, `3 d`: a span as people say it."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        hours, minutes = divmod(s // 60, 60)
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{s // 86400} d"


def ago(stamp: float | None, now: float) -> str:
    """`3 s ago` (or `in 2 h` for a time still to come); empty for no time."""
    if stamp is None:
        return ""
    if stamp > now + 1:
        return f"in {duration(stamp - now)}"
    return f"{duration(now - stamp)} ago"


def size(n: int | float | None) -> str:
    """`1.2 GB`; empty for no size."""
    return "" if n is None else format_size(n)


def last_line(data: bytes) -> str:
    """The last non-blank line of some output, stripped (and cut at 200 characters)."""
    lines = [line.strip() for line in data.decode(errors="replace").splitlines()]
    text = next((line for line in reversed(lines) if line), "")
    return text if len(text) <= 200 else text[:199] + "…"


def _limit_detail(task: Task) -> str:
    which = (task.error or "").partition(": ")[2]
    limit = task.limits.get(which)
    if which == "memory" and task.peak_memory is not None:
        return f"peak {size(task.peak_memory)}" + (f" of {size(limit)}" if limit else "")
    if limit is None:
        return ""
    if which in ("wall_time", "cpu_time"):
        return f"limit {duration(limit)}"
    return f"limit {limit:g}" if which == "processes" else f"limit {size(limit)}"


def failure_reason(task: Task, stderr_tail: str = "") -> str:
    """Why a task did not succeed, in one line, from what the coordinator recorded:
    `limit_exceeded: memory (peak 512 MB of 256 MB)`, `not_allowed: /usr/bin/foo`,
    `exit 3: <last stderr line>`, `killed`."""
    if task.status == "killed":
        return "killed"
    error = task.error or ""
    if error.startswith("limit_exceeded: "):
        detail = _limit_detail(task)
        return f"{error} ({detail})" if detail else error
    if error:
        return error
    if task.exit_code is not None:
        return f"exit {task.exit_code}" + (f": {stderr_tail}" if stderr_tail else "")
    return task.status


@dataclass(frozen=True)
class Column:
    """A table column: `rank` 0 is always shown, higher ranks go first when space is short;
    a `flex` column is cut to fit; `right` aligns numbers."""

    title: str
    rank: int = 0
    flex: bool = False
    right: bool = False


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c.title), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]


def _total(widths: Sequence[int]) -> int:
    return sum(widths) + len(GAP) * max(len(widths) - 1, 0)


def fit(
    columns: Sequence[Column], rows: Sequence[Sequence[object]], width: int
) -> tuple[list[Column], list[list[str]]]:
    """The columns that fit in `width`, and the rows' cells for them (flex ones cut)."""
    cells = [["" if v is None else str(v).replace("\n", " ") for v in row] for row in rows]
    keep = list(range(len(columns)))
    widths = _widths(columns, cells)
    for rank in sorted({c.rank for c in columns if c.rank}, reverse=True):
        if _total([widths[i] for i in keep]) <= width:
            break
        # within a rank, the rightmost column goes first
        for i in reversed([i for i in keep if columns[i].rank == rank]):
            keep.remove(i)
            if _total([widths[i] for i in keep]) <= width:
                break
    kept = [columns[i] for i in keep]
    out = [[row[i] for i in keep] for row in cells]
    widths = [widths[i] for i in keep]
    over = _total(widths) - width
    for i, col in enumerate(kept):
        if over > 0 and col.flex:
            narrower = max(widths[i] - over, len(col.title), 4)
            over -= widths[i] - narrower
            widths[i] = narrower
            for row in out:
                row[i] = _cut(row[i], narrower)
    return kept, out


def render(columns: Sequence[Column], rows: Sequence[Sequence[object]], width: int) -> list[str]:
    """A header line and a line per row, each at most `width` characters."""
    kept, cells = fit(columns, rows, width)
    widths = _widths(kept, cells)
    lines = []
    for row in [[c.title for c in kept], *cells]:
        parts = [
            value.rjust(w) if col.right else value.ljust(w)
            for col, value, w in zip(kept, row, widths, strict=True)
        ]
        lines.append(_cut(GAP.join(parts).rstrip(), width))
    return lines


__all__ = [
    "SHORT",
    "Column",
    "ago",
    "duration",
    "failure_reason",
    "fit",
    "last_line",
    "render",
    "short",
    "size",
]

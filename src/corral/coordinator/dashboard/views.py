"""What the pages show, computed from store rows (pure): ages, durations, progress bars,
the overview's sparkline, and paging."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from ...protocol import Job, Task, Worker

__all__ = [
    "PROGRESS_ORDER",
    "Overview",
    "Page",
    "ago",
    "duration",
    "keyset_page",
    "overview",
    "per_minute",
    "progress",
    "sparkline",
    "task_duration",
]

T = TypeVar("T")

#: the progress bar's parts, left to right
PROGRESS_ORDER = ("succeeded", "failed", "killed", "running", "queued")


def ago(seconds: float) -> str:
    """'3 s ago', '4 min ago', '2 h ago', '5 d ago'."""
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"


def duration(seconds: float | None) -> str:
    """'0.4 s', '12 s', '3 min 5 s', '2 h 10 min'; '' for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    s = int(seconds)
    if s < 3600:
        return f"{s} s" if s < 60 else f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def task_duration(task: Task, now: float) -> float | None:
    """How long its last attempt ran (so far, when running)."""
    if task.started is None or task.status == "queued":
        return None
    return (task.finished if task.finished is not None else now) - task.started


def progress(job: Job) -> list[tuple[str, int, float]]:
    """The progress bar's parts: (status, count, percent of the job), empty ones left out."""
    total = max(job.total, 1)
    return [
        (status, n, 100.0 * n / total)
        for status in PROGRESS_ORDER
        if (n := job.counts.get(status, 0))
    ]


def per_minute(times: Sequence[float], now: float, minutes: int) -> list[int]:
    """How many of `times` fell in each of the last `minutes` minutes, oldest first."""
    counts = [0] * minutes
    for t in times:
        back = int((now - t) // 60)
        if 0 <= back < minutes:
            counts[minutes - 1 - back] += 1
    return counts


def sparkline(counts: Sequence[int], width: int = 120, height: int = 24) -> str:
    """An SVG polyline's points for these counts (the highest touches the top)."""
    if not counts:
        return ""
    top = max(max(counts), 1)
    step = width / max(len(counts) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (height - 2) * c / top:.1f}" for i, c in enumerate(counts)
    )


@dataclass(frozen=True)
class Overview:
    """The strip on top of every page."""

    workers_online: int
    slots_busy: int
    slots_total: int
    queued: int
    running: int
    finished: list[int]  # per minute, oldest first

    @property
    def last_minute(self) -> int:
        """Tasks finished in the last whole minute."""
        return self.finished[-1] if self.finished else 0


LIVE_WORKERS = frozenset({"online", "draining", "idle-wait", "suspended"})


def overview(
    workers: Sequence[Worker], counts: dict[str, int], finished: Sequence[float], now: float
) -> Overview:
    """The overview from the workers, the farm's task counts and recent finish times."""
    live = [w for w in workers if w.status in LIVE_WORKERS]
    return Overview(
        workers_online=len(live),
        slots_busy=sum(min(w.slots_used, w.slots) for w in live),
        slots_total=sum(w.slots for w in live),
        queued=counts.get("queued", 0),
        running=counts.get("running", 0),
        finished=per_minute(finished, now, 30),
    )


@dataclass(frozen=True)
class Page:
    """One page of a keyset-paged list: what to show and the cursors of its neighbours."""

    rows: list[Task]
    prev_before: int | None  # ?before= for the previous page, None on the first
    next_after: int | None  # ?after= for the next page, None on the last


def keyset_page(fetched: Sequence[Task], limit: int, after: int | None, before: int | None) -> Page:
    """Cut `limit + 1` fetched rows (a store's keyset read) into a page and its links: the
    extra row only says that there is more in the direction read."""
    rows = list(fetched)
    more = len(rows) > limit
    if before is not None:
        rows = rows[-limit:] if more else rows
        prev_before = rows[0].seq if more and rows else None
        next_after = rows[-1].seq if rows else None
    else:
        rows = rows[:limit]
        prev_before = rows[0].seq if after is not None and after >= 0 and rows else None
        next_after = rows[-1].seq if more else None
    return Page(rows, prev_before, next_after)

"""The job page's timeline, drawn on the server as SVG (pure: spans in, text out).

One lane per worker slot: a worker's spans are packed greedily into the fewest lanes in which
none overlaps (interval partitioning), so a worker of 4 slots running 4 tasks at a time gets
4 lanes. Tasks do not record which slot ran them; packing gives the same picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from ..store import TaskSpan

__all__ = ["Bar", "Layout", "lay_out", "svg"]

LANE_HEIGHT = 16
LABEL_WIDTH = 140
WIDTH = 1000  # the viewBox width: the picture scales to its box


@dataclass(frozen=True)
class Bar:
    """One task's bar: its lane, its start and end as fractions of the time shown."""

    lane: int
    start: float
    end: float
    status: str
    task_id: str
    seconds: float


@dataclass(frozen=True)
class Layout:
    """Lanes (worker name, slot number) and bars, over `t0` to `t1`."""

    lanes: list[tuple[str, int]]
    bars: list[Bar]
    t0: float
    t1: float


def lay_out(spans: Sequence[TaskSpan], now: float, names: dict[str, str]) -> Layout:
    """Pack spans into lanes, per worker in name order; a running task ends at `now`."""
    by_worker: dict[str, list[TaskSpan]] = {}
    for span in spans:
        by_worker.setdefault(span.worker_id or "?", []).append(span)
    if not spans:
        return Layout([], [], now, now)
    t0 = min(s.started for s in spans)
    t1 = max(max(s.finished or now for s in spans), t0 + 1e-3)
    lanes: list[tuple[str, int]] = []
    bars: list[Bar] = []
    for worker in sorted(by_worker, key=lambda w: (names.get(w, w), w)):
        ends: list[float] = []  # per lane of this worker: when its last bar ends
        for span in sorted(by_worker[worker], key=lambda s: (s.started, s.seq)):
            end = span.finished if span.finished is not None else now
            slot = next((i for i, e in enumerate(ends) if e <= span.started), len(ends))
            if slot == len(ends):
                ends.append(end)
                lanes.append((names.get(worker, worker), slot + 1))
            ends[slot] = end
            lane = len(lanes) - len(ends) + slot
            frac = (span.started - t0) / (t1 - t0), (end - t0) / (t1 - t0)
            bars.append(Bar(lane, *frac, span.status, span.task_id, end - span.started))
    return Layout(lanes, bars, t0, t1)


def svg(layout: Layout, link: str = "/ui/tasks/") -> str:
    """The layout as an SVG element: a labelled lane per slot, a linked bar per task (its
    title says the task, status and seconds, so colour is not the only signal)."""
    height = LANE_HEIGHT * max(len(layout.lanes), 1) + 20
    span = WIDTH - LABEL_WIDTH
    out = [
        f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" role="img"'
        f' aria-label="timeline: {len(layout.bars)} tasks on {len(layout.lanes)} slots">'
    ]
    for i, (worker, slot) in enumerate(layout.lanes):
        y = i * LANE_HEIGHT
        out.append(
            f'<text x="4" y="{y + 12}" class="lane">{escape(worker)} #{slot}</text>'
            f'<line x1="{LABEL_WIDTH}" x2="{WIDTH}" y1="{y + LANE_HEIGHT}"'
            f' y2="{y + LANE_HEIGHT}" class="grid"/>'
        )
    for bar in layout.bars:
        x = LABEL_WIDTH + bar.start * span
        w = max((bar.end - bar.start) * span, 1.0)
        y = bar.lane * LANE_HEIGHT + 2
        title = f"task {bar.task_id[:12]}: {bar.status}, {bar.seconds:.1f} s"
        out.append(
            f'<a href="{escape(link + bar.task_id)}"><rect x="{x:.1f}" y="{y}" width="{w:.1f}"'
            f' height="{LANE_HEIGHT - 4}" class="bar s-{escape(bar.status)}">'
            f"<title>{escape(title)}</title></rect></a>"
        )
    total = layout.t1 - layout.t0
    base = height - 4
    out.append(f'<text x="{LABEL_WIDTH}" y="{base}" class="axis">0 s</text>')
    out.append(
        f'<text x="{WIDTH - 4}" y="{base}" class="axis" text-anchor="end">{total:.1f} s</text>'
    )
    out.append("</svg>")
    return "".join(out)

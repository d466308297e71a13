"""What a job's finished tasks used, summed up for `corral show JOB` (pure): the median, the
95th percentile and the maximum of their peak memory and CPU seconds. `min_memory=auto`
places the job's remaining tasks by the maximum (scheduler.auto_memory)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from ..protocol import JobUsage, Spread

__all__ = ["job_usage", "spread"]


def spread(values: Iterable[float]) -> Spread | None:
    """Median, nearest-rank 95th percentile and maximum of `values`; None for none."""
    ordered = sorted(values)
    if not ordered:
        return None
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1]
    return Spread(float(statistics.median(ordered)), float(p95), float(ordered[-1]))


def job_usage(rows: Sequence[tuple[int | None, float | None]]) -> JobUsage | None:
    """The summary of finished tasks' (peak memory, CPU seconds); None when none was measured."""
    if not rows:
        return None
    return JobUsage(
        len(rows),
        spread(p for p, _ in rows if p is not None),
        spread(c for _, c in rows if c is not None),
    )

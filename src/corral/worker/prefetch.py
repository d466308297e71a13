"""How far ahead of its free slots a worker leases: the prefetch decision, kept pure.

A worker that asks for work only when a slot frees sits idle for one round trip per task,
which dominates when tasks take milliseconds. So a worker whose recent tasks were short holds
a few more leases than it has slots, queued locally (as Celery's prefetch and Dask's
worker-side queue do). The risk is a long task with prefetched ones stuck behind it while
another worker idles, so:

- nothing is prefetched until the worker has seen its tasks finish, and only while their
  recent mean run time is under `HORIZON` and no running task has taken that long;
- the coordinator grants prefetch only from what is queued when asked, never a task that
  arrives while the request is held;
- the local queue holds about `HORIZON` seconds of work, at most `MAX_PER_SLOT` a slot;
- a prefetched task that has not started after `GIVE_BACK` seconds goes back to the queue.

Leases are asked for in batches: while tasks wait locally, the worker asks again only once
half its room is free (`worth_asking`), so one call brings several tasks, and carries the
results finished since the last one. While tasks still run, a result waits up to `LINGER`
seconds for a lease call to carry it, or for `BATCH` others; with nothing else running it goes
at once, so a lone task's round trip is not delayed.
"""

from __future__ import annotations

HORIZON = 0.1  # seconds of work a worker may hold beyond its slots
MAX_PER_SLOT = 8
GIVE_BACK = 5.0
LINGER = 0.02
BATCH = 32
_WEIGHT = 0.2  # of the newest run time in the moving mean


class RunTimes:
    """An exponentially weighted mean of recent tasks' run times."""

    def __init__(self) -> None:
        self.mean: float | None = None

    def add(self, seconds: float) -> None:
        """Count one finished task."""
        seconds = max(seconds, 0.0)
        self.mean = seconds if self.mean is None else self.mean + _WEIGHT * (seconds - self.mean)


def prefetch_room(slots: int, mean: float | None, oldest: float = 0.0) -> int:
    """How many tasks a worker may hold beyond its `slots`, given its tasks' mean run time
    and how long the oldest running one has run (a long one now: the mean is out of date)."""
    if mean is None or max(mean, oldest) >= HORIZON or slots < 1:
        return 0
    return min(MAX_PER_SLOT * slots, int(HORIZON * slots / max(mean, 1e-6)))


def worth_asking(free: int, ahead: int, waiting: int) -> bool:
    """Whether to ask for more tasks now, with `free` room (slots plus `ahead`) and `waiting`
    tasks leased but not started: at once when none wait, else once half the room is free."""
    if free <= 0:
        return False
    return waiting == 0 or free >= (ahead + 1) // 2


__all__ = [
    "BATCH",
    "GIVE_BACK",
    "HORIZON",
    "LINGER",
    "MAX_PER_SLOT",
    "RunTimes",
    "prefetch_room",
    "worth_asking",
]

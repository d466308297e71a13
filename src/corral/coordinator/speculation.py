"""Speculative execution (a job's `speculative` option): pure decisions, the clock passed in.

A phase is the tasks of one job that share a task name (a MapReduce's `WordCount.map`). Once
most of a phase has finished, a task running well past the phase's median duration gets a
backup attempt: a second live lease on the same running task, on another worker. Whichever
attempt succeeds first is recorded; the other's lease is gone, so its result is refused as
stale and its worker is told to stop it at its next heartbeat, as for a kill.

How the two attempts of a backed-up task settle (`settle`):

    attempt finishes   succeeded                 failed (or a retry)
    ----------------   -----------------------   -----------------------------------------
    the backup         recorded; primary lost    backup dropped; the primary carries on
    the primary        recorded; backup lost     backup promoted to primary, carries on
    the only one       recorded                  recorded (retry or fail as usual)

So a failing attempt decides the task only when no other attempt of it is live.

A task gets at most one backup, ever: not again after its backup lost, failed or expired
(nor after a retry). A worker that ran a backup may still hold the task while it is being
killed, and the worker keys what it holds by task id; never granting the task twice keeps
that safe, and keeps a task that is slow everywhere from eating the farm.

Rejected: requeueing the task when its primary's lease expires while a backup runs. The backup
is already a live attempt; promoting it keeps its progress and needs no new lease.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Phase", "Running", "SpeculationPolicy", "settle"]


@dataclass(frozen=True)
class Running:
    """A running task of a phase, as the store sees it."""

    task_id: str
    started: float
    worker_id: str
    backed_up: bool = False  # it has, or once had, a backup: never another
    requires: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Phase:
    """The facts about one phase: its size, how many are final, how long the succeeded took."""

    total: int
    done: int  # succeeded, failed or killed
    durations: Sequence[float]  # of the succeeded ones
    running: Sequence[Running]


@dataclass(frozen=True)
class SpeculationPolicy:
    """When a running task deserves a backup (see the module docstring)."""

    factor: float = 1.5
    min_seconds: float = 5.0
    done_fraction: float = 0.75

    def threshold(self, phase: Phase) -> float | None:
        """Seconds a task of this phase may run before it is a straggler; None while the
        phase is too little done (or nothing succeeded yet) to tell."""
        if not phase.durations or phase.total <= 0:
            return None
        if phase.done < self.done_fraction * phase.total:
            return None
        return max(self.factor * statistics.median(phase.durations), self.min_seconds)

    def stragglers(self, phase: Phase, now: float) -> list[Running]:
        """The phase's running tasks that deserve a backup now, longest-running first."""
        limit = self.threshold(phase)
        if limit is None:
            return []
        late = [r for r in phase.running if not r.backed_up and now - r.started > limit]
        return sorted(late, key=lambda r: (r.started, r.task_id))

    def candidates(self, phases: Iterable[Phase], now: float, worker_id: str) -> list[Running]:
        """Stragglers of every phase that `worker_id` could back up (it does not run them),
        longest-running first."""
        out = [
            r for phase in phases for r in self.stragglers(phase, now) if r.worker_id != worker_id
        ]
        return sorted(out, key=lambda r: (r.started, r.task_id))


Settle = Literal["record", "drop_backup", "promote_backup"]


def settle(attempt: Literal["primary", "backup"], succeeded: bool, backup_live: bool) -> Settle:
    """What an attempt's result does to its task: record it, drop the backup (the primary
    carries on), or promote the backup to primary (the failed primary's result is dropped)."""
    if succeeded or not backup_live:
        return "record"
    return "drop_backup" if attempt == "backup" else "promote_backup"

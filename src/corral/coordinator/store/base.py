"""The durable state seam: one abstract Store, one file per backend in this package.

Every method is one transaction. State changes of tasks append an Event in the same
transaction, so the event stream never disagrees with the tables.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...protocol import Event, Job, OutputFile, Task, TaskSpec, Worker


class NotFound(LookupError):
    """No such job, task or worker."""


@dataclass(frozen=True)
class NewTask:
    """A task row about to be inserted."""

    id: str
    seq: int
    spec: TaskSpec


@dataclass(frozen=True)
class Leased:
    """A task just handed to a worker."""

    task_id: str
    job_id: str
    lease_id: str
    attempt: int
    expires: float
    spec: TaskSpec


@dataclass(frozen=True)
class Outcome:
    """How a finished attempt ended, decided before it is stored."""

    status: str
    exit_code: int | None
    error: str | None
    stdout: str | None
    stderr: str | None
    manifest: dict[str, OutputFile]


@dataclass(frozen=True)
class Stopped:
    """A running task that was killed or expired: its worker must drop the lease."""

    task_id: str
    worker_id: str
    lease_id: str


class Store(abc.ABC):
    """Jobs, tasks, workers and events."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    # jobs and tasks
    @abc.abstractmethod
    def create_job(
        self, job_id: str, name: str, owner: str, now: float, tasks: Sequence[NewTask]
    ) -> None:
        """Insert a job and all its tasks, queued, atomically."""

    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job:
        """One job with its counts; raises NotFound."""

    @abc.abstractmethod
    def list_jobs(self, limit: int, owner: str | None = None) -> list[Job]:
        """Newest jobs first."""

    @abc.abstractmethod
    def get_task(self, task_id: str) -> Task:
        """One task; raises NotFound."""

    @abc.abstractmethod
    def list_tasks(
        self, job_id: str, offset: int, limit: int, status: str | None = None
    ) -> list[Task]:
        """A job's tasks in submission order."""

    # scheduling
    @abc.abstractmethod
    def lease(
        self,
        worker_id: str,
        capacity: int,
        now: float,
        expires: float,
        scan: int,
        fits: Callable[[dict[str, str]], bool] = lambda _r: True,
    ) -> list[Leased]:
        """Hand up to `capacity` queued tasks to a worker, oldest first."""

    @abc.abstractmethod
    def finish(self, task_id: str, lease_id: str, outcome: Outcome, now: float) -> bool:
        """Record a result if `lease_id` is the task's live lease; False when it is stale."""

    @abc.abstractmethod
    def extend(
        self, worker_id: str, lease_ids: Sequence[str], now: float, expires: float
    ) -> list[str]:
        """Extend the worker's live leases; return the given leases that are no longer live."""

    @abc.abstractmethod
    def expire(self, now: float) -> list[Stopped]:
        """Requeue (or fail, when out of attempts) tasks whose lease ran out."""

    @abc.abstractmethod
    def next_expiry(self) -> float | None:
        """The earliest lease expiry among running tasks."""

    @abc.abstractmethod
    def grace_running(self, until: float) -> None:
        """Give running leases until `until` to report back (after a coordinator restart)."""

    @abc.abstractmethod
    def kill(self, task_ids: Sequence[str], now: float) -> list[Stopped]:
        """Kill queued or running tasks; return the running ones so workers can be told."""

    @abc.abstractmethod
    def job_task_ids(self, job_id: str, only_live: bool) -> list[str]:
        """Ids of a job's tasks, optionally only those not yet final."""

    # workers
    @abc.abstractmethod
    def register_worker(
        self, worker_id: str, name: str, slots: int, caps: dict[str, object], now: float
    ) -> None:
        """Insert a worker."""

    @abc.abstractmethod
    def touch_worker(
        self, worker_id: str, now: float, status: str, caps: dict[str, object] | None
    ) -> None:
        """Record a heartbeat; raises NotFound."""

    @abc.abstractmethod
    def set_worker_status(self, worker_id: str, status: str) -> None:
        """Mark a worker gone, draining, lost or online."""

    @abc.abstractmethod
    def mark_lost_workers(self, before: float) -> list[str]:
        """Mark online workers silent since `before` as lost."""

    @abc.abstractmethod
    def get_worker(self, worker_id: str) -> Worker:
        """One worker; raises NotFound."""

    @abc.abstractmethod
    def list_workers(self) -> list[Worker]:
        """All workers, online first."""

    # events
    @abc.abstractmethod
    def events(self, job_id: str, after: int, limit: int) -> list[Event]:
        """A job's task state changes after sequence number `after`."""


def job_status(counts: dict[str, int]) -> str:
    """A job's status from its task counts."""
    live = counts.get("queued", 0) + counts.get("running", 0)
    total = sum(counts.values())
    if live:
        return "queued" if counts.get("queued", 0) == total else "running"
    if counts.get("failed", 0):
        return "failed"
    if counts.get("killed", 0):
        return "killed"
    return "succeeded"

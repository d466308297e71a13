"""The durable state seam: one abstract Store, implemented once over SQL by SQLStore (_sql.py),
with one file per backend (sqlite.py, postgres.py) for what differs.

Every method is one transaction. State changes of tasks append an Event in the same
transaction, so the event stream never disagrees with the tables.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ...protocol import (
    AllowEntry,
    AuditEntry,
    Checkpoint,
    CheckpointInfo,
    Event,
    IdMatch,
    Job,
    OutputFile,
    Task,
    TaskSpec,
    Worker,
)
from ..fairshare import Owner
from ..speculation import Phase
from .shared import SharedState


class SchemaTooNew(RuntimeError):
    """The database was created or migrated by a newer coordinator than this one."""


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
    created: float | None = None  # when the task was submitted (None: a backup attempt)
    owner: str | None = None  # its job's owner, as the queue read it (None: a backup attempt)


@dataclass(frozen=True)
class Outcome:
    """How a finished attempt ended, decided before it is stored."""

    status: str
    exit_code: int | None
    error: str | None
    stdout: str | None
    stderr: str | None
    manifest: dict[str, OutputFile]
    not_before: float | None = None  # with status "queued": a retry, not leased before this
    peak_memory: int | None = None  # what the attempt used, when its worker measured it
    cpu_seconds: float | None = None


@dataclass(frozen=True)
class Stopped:
    """A running task that was killed or expired: its worker must drop the lease."""

    task_id: str
    worker_id: str
    lease_id: str


@dataclass(frozen=True)
class TokenRecord:
    """A stored token: only the sha256 of its secret is kept."""

    id: str
    name: str
    role: str
    owner: str
    secret_sha256: str
    created: float
    expires: float | None = None
    revoked: float | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class TaskSpan:
    """When a task ran and where: a bar of the dashboard's timeline."""

    task_id: str
    seq: int
    status: str
    worker_id: str | None
    started: float
    finished: float | None


class Store(SharedState):
    """Jobs, tasks, workers and events; and what coordinators share (shared.py)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections."""

    # jobs and tasks
    @abc.abstractmethod
    def create_job(
        self,
        job_id: str,
        name: str,
        owner: str,
        now: float,
        tasks: Sequence[NewTask],
        speculative: bool = False,
        priority: int = 0,
    ) -> None:
        """Insert a job and all its tasks, queued, atomically; tasks with `after` are held
        until their dependencies succeed (or failed at once when one already failed). A
        `speculative` job's stragglers get backup attempts (speculation.py). `priority` is
        its tasks' unless their spec sets one (fairshare.py orders an owner's by it)."""

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
        job_id: str | None = None,
        peak_fits: Callable[[int | None], bool] = lambda _p: True,
    ) -> list[Leased]:
        """Hand queued tasks to a worker, taking up to `capacity` slots in all (a task takes
        `slots_needed(requires)` slots): owner by owner as fair share decides (fairshare.py,
        from owners' usage, shares and caps), and within an owner highest priority, then
        oldest, first; retries wait for their `not_before`.
        With `job_id`, only that job's tasks (what a worker prefetches), and only while they
        come first in that order: prefetch never takes another owner's turn, nor a task of
        higher priority's. A task asking `min_memory=auto` goes only where `peak_fits`
        accepts its job's peak (`job_peaks`)."""

    # fair share: usage is charged when attempts end, decayed with this half-life (seconds)
    fair_share_half_life: float

    @abc.abstractmethod
    def set_owner_share(self, owner: str, share: float | None, max_slots: int | None) -> None:
        """Set an owner's fair-share weight and cap on running slots (None keeps what it
        had; a cap of 0 lifts it)."""

    @abc.abstractmethod
    def owner_shares(self) -> dict[str, tuple[float, int | None]]:
        """Each owner given a share or charged usage: (share, cap)."""

    @abc.abstractmethod
    def fair_share(self, now: float, owners: Iterable[str] | None = None) -> dict[str, Owner]:
        """What fair share knows of these owners now (default: those with ready queued
        tasks): decayed usage with their running attempts' so far, share, running slots, cap."""

    @abc.abstractmethod
    def finish(self, task_id: str, lease_id: str, outcome: Outcome, now: float) -> bool:
        """Record a result if `lease_id` is the task's live lease; False when it is stale.
        A final status settles the task's dependents in the same transaction. For a task with
        a backup attempt, either lease counts, as speculation.settle says.

        An outcome with status "queued" puts the task back in the queue (a retry), not to be
        leased before `outcome.not_before`."""

    @abc.abstractmethod
    def finish_many(
        self,
        worker_id: str,
        items: Sequence[tuple[str, str, Outcome]],
        now: float,
        backed: Collection[str] | None = None,
    ) -> list[bool]:
        """`finish` for several `(task_id, lease_id, outcome)` results of one worker, in order;
        each is False when its lease is stale or not held by `worker_id`; one transaction (one
        commit for a whole batch of results). `backed`: which of them have a backup attempt,
        as the caller read them (`backup_holders`) in the transaction this one joins; None:
        read here."""

    @abc.abstractmethod
    def get_tasks(self, task_ids: Sequence[str]) -> dict[str, Task]:
        """Tasks by id; ids that name no task are left out."""

    @abc.abstractmethod
    def job_owner(self, job_id: str) -> str:
        """Who submitted a job; raises NotFound."""

    @abc.abstractmethod
    def job_finished(self, job_id: str) -> bool:
        """Whether none of a job's tasks is queued or running (its status is final), without
        counting them all as get_job does; raises NotFound."""

    @abc.abstractmethod
    def live_lease(self, task_id: str, lease_id: str, now: float) -> tuple[str, str] | None:
        """`(job_id, owner)` while `lease_id` is the task's lease and runs past `now`, else
        None (finished, killed, expired or requeued): one indexed read, no write."""

    def atomic(self) -> AbstractContextManager[Any]:
        """Several calls as one transaction, one commit for all (`with store.atomic(): ...`);
        a call that fails inside still undoes only its own changes. Nothing may await inside:
        the store has one connection, and another request's calls would join the transaction.
        The default runs each call in its own transaction."""
        return contextlib.nullcontext()

    def group(self) -> AbstractContextManager[Any]:
        """Several calls as one transaction, as `atomic`, but with no savepoint for each
        call (on PostgreSQL, two round trips each): a call that fails inside may leave
        changes of its own, so the whole block must then be rolled back (the error leaving
        the `with` does that). Nothing may await inside. The default: as `atomic`."""
        return self.atomic()

    @abc.abstractmethod
    def release(self, task_id: str, lease_id: str, now: float, error: str) -> bool:
        """Requeue a task its worker gave back (saying `error` why), undoing the attempt
        count, if `lease_id` is its live lease; kill it instead when that attempt was asked
        to be evicted for a kill. False when the lease is stale."""

    @abc.abstractmethod
    def queued_requirements(self) -> list[dict[str, str]]:
        """The distinct requirement maps of queued tasks."""

    @abc.abstractmethod
    def release_due(self, now: float) -> int:
        """Clear `not_before` of queued retries whose time has come; how many there were."""

    @abc.abstractmethod
    def next_not_before(self) -> float | None:
        """The earliest `not_before` among queued retries still waiting."""

    @abc.abstractmethod
    def extend(
        self, worker_id: str, lease_ids: Sequence[str], now: float, expires: float
    ) -> list[str]:
        """Extend the worker's live leases (backup attempts' too); return the given leases
        that are no longer live."""

    @abc.abstractmethod
    def expire(self, now: float) -> list[Stopped]:
        """Requeue (or fail, when out of attempts) tasks whose lease ran out; a task whose
        backup attempt still runs goes on with it instead, and expired backups are dropped."""

    @abc.abstractmethod
    def next_expiry(self) -> float | None:
        """The earliest lease expiry among running tasks."""

    @abc.abstractmethod
    def grace_running(self, until: float) -> None:
        """Give running leases until `until` to report back (after a coordinator restart)."""

    @abc.abstractmethod
    def kill(self, task_ids: Sequence[str], now: float) -> list[Stopped]:
        """Kill queued or running tasks; return the running attempts (backups too) so their
        workers can be told."""

    @abc.abstractmethod
    def job_task_ids(self, job_id: str, only_live: bool) -> list[str]:
        """Ids of a job's tasks, optionally only those not yet final."""

    # backup attempts of speculative jobs (speculation.py; shared SQL in _backups.py)
    @abc.abstractmethod
    def speculative_phases(self) -> list[Phase]:
        """The phases of speculative jobs that have running tasks, with their facts."""

    @abc.abstractmethod
    def grant_backup(
        self, task_id: str, worker_id: str, now: float, expires: float
    ) -> Leased | None:
        """A backup lease on a running task for `worker_id`, or None when the task no longer
        runs, runs on that worker, or already had a backup."""

    @abc.abstractmethod
    def backup_holders(self, task_ids: Sequence[str]) -> dict[str, str]:
        """The worker of each of these tasks' live backup attempt, for those with one."""

    @abc.abstractmethod
    def backup_leases(self, worker_id: str) -> set[str]:
        """The backup leases `worker_id` holds."""

    # evictions (stops.py; shared SQL in _evictions.py)
    @abc.abstractmethod
    def evict(self, task_ids: Sequence[str], kill: bool, now: float) -> list[Stopped]:
        """Ask the workers of these tasks' running attempts to evict them (then `release`
        kills them with `kill`, else requeues them); the attempts asked, and with `kill` the
        backup attempts dropped."""

    @abc.abstractmethod
    def evict_worker(self, worker_id: str, now: float) -> list[Stopped]:
        """Ask a worker to evict every task it runs, to be requeued; the attempts asked."""

    @abc.abstractmethod
    def evictions(self, worker_id: str) -> list[str]:
        """The leases a worker is asked to evict and still holds."""

    # checkpoints (checkpoints.py; shared SQL in _checkpoints.py)
    @abc.abstractmethod
    def save_checkpoint(
        self, task_id: str, lease_id: str, files: dict[str, OutputFile], now: float
    ) -> int | None:
        """Record a running task's checkpoint, fenced by its live lease, and drop the ones
        no longer kept; its number, or None when the lease is not live."""

    @abc.abstractmethod
    def checkpoints(self, task_ids: Sequence[str]) -> dict[str, list[CheckpointInfo]]:
        """The saved checkpoints of these tasks, oldest first."""

    @abc.abstractmethod
    def checkpoint_files(self, task_id: str, n: int) -> Checkpoint | None:
        """One checkpoint's files, to restore; None when it is gone."""

    @abc.abstractmethod
    def discredit_checkpoint(self, task_id: str, n: int) -> None:
        """Mark a checkpoint bad: it is not restored again."""

    # workers
    @abc.abstractmethod
    def register_worker(
        self, worker_id: str, name: str, slots: int, caps: dict[str, object], now: float
    ) -> None:
        """Insert a worker, replacing lost or gone rows of the same name (a restart)."""

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

    # identities, ownership and audit (access.py says what they are for; SQL in _identity.py)
    @abc.abstractmethod
    def add_tasks(self, job_id: str, now: float, tasks: Sequence[NewTask]) -> None:
        """Append queued tasks to an existing job; raises NotFound."""

    @abc.abstractmethod
    def add_token(self, token: TokenRecord) -> None:
        """Insert a token."""

    @abc.abstractmethod
    def token_by_hash(self, secret_sha256: str) -> TokenRecord | None:
        """The token whose secret hashes to this, revoked or not."""

    @abc.abstractmethod
    def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""

    @abc.abstractmethod
    def revoke_token(self, token_id: str, now: float) -> TokenRecord:
        """Revoke a token (once; later calls keep the first time); raises NotFound."""

    @abc.abstractmethod
    def set_token_expiry(self, token_id: str, expires: float | None) -> None:
        """Change when a token expires (None: never); NotFound for no such token."""

    @abc.abstractmethod
    def set_worker_owner(self, worker_id: str, owner: str) -> None:
        """Record which identity registered a worker."""

    @abc.abstractmethod
    def worker_owner(self, worker_id: str) -> str | None:
        """The identity that registered a worker, if known."""

    @abc.abstractmethod
    def registered_by(self, worker_id: str) -> str | None:
        """`worker_owner` of a worker that exists; NotFound for no such worker (one lookup:
        the access check of every worker call)."""

    @abc.abstractmethod
    def grant_blobs(self, owner: str, hashes: Iterable[str]) -> None:
        """Let `owner` read these blobs (it uploaded them, or its jobs made them)."""

    @abc.abstractmethod
    def owned_blobs(self, owner: str, hashes: Sequence[str]) -> set[str]:
        """Which of these blobs `owner` may read."""

    @abc.abstractmethod
    def add_audit(
        self, now: float, actor: str, token_id: str, action: str, target: str, detail: str
    ) -> None:
        """Append one audit entry."""

    @abc.abstractmethod
    def audit(self, after: int, limit: int) -> list[AuditEntry]:
        """Audit entries after sequence number `after`, oldest first."""

    # what jobs used (shared SQL in _usage.py)
    @abc.abstractmethod
    def job_peaks(self, job_ids: Iterable[str]) -> dict[str, int | None]:
        """The highest peak memory (bytes) any attempt of each job reached; None for a job
        with no measured one yet."""

    @abc.abstractmethod
    def finished_usage(self, job_id: str) -> list[tuple[int | None, float | None]]:
        """Peak memory and CPU seconds of each finished task of a job that has either."""

    # short ids (shared SQL in _lookup.py)
    @abc.abstractmethod
    def find_ids(
        self, prefix: str, name: str | None, owner: str | None, limit: int
    ) -> list[IdMatch]:
        """Up to `limit` jobs and `limit` tasks whose id starts with `prefix` (lowercase hex);
        with `name`, the tasks of that name in the jobs it starts; `owner`: only their jobs."""

    # dependencies and blocked tasks (shared SQL in _deps.py)
    @abc.abstractmethod
    def dependencies_left(self, task_id: str) -> int:
        """How many of a queued task's dependencies have yet to succeed."""

    @abc.abstractmethod
    def set_blocked(self, task_id: str, blocked: bool) -> str | None:
        """Mark a running task blocked on its children (its slots count as free), or not;
        returns its worker, or None when the task is not running."""

    @abc.abstractmethod
    def blocked_tasks(self, worker_id: str) -> list[str]:
        """The worker's running tasks that are blocked on their children."""

    # what the dashboard reads, and retrying failed tasks (shared SQL in _browse.py)
    @abc.abstractmethod
    def jobs_page(
        self, owner: str | None, status: str | None, offset: int, limit: int
    ) -> list[Job]:
        """Newest jobs first, optionally one owner's and of one status, a page at a time."""

    @abc.abstractmethod
    def tasks_page(
        self,
        job_id: str,
        status: str | None,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[Task]:
        """A job's tasks in submission order, optionally of one status: the first `limit`
        with `seq` above `after`, or the last `limit` below `before` (keyset paging)."""

    @abc.abstractmethod
    def task_spans(self, job_id: str, limit: int) -> list[TaskSpan]:
        """The `limit` tasks of a job that started last, earliest start first."""

    @abc.abstractmethod
    def task_events(self, job_id: str, task_id: str) -> list[Event]:
        """One task's state changes, oldest first."""

    @abc.abstractmethod
    def farm_counts(self) -> dict[str, int]:
        """How many tasks are queued and running on the whole farm."""

    # what `GET /metrics` reads at scrape time (_figures.py)
    @abc.abstractmethod
    def live_task_counts(self, status: str) -> list[tuple[str, str, int]]:
        """(requirement class, owner, count) of the tasks in `status` (queued or running)."""

    @abc.abstractmethod
    def worker_counts(self) -> dict[str, int]:
        """Workers by status."""

    @abc.abstractmethod
    def slot_counts(self) -> tuple[int, int]:
        """(busy, total) slots of the workers that take work."""

    @abc.abstractmethod
    def blob_bytes(self) -> int:
        """The bytes of the blobs kept in the database."""

    # what the autoscaler reads (_figures.py)
    @abc.abstractmethod
    def ready_by_job(self) -> list[tuple[str, str, int]]:
        """(requirement class, job, count) of the queued tasks not waiting on dependencies."""

    @abc.abstractmethod
    def mean_run_seconds(self, job_ids: Sequence[str]) -> dict[str, float]:
        """Each job's mean run time (start to finish) of its succeeded tasks; jobs with none
        are left out."""

    @abc.abstractmethod
    def finished_times(self, since: float) -> list[float]:
        """When tasks reached a final status since `since` (from a bounded tail of events)."""

    @abc.abstractmethod
    def audit_newest(self, limit: int) -> list[AuditEntry]:
        """The newest `limit` audit entries, newest first."""

    @abc.abstractmethod
    def requeue_failed(self, job_id: str, now: float, killed: bool = False) -> list[str]:
        """Put a job's failed tasks (and with `killed` its killed ones) back in the queue as
        new attempts, held again on their dependencies; returns their ids in submission
        order."""

    # the executable allowlist (shared SQL in _allowlist.py)
    @abc.abstractmethod
    def allow_add(self, entry: AllowEntry) -> bool:
        """Add a hash; False when it was already there."""

    @abc.abstractmethod
    def allow_list(self) -> list[AllowEntry]:
        """Every allowed hash, oldest first."""

    @abc.abstractmethod
    def allow_remove(self, sha256: str) -> bool:
        """Remove a hash; False when it was not there."""


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

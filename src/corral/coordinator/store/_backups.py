"""Backup attempts of speculative jobs' stragglers, for SQLStore (_sql.py); see speculation.py.

`backups` holds a running task's second live lease, at most one a task, on a worker other than
its primary's; `tasks.backed_up` marks a task that ever had one (it never gets another). Every
way a task leaves `running` (finish, kill, expire, release) removes its backup in the same
transaction, so a backup row always belongs to a running task. A lease id is either a task's
primary lease or its backup's, never both, and each is fenced the same way: a result counts
only while its lease is live.

The methods starting with `_` run inside a transaction the store has already opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..speculation import Phase, Running, settle
from ._deps import DependencySQL
from ._fairshare import FairShareSQL
from ._rows import class_requires, finish_args, new_lease_id, spec_decoder
from ._sqlbase import FINISH
from .base import Leased, Outcome, Stopped

__all__ = ["BackupSQL"]

# The running tasks of speculative jobs, through the running-tasks index: as many rows as
# the farm has busy slots, whatever the size of the jobs.
_RUNNING = (
    "SELECT t.job_id, t.name, t.id, t.started, t.worker_id, t.backed_up, t.requires"
    " FROM tasks t JOIN jobs j ON j.id = t.job_id"
    " WHERE t.status = 'running' AND j.speculative = 1"
)
# A speculative job's phases: their sizes, and how long their succeeded tasks took.
_SIZES = "SELECT name, status, COUNT(*) FROM tasks WHERE job_id = ? GROUP BY name, status"
_DURATIONS = (
    "SELECT name, finished - started FROM tasks WHERE job_id = ? AND status = 'succeeded'"
    " AND started IS NOT NULL"
)
# A backup's grant is fenced here: the task still runs, never had a backup, and runs elsewhere.
_MARK = (
    "UPDATE tasks SET backed_up = 1 WHERE id = ? AND status = 'running' AND backed_up = 0"
    " AND worker_id <> ? RETURNING job_id, attempts"
)
_BACKUPS_OF = "SELECT task_id, lease_id, worker_id, lease_expires, started FROM backups"
_PROMOTE = (
    "UPDATE tasks SET lease_id = ?, worker_id = ?, lease_expires = ?, started = ?, blocked = 0"
    " WHERE id = ? AND status = 'running'"
)

Backup = tuple[str, str, float, float]  # lease id, worker id, lease expiry, started


class BackupSQL(DependencySQL, FairShareSQL):
    """A part of SQLStore."""

    def speculative_phases(self) -> list[Phase]:
        running: dict[tuple[str, str], list[Running]] = {}
        for job_id, name, task_id, started, worker, backed, requires in self._db.execute(
            self._q(_RUNNING)
        ).fetchall():
            run = Running(task_id, started, worker, bool(backed), class_requires(requires))
            running.setdefault((job_id, name), []).append(run)
        sizes: dict[tuple[str, str], list[int]] = {}  # [total, final]
        durations: dict[tuple[str, str], list[float]] = {}
        for job_id in sorted({job for job, _ in running}):
            for name, status, n in self._db.execute(self._q(_SIZES), (job_id,)).fetchall():
                size = sizes.setdefault((job_id, name), [0, 0])
                size[0] += n
                size[1] += n if status in ("succeeded", "failed", "killed") else 0
            for name, took in self._db.execute(self._q(_DURATIONS), (job_id,)).fetchall():
                durations.setdefault((job_id, name), []).append(float(took))
        return [
            Phase(sizes[key][0], sizes[key][1], durations.get(key, []), runs)
            for key, runs in running.items()
        ]

    def grant_backup(
        self, task_id: str, worker_id: str, now: float, expires: float
    ) -> Leased | None:
        with self._tx():
            db, q = self._db, self._q
            row = db.execute(q(_MARK), (task_id, worker_id)).fetchone()
            if row is None:
                return None
            (spec,) = db.execute(q("SELECT {spec} FROM tasks WHERE id = ?"), (task_id,)).fetchone()
            lease_id = new_lease_id()
            db.execute(
                q(
                    "INSERT INTO backups (task_id, lease_id, worker_id, lease_expires, started)"
                    " VALUES (?,?,?,?,?)"
                ),
                (task_id, lease_id, worker_id, expires, now),
            )
        return Leased(task_id, row[0], lease_id, row[1], expires, spec_decoder.decode(spec))

    def backup_holders(self, task_ids: Sequence[str]) -> dict[str, str]:
        return {t: b[1] for t, b in self._backups_of(task_ids).items()}

    def backup_leases(self, worker_id: str) -> set[str]:
        rows = self._db.execute(
            self._q("SELECT lease_id FROM backups WHERE worker_id = ?"), (worker_id,)
        )
        return {r[0] for r in rows.fetchall()}

    def _backups_of(self, task_ids: Sequence[str]) -> dict[str, Backup]:
        rows = self._run_listed(_BACKUPS_OF + " WHERE task_id {ids}", list(task_ids))
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def _finish_backed(
        self, task_id: str, lease_id: str, worker_id: str | None, outcome: Outcome, now: float
    ) -> bool:
        """`finish` of a task that had a backup when the call began: which attempt this is
        and what its result does are read afresh (speculation.settle decides)."""
        row = self._db.execute(
            self._q("SELECT lease_id, worker_id FROM tasks WHERE id = ? AND status = 'running'"),
            (task_id,),
        ).fetchone()
        if row is None:
            return False
        backup = self._backups_of([task_id]).get(task_id)
        attempt: Literal["primary", "backup"]
        if backup is not None and lease_id == backup[0] and worker_id in (None, backup[1]):
            attempt = "backup"
        elif lease_id == row[0] and worker_id in (None, row[1]):
            attempt = "primary"
        else:
            return False
        action = settle(attempt, outcome.status == "succeeded", backup is not None)
        if action == "drop_backup":
            self._drop_backup(task_id)
        elif action == "promote_backup" and backup is not None:
            self._promote(task_id, backup)
        else:
            winner = backup[1] if attempt == "backup" and backup is not None else None
            self._record(task_id, row[0], winner, outcome, now)
        return True

    def _record(
        self, task_id: str, primary: str, winner: str | None, outcome: Outcome, now: float
    ) -> None:
        """Record an outcome in place of the primary lease; `winner`: the backup's worker,
        when it was the backup that finished."""
        db = self._db
        job_id, *ended = db.execute(
            self._q(FINISH), (*finish_args(outcome, now), task_id, primary)
        ).fetchone()
        self._charge([tuple(ended)], now)  # the primary's time (the backup's is not charged)
        if winner is not None:
            db.execute(self._q("UPDATE tasks SET worker_id = ? WHERE id = ?"), (winner, task_id))
        self._drop_backup(task_id)
        self._event(job_id, task_id, outcome.status, outcome.exit_code, now)
        self._settle_dependents(task_id, outcome.status, now)

    def _promote(self, task_id: str, backup: Backup) -> None:
        """The backup becomes the task's only attempt (its primary failed, expired or was
        given back)."""
        lease_id, worker_id, expires, started = backup
        self._db.execute(self._q(_PROMOTE), (lease_id, worker_id, expires, started, task_id))
        self._drop_backup(task_id)

    def _drop_backup(self, task_id: str) -> None:
        self._db.execute(self._q("DELETE FROM backups WHERE task_id = ?"), (task_id,))

    def _release_backed(self, task_id: str, lease_id: str) -> bool | None:
        """A task given back while it has a backup: the backup's lease just drops it, the
        primary's promotes the backup; None when the task has no backup."""
        backup = self._backups_of([task_id]).get(task_id)
        if backup is None:
            return None
        if lease_id == backup[0]:
            self._drop_backup(task_id)
            return True
        row = self._db.execute(
            self._q("SELECT 1 FROM tasks WHERE id = ? AND lease_id = ? AND status = 'running'"),
            (task_id, lease_id),
        ).fetchone()
        if row is None:
            return False
        self._promote(task_id, backup)
        return True

    def _extend_backups(self, worker_id: str, lease_ids: Sequence[str], expires: float) -> set[str]:
        """Extend the worker's live backup leases among these; the ones extended."""
        rows = self._run_listed(
            "UPDATE backups SET lease_expires = ? WHERE worker_id = ? AND lease_id {ids}"
            " RETURNING lease_id",
            list(lease_ids),
            expires,
            worker_id,
        )
        return {r[0] for r in rows}

    def _expire_backups(self, now: float) -> list[Stopped]:
        """Drop the backups whose lease ran out (their primary carries on)."""
        rows = self._db.execute(
            self._q(
                "DELETE FROM backups WHERE lease_expires <= ? RETURNING task_id, worker_id,"
                " lease_id"
            ),
            (now,),
        ).fetchall()
        return [Stopped(*r) for r in rows]

    def _drop_backups(self, task_ids: Sequence[str]) -> list[Stopped]:
        """Drop these tasks' backups (the tasks were killed)."""
        rows = self._run_listed(
            "DELETE FROM backups WHERE task_id {ids} RETURNING task_id, worker_id, lease_id",
            list(task_ids),
        )
        return [Stopped(*r) for r in rows]

    def _drop_workers_backups(self, worker_ids: Sequence[str]) -> None:
        self._run_listed("DELETE FROM backups WHERE worker_id {ids}", list(worker_ids))

    def _grace_backups(self, until: float) -> None:
        self._db.execute(
            self._q("UPDATE backups SET lease_expires = {greatest}(lease_expires, ?)"), (until,)
        )

"""Dependencies and blocked tasks, for SQLStore (_sql.py); see coordinator/deps.py.

`deps` holds one row per (task, dependency); a task's `waiting` column counts dependencies
still to succeed, and leasing only takes tasks with `waiting = 0`. The methods starting with
`_` run inside a transaction the store has already opened (create_job, add_tasks, finish,
expire, kill), so a dependent is settled in the very transaction that finishes its dependency.
`blocked` marks a running task that waits on its children: its slots count as free.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..deps import DEPENDENCY_FAILED, hold
from ._sqlbase import SQLBase
from .base import NewTask

__all__ = ["DependencySQL"]

_FINAL = ("succeeded", "failed", "killed")
# The dependents still held, by id: ids listed explicitly, since a subquery here let SQLite
# walk every queued task instead of looking the few dependents up by primary key.
_HELD = " WHERE id {ids} AND status = 'queued' AND waiting > 0"
_COUNT_OFF = "UPDATE tasks SET waiting = waiting - 1" + _HELD
_FAIL_HELD = (
    "UPDATE tasks SET status = 'failed', error = ?, finished = ?, waiting = 0"
    + _HELD
    + " RETURNING id, job_id"
)


class DependencySQL(SQLBase):
    """A part of SQLStore."""

    def _dependents(self, task_id: str) -> list[str]:
        rows = self._db.execute(self._q("SELECT task_id FROM deps WHERE dep_id = ?"), (task_id,))
        return [r[0] for r in rows.fetchall()]

    def _hold_new(self, now: float, tasks: Sequence[NewTask]) -> None:
        """Record new tasks' dependencies: hold them, or fail them when one already failed."""
        held = [(t.id, list(dict.fromkeys(t.spec.after))) for t in tasks if t.spec.after]
        if not held:
            return
        self._many(
            "INSERT INTO deps (task_id, dep_id) VALUES (?,?) ON CONFLICT DO NOTHING",
            [(task_id, dep) for task_id, after in held for dep in after],
        )
        for task_id, after in held:
            rows = self._run_listed("SELECT status FROM tasks WHERE id {ids}", after)
            status, left = hold([r[0] for r in rows])
            if status == "failed":
                row = self._db.execute(
                    self._q(
                        "UPDATE tasks SET status = 'failed', error = ?, finished = ?"
                        " WHERE id = ? RETURNING job_id"
                    ),
                    (DEPENDENCY_FAILED, now, task_id),
                ).fetchone()
                self._event(row[0], task_id, "failed", None, now)
            elif left:
                self._db.execute(
                    self._q("UPDATE tasks SET waiting = ? WHERE id = ?"), (left, task_id)
                )

    def _settle_dependents(self, task_id: str, status: str, now: float) -> None:
        """A task reached `status`: count it off its dependents, or fail them (transitively)."""
        if status == "succeeded":
            ids = self._dependents(task_id)
            if ids:
                self._run_listed(_COUNT_OFF, ids)
            return
        if status not in ("failed", "killed"):
            return
        todo = [task_id]
        while todo:
            ids = self._dependents(todo.pop())
            rows = self._run_listed(_FAIL_HELD, ids, DEPENDENCY_FAILED, now)
            for dependent, job_id in sorted(rows):
                self._event(job_id, dependent, "failed", None, now)
                todo.append(dependent)

    def _settle_many(self, finished: Sequence[tuple[str, str]], now: float) -> None:
        """`_settle_dependents` for several (task, status) pairs, in order, looking up in one
        query which of them have dependents at all (most have none)."""
        final = [t for t, status in finished if status in _FINAL]
        rows = self._run_listed("SELECT DISTINCT dep_id FROM deps WHERE dep_id {ids}", final)
        depended = {r[0] for r in rows}
        for task_id, status in finished:
            if task_id in depended:
                self._settle_dependents(task_id, status, now)

    def dependencies_left(self, task_id: str) -> int:
        """How many of a queued task's dependencies have yet to succeed."""
        row = self._db.execute(
            self._q("SELECT waiting FROM tasks WHERE id = ? AND status = 'queued'"), (task_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def set_blocked(self, task_id: str, blocked: bool) -> str | None:
        """Mark a running task blocked on its children (or not); its worker, None if the task
        is not running."""
        row = self._db.execute(
            self._q(
                "UPDATE tasks SET blocked = ? WHERE id = ? AND status = 'running'"
                " RETURNING worker_id"
            ),
            (1 if blocked else 0, task_id),
        ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def blocked_tasks(self, worker_id: str) -> list[str]:
        """The worker's running tasks that are blocked on their children."""
        rows = self._db.execute(
            self._q(
                "SELECT id FROM tasks WHERE worker_id = ? AND status = 'running' AND blocked = 1"
                " ORDER BY id"
            ),
            (worker_id,),
        )
        return [r[0] for r in rows.fetchall()]

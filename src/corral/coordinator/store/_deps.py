"""Dependencies and blocked tasks, one SQL text for every backend (see coordinator/deps.py).

`deps` holds one row per (task, dependency); a task's `waiting` column counts dependencies
still to succeed, and leasing only takes tasks with `waiting = 0`. The methods starting with
`_` run inside a transaction the backend has already opened (create_job, add_tasks, finish,
expire, kill), so a dependent is settled in the very transaction that finishes its dependency.
`blocked` marks a running task that waits on its children: its slots count as free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..deps import DEPENDENCY_FAILED, hold
from .base import NewTask, in_list

__all__ = ["DependencySQL"]

_FINAL = ("succeeded", "failed", "killed")

_TABLE = (
    "CREATE TABLE IF NOT EXISTS deps (task_id TEXT NOT NULL, dep_id TEXT NOT NULL,"
    " PRIMARY KEY (task_id, dep_id))",
    "CREATE INDEX IF NOT EXISTS deps_dep ON deps(dep_id)",
)


class _Backend(Protocol):
    placeholder: str

    @property
    def _db(self) -> Any: ...

    def _event(
        self, job_id: str, task_id: str, status: str, code: int | None, now: float
    ) -> None: ...


def _dependents(backend: _Backend, task_id: str) -> list[str]:
    p = backend.placeholder
    rows = backend._db.execute(f"SELECT task_id FROM deps WHERE dep_id = {p}", (task_id,))
    return [r[0] for r in rows.fetchall()]


def _held(p: str, n: int) -> str:
    # ids listed explicitly: a subquery here let SQLite walk every queued task instead of
    # looking the few dependents up by primary key, on every finish
    return f"id IN ({','.join(p for _ in range(n))}) AND status = 'queued' AND waiting > 0"


class DependencySQL:
    """Mixed into a backend that has `_db.execute`, `_event` and a `placeholder`."""

    placeholder = "?"

    def _create_deps(self: _Backend) -> None:
        for statement in _TABLE:
            self._db.execute(statement)

    def _hold_new(self: _Backend, now: float, tasks: Sequence[NewTask]) -> None:
        """Record new tasks' dependencies: hold them, or fail them when one already failed."""
        p = self.placeholder
        for t in tasks:
            if not t.spec.after:
                continue
            after = list(dict.fromkeys(t.spec.after))
            self._db.execute(
                "INSERT INTO deps (task_id, dep_id) VALUES "
                + ",".join(f"({p},{p})" for _ in after)
                + " ON CONFLICT DO NOTHING",
                [v for dep in after for v in (t.id, dep)],
            )
            marks = ",".join(p for _ in after)
            rows = self._db.execute(f"SELECT status FROM tasks WHERE id IN ({marks})", after)
            status, left = hold([r[0] for r in rows.fetchall()])
            if status == "failed":
                row = self._db.execute(
                    f"UPDATE tasks SET status = 'failed', error = {p}, finished = {p}"
                    f" WHERE id = {p} RETURNING job_id",
                    (DEPENDENCY_FAILED, now, t.id),
                ).fetchone()
                self._event(row[0], t.id, "failed", None, now)
            elif left:
                self._db.execute(f"UPDATE tasks SET waiting = {p} WHERE id = {p}", (left, t.id))

    def _settle_dependents(self: _Backend, task_id: str, status: str, now: float) -> None:
        """A task reached `status`: count it off its dependents, or fail them (transitively)."""
        if status == "succeeded":
            ids = _dependents(self, task_id)
            if ids:
                held = _held(self.placeholder, len(ids))
                self._db.execute(f"UPDATE tasks SET waiting = waiting - 1 WHERE {held}", ids)
            return
        if status not in ("failed", "killed"):
            return
        p = self.placeholder
        todo = [task_id]
        while todo:
            ids = _dependents(self, todo.pop())
            if not ids:
                continue
            rows = self._db.execute(
                f"UPDATE tasks SET status = 'failed', error = {p}, finished = {p}, waiting = 0"
                f" WHERE {_held(p, len(ids))} RETURNING id, job_id",
                (DEPENDENCY_FAILED, now, *ids),
            ).fetchall()
            for dependent, job_id in sorted(rows):
                self._event(job_id, dependent, "failed", None, now)
                todo.append(dependent)

    def _settle_many(self: _Backend, finished: Sequence[tuple[str, str]], now: float) -> None:
        """`_settle_dependents` for several (task, status) pairs, in order, looking up in one
        query which of them have dependents at all (most have none)."""
        final = [t for t, status in finished if status in _FINAL]
        if not final:
            return
        where, args = in_list(self.placeholder, final)
        rows = self._db.execute(f"SELECT DISTINCT dep_id FROM deps WHERE dep_id {where}", args)
        depended = {r[0] for r in rows.fetchall()}
        for task_id, status in finished:
            if task_id in depended:
                DependencySQL._settle_dependents(self, task_id, status, now)

    def dependencies_left(self: _Backend, task_id: str) -> int:
        """How many of a queued task's dependencies have yet to succeed."""
        p = self.placeholder
        row = self._db.execute(
            f"SELECT waiting FROM tasks WHERE id = {p} AND status = 'queued'", (task_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    def set_blocked(self: _Backend, task_id: str, blocked: bool) -> str | None:
        """Mark a running task blocked on its children (or not); its worker, None if the task
        is not running."""
        p = self.placeholder
        row = self._db.execute(
            f"UPDATE tasks SET blocked = {p} WHERE id = {p} AND status = 'running'"
            " RETURNING worker_id",
            (1 if blocked else 0, task_id),
        ).fetchone()
        return str(row[0]) if row and row[0] is not None else None

    def blocked_tasks(self: _Backend, worker_id: str) -> list[str]:
        """The worker's running tasks that are blocked on their children."""
        p = self.placeholder
        rows = self._db.execute(
            f"SELECT id FROM tasks WHERE worker_id = {p} AND status = 'running' AND blocked = 1"
            " ORDER BY id",
            (worker_id,),
        )
        return [r[0] for r in rows.fetchall()]

"""Short ids: the jobs and tasks whose id starts with a prefix, for SQLStore (_sql.py).

Ids are lowercase hex, so "starts with P" is the range P <= id < P + "g": one primary-key
range scan on both backends, where LIKE 'P%' would read every row on SQLite (its LIKE ignores
case and so skips the index) and depends on the collation on PostgreSQL.
"""

from __future__ import annotations

from ...protocol import IdMatch
from ._sqlbase import SQLBase

__all__ = ["LookupSQL"]

_JOBS = "SELECT 'job', j.id, j.id, j.name FROM jobs j WHERE j.id >= ? AND j.id < ?"
_TASKS = (
    "SELECT 'task', t.id, t.job_id, t.name FROM tasks t JOIN jobs j ON j.id = t.job_id"
    " WHERE t.id >= ? AND t.id < ?"
)
# a task by its name within the jobs the prefix matches
_NAMED = (
    "SELECT 'task', t.id, t.job_id, t.name FROM tasks t JOIN jobs j ON j.id = t.job_id"
    " WHERE j.id >= ? AND j.id < ? AND t.name = ?"
)
_OWNED = " AND j.owner = ?"


class LookupSQL(SQLBase):
    """A part of SQLStore."""

    def find_ids(
        self, prefix: str, name: str | None, owner: str | None, limit: int
    ) -> list[IdMatch]:
        """Up to `limit` jobs and `limit` tasks whose id starts with `prefix` (lowercase hex);
        with `name`, the tasks of that name in the jobs it starts; `owner`: only their jobs."""
        bounds: tuple[str, ...] = (prefix, prefix + "g")
        queries = (
            [(_NAMED, (*bounds, name))] if name is not None else [(_JOBS, bounds), (_TASKS, bounds)]
        )
        out: list[IdMatch] = []
        for sql, args in queries:
            if owner is not None:
                sql, args = sql + _OWNED, (*args, owner)
            rows = self._db.execute(self._q(sql + " ORDER BY 2 LIMIT ?"), (*args, limit))
            out += [IdMatch(*row) for row in rows.fetchall()]
        return out

"""SQLBase: a connection, its dialect, and query templates rendered for it once.

A template is SQL with `?` for a parameter and `{word}` for what the dialect (dialect.py) or
the column lists fill in; `{ids}` stands for a list and `{rows}` for a batch, whose texts also
depend on their size. `_q` renders a template the first time it runs and keeps the text, so a
call only looks it up and the database sees one text per query (and per list or batch size on
SQLite), which keeps its prepared-statement cache hitting. SQLStore (_sql.py) and the parts
it is made of (_allowlist.py, _deps.py, _identity.py) write their queries this way.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar

from ._rows import AUDIT_COLUMNS, JOB_COLUMNS, TASK_COLUMNS, TOKEN_COLUMNS, WORKER_COLUMNS
from ._schema import ADDED_COLUMNS, INDEXES, SCHEMA_VERSION, TABLES, VERSION_TABLE
from .base import SchemaTooNew
from .dialect import Dialect

__all__ = ["SQLBase"]

# One worker row with the slots its running tasks take (backup attempts included), in one
# statement.
_WORKER_SELECT = (
    "SELECT "
    + ", ".join(f"w.{c}" for c in WORKER_COLUMNS.split(", "))
    + ", (SELECT COALESCE(SUM(t.cost * (1 - t.blocked)), 0) FROM tasks t"
    " WHERE t.worker_id = w.id AND t.status = 'running')"
    " + (SELECT COALESCE(SUM(t.cost), 0) FROM backups b JOIN tasks t ON t.id = b.task_id"
    " WHERE b.worker_id = w.id) FROM workers w"
)
# Recording an attempt's outcome, fenced by the live lease: finish_args, task id, lease id.
FINISH = (
    "UPDATE tasks SET status = ?, exit_code = ?, error = ?, stdout = ?, stderr = ?,"
    " manifest = ?, finished = ?, not_before = ?, peak_memory = ?, cpu_seconds = ?,"
    " lease_id = NULL, lease_expires = NULL,"
    " worker_id = CASE WHEN ? = 'queued' THEN NULL ELSE worker_id END"
    " WHERE id = ? AND lease_id = ? AND status = 'running' RETURNING job_id, owner, cost, started"
)
EVENT = "INSERT INTO events (job_id, task_id, status, exit_code, time) VALUES (?,?,?,?,?)"


class _Words(dict[str, str]):
    """Words for str.format_map that leave `{ids}` and `{rows}` to be filled per size."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class SQLBase(abc.ABC):
    """A connection and its dialect: what every part of SQLStore runs its queries with."""

    dialect: ClassVar[Dialect]

    def __init__(self) -> None:
        words = self.dialect.words
        self._words = _Words(
            words,
            task_columns=TASK_COLUMNS.replace(" spec,", f" {words['spec']},"),
            job_columns=JOB_COLUMNS,
            token_columns=TOKEN_COLUMNS,
            audit_columns=AUDIT_COLUMNS,
            worker_select=_WORKER_SELECT,
        )
        self._texts: dict[str, str] = {}
        self._sized: dict[tuple[str, int], str] = {}
        self._flat = False  # inside `group`: a method's transaction is the group's, as it is

    @property
    @abc.abstractmethod
    def _db(self) -> Any:
        """The connection (sqlite3's or psycopg's: the calls used here are the same)."""

    @abc.abstractmethod
    def _begin(self) -> AbstractContextManager[Any]:
        """One transaction; inside another (`atomic`), a savepoint."""

    def _tx(self) -> AbstractContextManager[Any]:
        """What each method runs in: its own transaction or savepoint (`_begin`), or inside
        a `group`, nothing more than the group's transaction."""
        return contextlib.nullcontext() if self._flat else self._begin()

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Store.group: one transaction, no savepoints inside it."""
        if self._flat:  # already in one: part of it
            yield
            return
        with self._begin():
            self._flat = True
            try:
                yield
            finally:
                self._flat = False

    def _q(self, template: str) -> str:
        """A template's text in this dialect, rendered once."""
        text = self._texts.get(template)
        if text is None:
            text = template.format_map(self._words).replace("?", self.dialect.placeholder)
            self._texts[template] = text
        return text

    def _listed(self, template: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """A template's text with its `{ids}` standing for these values, and their parameters."""
        dialect = self.dialect
        size = dialect.list_size(len(values))
        text = self._sized.get((template, size))
        if text is None:
            text = self._q(template).replace("{ids}", dialect.list_text(size))
            self._sized[template, size] = text
        return text, dialect.list_args(values, size)

    def _run_listed(self, template: str, values: Sequence[Any], *before: Any) -> list[Any]:
        """Run a listed statement over the values, a chunk at a time (parameters `before` come
        ahead of the list's); the rows it returns, if any."""
        out: list[Any] = []
        chunk = self.dialect.chunk
        for i in range(0, len(values), chunk):
            sql, args = self._listed(template, values[i : i + chunk])
            cur = self._db.execute(sql, (*before, *args))
            if cur.description is not None:
                out += cur.fetchall()
        return out

    def _batch(
        self, template: str, types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> tuple[str, list[Any]]:
        """A template's text with its `{rows}` standing for these rows, and their parameters."""
        dialect = self.dialect
        size = dialect.rows_size(len(rows))
        text = self._sized.get((template, size))
        if text is None:
            text = self._q(template).replace("{rows}", dialect.rows_text(types, size))
            self._sized[template, size] = text
        return text, dialect.rows_args(rows)

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cur = self._db.cursor()
        try:
            cur.executemany(self._q(sql), rows)
        finally:
            cur.close()

    def _create_schema(self) -> None:
        """Create what the database lacks and record the version (the backend holds it in a
        transaction); SchemaTooNew for a database a newer coordinator has migrated."""
        render, db = self._words, self._db
        db.execute(VERSION_TABLE)
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = row[0] if row and row[0] is not None else None
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the database's schema is version {found}, newer than this coordinator's"
                f" {SCHEMA_VERSION}: upgrade corral"
            )
        for statement in TABLES:
            db.execute(statement.format_map(render))
        for table, added in ADDED_COLUMNS.items():
            have = {r[0] for r in db.execute(self._q("{column_names}"), (table,)).fetchall()}
            for name, kind in added:
                if name not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind.format_map(render)}")
        for statement in INDEXES:
            db.execute(statement)
        if found != SCHEMA_VERSION:
            db.execute("DELETE FROM schema_version")
            db.execute(
                self._q("INSERT INTO schema_version (version) VALUES (?)"), (SCHEMA_VERSION,)
            )

    def _event(self, job_id: str, task_id: str, status: str, code: int | None, now: float) -> None:
        self._db.execute(self._q(EVENT), (job_id, task_id, status, code, now))

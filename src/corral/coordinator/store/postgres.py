"""PostgreSQL backend: one autocommit connection, explicit transactions, same rows as SQLite.

The queries are SQLStore's (_sql.py); this file opens the connection (and its schema), runs
transactions, and reconnects after losing the connection. Leasing locks the queued rows it
takes with FOR UPDATE SKIP LOCKED, so several coordinators sharing one database never hand out
the same task twice. (Event sequence numbers come from a BIGSERIAL; with more than one writer a
reader can briefly see a later seq before an earlier one commits. One coordinator, one
connection, as service.py runs it, never interleaves.)
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ._sql import SQLStore
from .dialect import POSTGRES

if TYPE_CHECKING:
    import psycopg

# Serialises schema creation when several coordinators start at once on an empty database.
_SCHEMA_LOCK = 0x636F7272616C  # "corral"


class PostgresStore(SQLStore):
    """Durable state in a PostgreSQL database, optionally in its own schema."""

    dialect = POSTGRES

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        try:
            import psycopg  # noqa: F401  (fail here, with the hint, not at first use)
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the PostgreSQL store needs psycopg 3: pip install 'corral[postgres]'"
            ) from e
        super().__init__()
        self._dsn = dsn
        self._schema = schema
        self._conn = self._connect()
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            self._create_schema()

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg
        from psycopg import sql

        conn = psycopg.connect(self._dsn, autocommit=True)
        if self._schema is not None:
            name = sql.Identifier(self._schema)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                found = conn.execute(
                    "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self._schema,)
                ).fetchone()
                if found is None:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(name))
            conn.execute(sql.SQL("SET search_path TO {}").format(name))
        return conn

    @property
    def _db(self) -> psycopg.Connection[tuple[Any, ...]]:
        # A dropped connection (database restart, network cut) fails the call it broke; the
        # next call reconnects rather than failing forever.
        if self._conn.broken:
            self._conn.close()
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def _tx(self) -> AbstractContextManager[Any]:
        # inside another (atomic), psycopg makes it a savepoint
        return self._db.transaction()

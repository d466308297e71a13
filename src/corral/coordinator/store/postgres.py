"""PostgreSQL backend: one autocommit connection, explicit transactions, same rows as SQLite.

The queries are SQLStore's (_sql.py); this file opens the connection (and its schema), runs
transactions, reconnects after losing the connection, and carries wake-ups between
coordinators (NOTIFY on the store's connection, LISTEN on a connection of its own).

Several coordinators may share one database. Leasing and expiry lock the rows they take with
FOR UPDATE SKIP LOCKED, so two coordinators never hand out or requeue the same task. Every
write transaction also takes one advisory lock (`_WRITE_LOCK`) first, held to its commit:
event sequence numbers come from a BIGSERIAL, and without it a transaction could commit seq
11 while another still held 10 uncommitted, so a client reading "events after 10" from one
coordinator would skip 10 for good. With it, seqs commit in order. Rejected: filtering
readers by the oldest open transaction (pg_snapshot_xmin), which needs a transaction id on
every event and still let a later-committing lower seq slip past; and taking the lock only
at the event insert, after the transaction's row locks, which can deadlock with a
transaction holding the lock and waiting on those rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ._sql import SQLStore
from .dialect import POSTGRES

if TYPE_CHECKING:
    import psycopg

# Serialises schema creation when several coordinators start at once on an empty database.
_SCHEMA_LOCK = 0x636F7272616C  # "corral"
# Held by every write transaction from its start to its commit (see the module docstring).
_WRITE_LOCK = 0x636F7272616D
_RELISTEN_S = 1.0  # after losing the listening connection


class PostgresStore(SQLStore):
    """Durable state in a PostgreSQL database, optionally in its own schema."""

    dialect = POSTGRES

    def __init__(self, dsn: str, schema: str | None = None) -> None:
        try:
            import psycopg  # (fail here, with the hint, not at first use)
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "the PostgreSQL store needs psycopg 3: pip install 'corral[postgres]'"
            ) from e
        super().__init__()
        self.errors = (psycopg.Error,)
        self._dsn = dsn
        self._schema = schema
        # NOTIFY reaches every session of the database: the schema keeps farms apart, the
        # sender's id lets a coordinator skip its own
        self._channel = f"corral_{schema}" if schema else "corral"
        self._sender = uuid.uuid4().hex[:12]
        # lead(): a session per name, and the names whose lock it holds
        self._leads: dict[str, psycopg.Connection[tuple[Any, ...]]] = {}
        self._held: set[str] = set()
        self._conn = self._connect()
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self._create_schema()
        except BaseException:  # a refused schema (SchemaTooNew) leaves no connection open
            self._conn.close()
            raise

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
        for conn in self._leads.values():
            conn.close()
        self._conn.close()

    @contextlib.contextmanager
    def _begin(self) -> Iterator[None]:
        from psycopg import pq

        db = self._db
        outermost = db.info.transaction_status == pq.TransactionStatus.IDLE
        # inside another (atomic), psycopg makes it a savepoint
        with db.transaction():
            if outermost:
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            yield

    # wake-ups between coordinators
    @property
    def shared(self) -> bool:
        return True

    def notify(self, kinds: str) -> None:
        # inside a transaction, PostgreSQL delivers it at the commit, with what it announces
        self._db.execute("SELECT pg_notify(%s, %s)", (self._channel, f"{self._sender} {kinds}"))

    def lead(self, name: str) -> bool:
        import psycopg

        conn = self._leads.get(name)
        try:
            if conn is None or conn.broken:
                if conn is not None:
                    conn.close()
                self._held.discard(name)  # the lock went with the session
                conn = self._leads[name] = psycopg.connect(self._dsn, autocommit=True)
            if name in self._held:
                conn.execute("SELECT 1")  # the session, and so the lock, still there
                return True
            key = f"{self._channel} {name}"  # one lead per farm (schema) of the database
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()
        except psycopg.Error:
            self._held.discard(name)
            return False  # no database: nobody leads from here until it is back
        if row is not None and row[0]:
            self._held.add(name)
        return name in self._held

    async def listen(self, heard: Callable[[str], None]) -> None:
        import psycopg
        from psycopg import sql

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    async for note in conn.notifies():
                        sender, _, kinds = note.payload.partition(" ")
                        if sender != self._sender:
                            heard(kinds)
            except psycopg.Error:
                await asyncio.sleep(_RELISTEN_S)  # the periodic re-check covers the gap

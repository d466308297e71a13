"""SQLite backend: one connection in WAL mode, used from the coordinator's event loop only.

The queries are SQLStore's (_sql.py); this file opens the connection, runs transactions, keeps
long specs out of the task rows, and checkpoints the WAL on a thread of its own.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

from ._rows import encode
from ._sql import SQLStore
from .base import NewTask
from .dialect import SQLITE

# A spec longer than this lives in task_specs, its tasks row keeping an empty one (the dialect's
# `{spec}` reads it from wherever it is): every state change rewrites the whole row, and rows
# of a few kB (env, inputs) left one or two to a page, so each change also moved cells between
# pages.
INLINE_SPEC = 256
_SPECS_TABLE = "CREATE TABLE IF NOT EXISTS task_specs (id TEXT PRIMARY KEY, spec BLOB NOT NULL)"


class SQLiteStore(SQLStore):
    """Durable state in one SQLite file."""

    dialect = SQLITE
    errors = (sqlite3.Error,)

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._depth = 0  # transactions open (atomic, then each method's own)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        # the hot pages (queue index, running tasks, workers) stay in memory: 64 MB at most
        self._conn.execute("PRAGMA cache_size=-65536")
        self._conn.execute("PRAGMA temp_store=MEMORY")
        # fair share decays usage with power() (_fairshare.py): an SQLite built without its
        # math functions gets Python's
        try:
            self._conn.execute("SELECT power(0.5, 1)")
        except sqlite3.OperationalError:
            self._conn.create_function("power", 2, math.pow, deterministic=True)
        # Checkpoints (which fsync twice under synchronous=NORMAL) run on a thread of their own
        # instead of inside whichever commit crossed the threshold, on the event loop; the
        # loop's own autocheckpoint stays as a backstop, at 16 MB of WAL.
        self._conn.execute("PRAGMA wal_autocheckpoint=4096")
        self._checkpoints = _Checkpointer(self, str(path)) if str(path) != ":memory:" else None
        with self._tx():
            self._create_schema()
            self._conn.execute(_SPECS_TABLE)

    @property
    def _db(self) -> sqlite3.Connection:
        return self._conn

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
        self._conn.close()

    def _begin(self) -> _Transaction:
        return _Transaction(self)

    def _specs(self, tasks: Sequence[NewTask]) -> list[bytes]:
        specs, apart = [], []
        for t in tasks:
            spec = encode(t.spec)
            if len(spec) > INLINE_SPEC:
                apart.append((t.id, spec))
                spec = b""
            specs.append(spec)
        if apart:
            self._conn.executemany("INSERT INTO task_specs (id, spec) VALUES (?,?)", apart)
        return specs


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error; inside another one (`atomic`), a
    savepoint, so a method that fails still undoes exactly its own changes."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        store = self._store
        store._conn.execute("SAVEPOINT corral" if store._depth else "BEGIN IMMEDIATE")
        store._depth += 1

    def __exit__(self, exc_type: object, *_: object) -> None:
        store = self._store
        store._depth -= 1
        if store._depth == 0:
            try:
                store._conn.execute("ROLLBACK" if exc_type else "COMMIT")
            except sqlite3.Error:
                if store._conn.in_transaction:  # a failed COMMIT leaves it open: end it
                    store._conn.execute("ROLLBACK")
                raise
            return
        if exc_type:
            store._conn.execute("ROLLBACK TO corral")
        store._conn.execute("RELEASE corral")


class _Checkpointer:
    """Copies the WAL into the database file every `interval` seconds from its own thread and
    connection (PASSIVE: it never blocks the writer). A commit is durable once it is in the
    WAL; a checkpoint only moves it, so doing it here changes no guarantee."""

    def __init__(self, owner: SQLiteStore, path: str, interval: float = 0.2) -> None:
        self._owner = weakref.ref(owner)  # a store dropped without close() stops it too
        self._path = path
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return
        try:
            while not self._stopping.wait(self._interval) and self._owner() is not None:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # the file went away under us; the writer's autocheckpoint carries on
        finally:
            db.close()

    def stop(self) -> None:
        """Stop the thread (it finishes a checkpoint in progress first)."""
        self._stopping.set()
        self._thread.join()

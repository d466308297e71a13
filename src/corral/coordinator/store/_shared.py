"""Secrets and blobs in the database, for SQLStore (_sql.py): the SharedState queries.

Blobs go in 1 MiB rows of blob_chunks, then one row of blobs, in one transaction: a reader
that finds the blobs row finds every chunk. Rejected: PostgreSQL large objects (lo_*), which
SQLite has no counterpart of, so the two backends would need two copies of this file; and
one bytea per blob, which PostgreSQL caps at 1 GB and reads whole into memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ._sqlbase import SQLBase
from .shared import SharedState

__all__ = ["SharedSQL"]

_INSERT_SHARED = "INSERT INTO shared (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
_CHUNK_ROW = "INSERT INTO blob_chunks (sha256, n, data) VALUES (?, ?, ?)"


class SharedSQL(SQLBase, SharedState):
    """A part of SQLStore."""

    def shared_value(self, name: str, make: Callable[[], bytes]) -> bytes:
        sql = self._q("SELECT value FROM shared WHERE name = ?")
        row = self._db.execute(sql, (name,)).fetchone()
        if row is None:
            self._db.execute(self._q(_INSERT_SHARED), (name, make()))
            row = self._db.execute(sql, (name,)).fetchone()
        return bytes(row[0])

    def blobs_missing(self, hashes: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(hashes))
        found = self._run_listed("SELECT sha256 FROM blobs WHERE sha256 {ids}", wanted)
        return set(wanted).difference(r[0] for r in found)

    def blob_put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        with self._tx():
            # two coordinators storing the same upload: the second finds the first's row
            if self.blobs_missing([sha256]):
                for n, data in enumerate(chunks):
                    self._db.execute(self._q(_CHUNK_ROW), (sha256, n, data))
                self._db.execute(
                    self._q("INSERT INTO blobs (sha256, size) VALUES (?, ?)"), (sha256, size)
                )

    def blob_chunks(self, sha256: str) -> Iterator[bytes] | None:
        if self.blobs_missing([sha256]):
            return None
        return self._read_chunks(sha256)

    def _read_chunks(self, sha256: str) -> Iterator[bytes]:
        # one chunk a statement: a large blob is never in memory whole
        sql = self._q("SELECT data FROM blob_chunks WHERE sha256 = ? AND n = ?")
        n = 0
        while (row := self._db.execute(sql, (sha256, n)).fetchone()) is not None:
            yield bytes(row[0])
            n += 1

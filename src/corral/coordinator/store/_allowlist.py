"""The coordinator-wide executable allowlist, one SQL text for every backend.

Each statement is a single autocommitted statement, so the backends share it as is; only the
parameter placeholder (`?` or `%s`) and the float column type differ.
"""

from __future__ import annotations

from typing import Any, Protocol

from ...protocol import AllowEntry

__all__ = ["AllowlistSQL"]

_TABLE = (
    "CREATE TABLE IF NOT EXISTS allowlist (sha256 TEXT PRIMARY KEY, note TEXT NOT NULL,"
    " added {real} NOT NULL, added_by TEXT NOT NULL)"
)


class _Backend(Protocol):
    placeholder: str

    @property
    def _db(self) -> Any: ...


class AllowlistSQL:
    """Mixed into a backend that has `_db.execute` and a `placeholder`."""

    placeholder = "?"

    def _create_allowlist(self: _Backend, real: str) -> None:
        self._db.execute(_TABLE.format(real=real))

    def allow_add(self: _Backend, entry: AllowEntry) -> bool:
        """Add a hash; False when it was already there (the first note stays)."""
        p = self.placeholder
        cur = self._db.execute(
            f"INSERT INTO allowlist (sha256, note, added, added_by) VALUES ({p},{p},{p},{p})"
            " ON CONFLICT (sha256) DO NOTHING",
            (entry.sha256, entry.note, entry.added, entry.added_by),
        )
        return bool(cur.rowcount == 1)

    def allow_list(self: _Backend) -> list[AllowEntry]:
        """Every allowed hash, oldest first."""
        rows = self._db.execute(
            "SELECT sha256, note, added, added_by FROM allowlist ORDER BY added, sha256"
        )
        return [AllowEntry(*row) for row in rows.fetchall()]

    def allow_remove(self: _Backend, sha256: str) -> bool:
        """Remove a hash; False when it was not there."""
        cur = self._db.execute(
            f"DELETE FROM allowlist WHERE sha256 = {self.placeholder}", (sha256,)
        )
        return bool(cur.rowcount == 1)

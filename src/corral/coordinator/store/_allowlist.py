"""The coordinator-wide executable allowlist, for SQLStore (_sql.py).

Each method is a single autocommitted statement; the templates' `?` are rendered for the
backend's dialect.
"""

from __future__ import annotations

from ...protocol import AllowEntry
from ._sqlbase import SQLBase

__all__ = ["AllowlistSQL"]


class AllowlistSQL(SQLBase):
    """A part of SQLStore."""

    def allow_add(self, entry: AllowEntry) -> bool:
        """Add a hash; False when it was already there (the first note stays)."""
        cur = self._db.execute(
            self._q(
                "INSERT INTO allowlist (sha256, note, added, added_by) VALUES (?,?,?,?)"
                " ON CONFLICT (sha256) DO NOTHING"
            ),
            (entry.sha256, entry.note, entry.added, entry.added_by),
        )
        return bool(cur.rowcount == 1)

    def allow_list(self) -> list[AllowEntry]:
        """Every allowed hash, oldest first."""
        rows = self._db.execute(
            "SELECT sha256, note, added, added_by FROM allowlist ORDER BY added, sha256"
        )
        return [AllowEntry(*row) for row in rows.fetchall()]

    def allow_remove(self, sha256: str) -> bool:
        """Remove a hash; False when it was not there."""
        cur = self._db.execute(self._q("DELETE FROM allowlist WHERE sha256 = ?"), (sha256,))
        return bool(cur.rowcount == 1)

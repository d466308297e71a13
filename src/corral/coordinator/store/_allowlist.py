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
        """Add a hash, or set whether it allows inline code; False when nothing changed (the
        first note stays)."""
        cur = self._db.execute(
            self._q(
                "INSERT INTO allowlist (sha256, note, added, added_by, allow_inline)"
                " VALUES (?,?,?,?,?) ON CONFLICT (sha256) DO UPDATE"
                " SET allow_inline = excluded.allow_inline"
                " WHERE allowlist.allow_inline <> excluded.allow_inline"
            ),
            (entry.sha256, entry.note, entry.added, entry.added_by, int(entry.allow_inline)),
        )
        return bool(cur.rowcount == 1)

    def allow_list(self) -> list[AllowEntry]:
        """Every allowed hash, oldest first."""
        rows = self._db.execute(
            "SELECT sha256, note, added, added_by, allow_inline FROM allowlist"
            " ORDER BY added, sha256"
        )
        return [AllowEntry(s, n, a, b, bool(inline)) for s, n, a, b, inline in rows.fetchall()]

    def allow_remove(self, sha256: str) -> bool:
        """Remove a hash; False when it was not there."""
        cur = self._db.execute(self._q("DELETE FROM allowlist WHERE sha256 = ?"), (sha256,))
        return bool(cur.rowcount == 1)

"""Tokens, worker and blob ownership, and the audit trail, for SQLStore (_sql.py).

Each method is a single statement (or one statement per chunk of a list); the templates' `?`
and `{words}` are rendered for the backend's dialect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple

from ...protocol import AuditEntry
from ._rows import audit_from_row, token_from_row
from ._sqlbase import SQLBase
from .base import NotFound, TokenRecord

__all__ = ["IdentitySQL"]


class IdentitySQL(SQLBase):
    """A part of SQLStore."""

    def add_token(self, token: TokenRecord) -> None:
        """Insert a token."""
        self._db.execute(
            self._q("INSERT INTO tokens ({token_columns}) VALUES (?,?,?,?,?,?,?,?,?)"),
            astuple(token),
        )

    def token_by_hash(self, secret_sha256: str) -> TokenRecord | None:
        """The token whose secret hashes to this (one unique-index lookup, every request)."""
        row = self._db.execute(
            self._q("SELECT {token_columns} FROM tokens WHERE secret_sha256 = ?"),
            (secret_sha256,),
        ).fetchone()
        return token_from_row(row) if row else None

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first (ids in byte order on a tie, as SQLite compares)."""
        rows = self._db.execute(
            self._q("SELECT {token_columns} FROM tokens ORDER BY created, {by_id}")
        )
        return [token_from_row(r) for r in rows.fetchall()]

    def revoke_token(self, token_id: str, now: float) -> TokenRecord:
        """Revoke a token once (later calls keep the first time); raises NotFound."""
        row = self._db.execute(
            self._q(
                "UPDATE tokens SET revoked = COALESCE(revoked, ?) WHERE id = ?"
                " RETURNING {token_columns}"
            ),
            (now, token_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no token {token_id}")
        return token_from_row(row)

    def set_token_expiry(self, token_id: str, expires: float | None) -> None:
        """Change when a token expires (None: never); raises NotFound."""
        sql = self._q("UPDATE tokens SET expires = ? WHERE id = ?")
        if self._db.execute(sql, (expires, token_id)).rowcount == 0:
            raise NotFound(f"no token {token_id}")

    def set_worker_owner(self, worker_id: str, owner: str) -> None:
        """Record which identity registered a worker."""
        self._db.execute(
            self._q(
                "INSERT INTO worker_owners (worker_id, owner) VALUES (?,?)"
                " ON CONFLICT (worker_id) DO UPDATE SET owner = excluded.owner"
            ),
            (worker_id, owner),
        )

    def worker_owner(self, worker_id: str) -> str | None:
        """The identity that registered a worker, if known."""
        row = self._db.execute(
            self._q("SELECT owner FROM worker_owners WHERE worker_id = ?"), (worker_id,)
        ).fetchone()
        return str(row[0]) if row else None

    def registered_by(self, worker_id: str) -> str | None:
        row = self._db.execute(
            self._q(
                "SELECT o.owner FROM workers w LEFT JOIN worker_owners o ON o.worker_id = w.id"
                " WHERE w.id = ?"
            ),
            (worker_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no worker {worker_id}")
        return None if row[0] is None else str(row[0])

    def grant_blobs(self, owner: str, hashes: Iterable[str]) -> None:
        """Let `owner` read these blobs; nothing to write, no statement."""
        rows = [(owner, h) for h in sorted(set(hashes))]
        if rows:
            self._many(
                "INSERT INTO blob_owners (owner, sha256) VALUES (?,?) ON CONFLICT DO NOTHING", rows
            )

    def owned_blobs(self, owner: str, hashes: Sequence[str]) -> set[str]:
        """Which of these blobs `owner` may read."""
        rows = self._run_listed(
            "SELECT sha256 FROM blob_owners WHERE owner = ? AND sha256 {ids}",
            list(dict.fromkeys(hashes)),
            owner,
        )
        return {r[0] for r in rows}

    def add_audit(
        self, now: float, actor: str, token_id: str, action: str, target: str, detail: str
    ) -> None:
        """Append one audit entry."""
        self._db.execute(
            self._q(
                "INSERT INTO audit (time, actor, token_id, action, target, detail)"
                " VALUES (?,?,?,?,?,?)"
            ),
            (now, actor, token_id, action, target, detail),
        )

    def audit(self, after: int, limit: int) -> list[AuditEntry]:
        """Audit entries after sequence number `after`, oldest first."""
        rows = self._db.execute(
            self._q("SELECT {audit_columns} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?"),
            (after, limit),
        )
        return [audit_from_row(r) for r in rows.fetchall()]

"""Tokens, worker and blob ownership, and the audit trail: one SQL text for every backend.

Each method is a single statement (or one statement per chunk), so the backends share them as
they are; only the parameter placeholder (`?` or `%s`) differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple
from typing import Any, Protocol

from ...protocol import AuditEntry
from .base import (
    AUDIT_COLUMNS,
    TOKEN_COLUMNS,
    NotFound,
    TokenRecord,
    audit_from_row,
    in_list,
    token_from_row,
)

__all__ = ["IdentitySQL"]

_CHUNK = 512


class _Backend(Protocol):
    placeholder: str

    @property
    def _db(self) -> Any: ...


class IdentitySQL:
    """Mixed into a backend that has `_db.execute`, `_db.cursor` and a `placeholder`."""

    placeholder = "?"

    def add_token(self: _Backend, token: TokenRecord) -> None:
        """Insert a token."""
        marks = ",".join(self.placeholder for _ in range(9))
        self._db.execute(f"INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ({marks})", astuple(token))

    def token_by_hash(self: _Backend, secret_sha256: str) -> TokenRecord | None:
        """The token whose secret hashes to this (one unique-index lookup, every request)."""
        row = self._db.execute(
            f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_sha256 = {self.placeholder}",
            (secret_sha256,),
        ).fetchone()
        return token_from_row(row) if row else None

    def list_tokens(self: _Backend) -> list[TokenRecord]:
        """Every token, oldest first (ids in byte order on a tie, as SQLite compares)."""
        order = 'id COLLATE "C"' if self.placeholder == "%s" else "id"
        rows = self._db.execute(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created, {order}")
        return [token_from_row(r) for r in rows.fetchall()]

    def revoke_token(self: _Backend, token_id: str, now: float) -> TokenRecord:
        """Revoke a token once (later calls keep the first time); raises NotFound."""
        p = self.placeholder
        row = self._db.execute(
            f"UPDATE tokens SET revoked = COALESCE(revoked, {p}) WHERE id = {p}"
            f" RETURNING {TOKEN_COLUMNS}",
            (now, token_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"no token {token_id}")
        return token_from_row(row)

    def set_worker_owner(self: _Backend, worker_id: str, owner: str) -> None:
        """Record which identity registered a worker."""
        p = self.placeholder
        self._db.execute(
            f"INSERT INTO worker_owners (worker_id, owner) VALUES ({p},{p})"
            " ON CONFLICT (worker_id) DO UPDATE SET owner = excluded.owner",
            (worker_id, owner),
        )

    def worker_owner(self: _Backend, worker_id: str) -> str | None:
        """The identity that registered a worker, if known."""
        row = self._db.execute(
            f"SELECT owner FROM worker_owners WHERE worker_id = {self.placeholder}", (worker_id,)
        ).fetchone()
        return str(row[0]) if row else None

    def grant_blobs(self: _Backend, owner: str, hashes: Iterable[str]) -> None:
        """Let `owner` read these blobs; nothing to write, no statement."""
        rows = [(owner, h) for h in sorted(set(hashes))]
        if not rows:
            return
        p = self.placeholder
        cur = self._db.cursor()
        try:
            cur.executemany(
                f"INSERT INTO blob_owners (owner, sha256) VALUES ({p},{p}) ON CONFLICT DO NOTHING",
                rows,
            )
        finally:
            cur.close()

    def owned_blobs(self: _Backend, owner: str, hashes: Sequence[str]) -> set[str]:
        """Which of these blobs `owner` may read."""
        found: set[str] = set()
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), _CHUNK):
            where, args = in_list(self.placeholder, unique[i : i + _CHUNK])
            rows = self._db.execute(
                f"SELECT sha256 FROM blob_owners WHERE owner = {self.placeholder}"
                f" AND sha256 {where}",
                (owner, *args),
            )
            found.update(r[0] for r in rows.fetchall())
        return found

    def add_audit(
        self: _Backend, now: float, actor: str, token_id: str, action: str, target: str, detail: str
    ) -> None:
        """Append one audit entry."""
        marks = ",".join(self.placeholder for _ in range(6))
        self._db.execute(
            f"INSERT INTO audit (time, actor, token_id, action, target, detail) VALUES ({marks})",
            (now, actor, token_id, action, target, detail),
        )

    def audit(self: _Backend, after: int, limit: int) -> list[AuditEntry]:
        """Audit entries after sequence number `after`, oldest first."""
        p = self.placeholder
        rows = self._db.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > {p} ORDER BY seq LIMIT {p}",
            (after, limit),
        )
        return [audit_from_row(r) for r in rows.fetchall()]

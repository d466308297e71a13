"""Admin operations: tokens, the audit log, the autoscaler (sans-IO, like `_core`)."""

from __future__ import annotations

from ..protocol import AuditEntry, ScaleStatus, TokenCreate, TokenCreated, TokenInfo
from ._core import Op, _json


def create_token(
    name: str,
    role: str,
    owner: str = "",
    expires: float | None = None,
    share: float | None = None,
    max_slots: int | None = None,
) -> Op[TokenCreated]:
    """Make a token; its secret is in the answer, and nowhere else ever again. `share` and
    `max_slots` set its owner's fair-share weight and cap on running slots (0: none)."""
    body = TokenCreate(name, role, owner, expires, share, max_slots)  # type: ignore[arg-type]
    return (yield from _json("POST", "/tokens", TokenCreated, body))


def tokens() -> Op[list[TokenInfo]]:
    """Every token (never their secrets)."""
    return (yield from _json("GET", "/tokens", list[TokenInfo]))


def revoke_token(token_id: str) -> Op[TokenInfo]:
    """Revoke a token: it stops working at once."""
    return (yield from _json("POST", f"/tokens/{token_id}/revoke", TokenInfo))


def audit(after: int = 0, limit: int = 1000, newest: bool = False) -> Op[list[AuditEntry]]:
    """Audit entries after sequence number `after`, oldest first; with `newest`, the newest
    `limit` entries, newest first."""
    params = {"after": after, "limit": limit, **({"newest": 1} if newest else {})}
    return (yield from _json("GET", "/audit", list[AuditEntry], **params))


def scale() -> Op[ScaleStatus]:
    """The autoscaler: its providers, recent launches and latest reasons (admin)."""
    return (yield from _json("GET", "/scale", ScaleStatus))


__all__ = ["audit", "create_token", "revoke_token", "scale", "tokens"]

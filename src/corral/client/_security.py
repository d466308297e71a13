"""Operations on tokens, the audit log and a running job's tasks (sans-IO, like `_core`)."""

from __future__ import annotations

from ..protocol import AuditEntry, Task, TasksAdd, TaskSpec, TokenCreate, TokenCreated, TokenInfo
from ._core import Op, _json


def create_token(
    name: str, role: str, owner: str = "", expires: float | None = None
) -> Op[TokenCreated]:
    """Make a token; its secret is in the answer, and nowhere else ever again."""
    body = TokenCreate(name, role, owner, expires)  # type: ignore[arg-type]
    return (yield from _json("POST", "/tokens", TokenCreated, body))


def tokens() -> Op[list[TokenInfo]]:
    """Every token (never their secrets)."""
    return (yield from _json("GET", "/tokens", list[TokenInfo]))


def revoke_token(token_id: str) -> Op[TokenInfo]:
    """Revoke a token: it stops working at once."""
    return (yield from _json("POST", f"/tokens/{token_id}/revoke", TokenInfo))


def audit(after: int = 0, limit: int = 1000) -> Op[list[AuditEntry]]:
    """Audit entries after sequence number `after`, oldest first."""
    return (yield from _json("GET", "/audit", list[AuditEntry], after=after, limit=limit))


def add_tasks(job_id: str, tasks: list[TaskSpec]) -> Op[list[Task]]:
    """Add tasks to an existing job (a task's CORRAL_TOKEN may do this for its own job)."""
    return (yield from _json("POST", f"/jobs/{job_id}/tasks", list[Task], TasksAdd(tasks)))


__all__ = ["add_tasks", "audit", "create_token", "revoke_token", "tokens"]

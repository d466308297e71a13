"""Identities and the audit log: create, list and revoke tokens; read the audit log (admin)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ...protocol import AuditEntry, TokenCreate, TokenCreated, TokenInfo
from .. import access, guards
from ..errors import ApiError
from ..service import Coordinator
from ..store import TokenRecord
from ._common import AFTER, Endpoint, IntQuery, json_response, page_limit

AUDIT_LIMIT = page_limit(1000)
NEWEST = IntQuery("newest", 0, 0, 1)  # 1: the newest entries, newest first (`after` unused)

MAX_NAME = 200


def token_info(
    token: TokenRecord, shares: dict[str, tuple[float, int | None]] | None = None
) -> TokenInfo:
    """What the API shows of a stored token (never its hash), with its owner's fair-share
    weight and cap from `shares` (Store.owner_shares)."""
    share, cap = (shares or {}).get(token.owner, (1.0, None))
    return TokenInfo(
        id=token.id,
        name=token.name,
        role=token.role,  # type: ignore[arg-type]
        owner=token.owner,
        created=token.created,
        expires=token.expires,
        revoked=token.revoked,
        job_id=token.job_id,
        share=share,
        max_slots=cap,
    )


def _name_problem(field: str, value: str) -> str | None:
    if len(value) > MAX_NAME:
        return f"{field} is longer than {MAX_NAME} characters"
    if any(ord(c) < 32 for c in value):
        return f"{field} contains control characters"
    return None


async def create_token(request: Request, coord: Coordinator, body: TokenCreate) -> Response:
    return json_response(new_token(request, coord, body), 201)


def new_token(request: Request, coord: Coordinator, body: TokenCreate) -> TokenCreated:
    """Make and store a token (audited); its secret is in the answer, and nowhere else."""
    problem = _name_problem("name", body.name) or _name_problem("owner", body.owner)
    if not body.name.strip():
        problem = "name is empty"
    if problem:
        raise ApiError("invalid_argument", problem)
    now = coord.clock()
    record, secret = access.new_token(
        body.name, body.role, body.owner or body.name, now, body.expires
    )
    with coord.store.atomic():
        coord.store.add_token(record)
        if body.share is not None or body.max_slots is not None:
            coord.store.set_owner_share(record.owner, body.share, body.max_slots)
    guards.audit(request, coord.store, now, "token.create", record.id, f"{body.role} {body.name}")
    return TokenCreated(token_info(record, coord.store.owner_shares()), secret)


async def list_tokens(request: Request, coord: Coordinator, _: None) -> list[TokenInfo]:
    shares = coord.store.owner_shares()
    return [token_info(t, shares) for t in coord.store.list_tokens()]


async def revoke_token(request: Request, coord: Coordinator, _: None) -> TokenInfo:
    token_id = request.path_params["id"]
    record = coord.store.revoke_token(token_id, coord.clock())
    guards.audit(request, coord.store, coord.clock(), "token.revoke", token_id, record.name)
    return token_info(record)


async def audit_log(request: Request, coord: Coordinator, _: None) -> list[AuditEntry]:
    if NEWEST.read(request):
        return coord.store.audit_newest(AUDIT_LIMIT.read(request))
    return coord.store.audit(AFTER.read(request), AUDIT_LIMIT.read(request))


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST", "/tokens", create_token, "Create a token (admin)", TokenCreate, TokenCreated, 201
    ),
    Endpoint("GET", "/tokens", list_tokens, "List tokens (admin)", None, list[TokenInfo]),
    Endpoint(
        "POST", "/tokens/{id}/revoke", revoke_token, "Revoke a token (admin)", None, TokenInfo
    ),
    Endpoint(
        "GET",
        "/audit",
        audit_log,
        "The audit log, oldest first; with ?newest=1 the newest entries first (admin)",
        None,
        list[AuditEntry],
        query=(AFTER, AUDIT_LIMIT, NEWEST),
    ),
]

__all__ = ["ENDPOINTS", "new_token", "token_info"]

"""The coordinator-wide executable allowlist (`corral allow`).

Changing the list is for admins; workers read it to decide what they may run.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ...protocol import AllowAdd, AllowEntry, is_sha256
from .. import guards
from ..errors import ApiError
from ..service import Coordinator
from ._common import Endpoint, json_response

MAX_NOTE = 500


def _hash(text: str) -> str:
    value = text.strip().lower().removeprefix("sha256:")
    if not is_sha256(value):
        raise ApiError("invalid_argument", f"{text[:80]!r} is not sha256:<64 hex digits>")
    return value


async def list_allowed(request: Request, coord: Coordinator, _: None) -> list[AllowEntry]:
    return coord.store.allow_list()


async def allow_program(request: Request, coord: Coordinator, body: AllowAdd) -> Response:
    sha = _hash(body.sha256)
    if len(body.note) > MAX_NOTE or any(ord(c) < 32 for c in body.note):
        raise ApiError("invalid_argument", f"note: at most {MAX_NOTE} printable characters")
    now = coord.clock()
    who = guards.principal(request)
    changed = coord.store.allow_add(AllowEntry(sha, body.note, now, who.owner, body.allow_inline))
    if changed:
        action = "allow.add_inline" if body.allow_inline else "allow.add"
        guards.audit(request, coord.store, now, action, sha, body.note)
    entry = next(e for e in coord.store.allow_list() if e.sha256 == sha)
    return json_response(entry, 201 if changed else 200)


async def disallow_program(request: Request, coord: Coordinator, _: None) -> Response:
    sha = _hash(request.path_params["sha256"])
    if not coord.store.allow_remove(sha):
        raise ApiError("not_found", f"sha256:{sha} is not on the allowlist")
    guards.audit(request, coord.store, coord.clock(), "allow.remove", sha, "")
    return Response(status_code=204)


ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/allow", list_allowed, "The executable allowlist", None, list[AllowEntry]),
    Endpoint(
        "POST", "/allow", allow_program, "Allow a program by sha256", AllowAdd, AllowEntry, 201
    ),
    Endpoint("DELETE", "/allow/{sha256}", disallow_program, "Remove a program from the allowlist"),
]

__all__ = ["ENDPOINTS"]

"""Enforcing access.py on requests: the token middleware and per-object ownership checks.

Unknown ids are still 404 (checked first); an object that exists but is not the caller's is 403.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

import msgspec
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..protocol import ErrorBody, Job, Task, TaskSpec
from .access import JobTokens, Principal, authenticate, may_use_job
from .errors import ApiError
from .store import NotFound, Store

OPEN_PATHS = frozenset({"/healthz", "/ca.pem", "/", "/ui"})
# the dashboard's own: it authenticates its session cookie itself (dashboard/web.py)
OPEN_PREFIX = "/ui/"
MAX_ID = 200
# what an id may not hold: control characters, the backslash, DEL (one regex search, not a
# Python test a character: ids are in the path of every worker call)
_NOT_IN_ID = re.compile("[\x00-\x1f\\\\\x7f]")
_GUARDED = ("http", "websocket")


class TokenAuth:
    """Every request but OPEN_PATHS carries `Authorization: Bearer <token>` of a live token;
    so does a WebSocket upgrade (the channel), refused with the same JSON error where the
    server can answer an upgrade with an HTTP response, else closed before it is accepted."""

    def __init__(
        self,
        app: ASGIApp,
        store: Store,
        job_tokens: JobTokens,
        clock: Callable[[], float],
        open_paths: frozenset[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.store = store
        self.job_tokens = job_tokens
        self.clock = clock
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        kind = scope["type"]
        if kind not in _GUARDED or path in self.open_paths or path.startswith(OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        secret = _bearer(scope)
        found: Principal | str = "send Authorization: Bearer <token>"
        if secret:
            found = authenticate(self.store, self.job_tokens, secret, self.clock())
        if isinstance(found, str):
            await _refuse(scope, send, 401, "unauthorized", found)
            return
        state = scope.setdefault("state", {})
        state["principal"] = found
        state["owner"] = found.owner
        await self.app(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:]).decode("latin-1").strip() or None
    return None


async def _refuse(scope: Scope, send: Send, status: int, code: str, detail: str) -> None:
    kind = "http.response"
    if scope["type"] == "websocket":
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": detail[:100]})
            return
        kind = "websocket.http.response"
    body = msgspec.json.encode(ErrorBody(code, detail))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": f"{kind}.start", "status": status, "headers": headers})
    await send({"type": f"{kind}.body", "body": body})


def _valid_id(value: str) -> bool:
    """Short enough and printable: an id any object could have."""
    return len(value) <= MAX_ID and _NOT_IN_ID.search(value) is None


def check_path_params(request: Request) -> None:
    """Ids in the path are short and printable (a NUL would upset some databases)."""
    for name, value in request.path_params.items():
        if not _valid_id(value):
            raise ApiError("bad_request", f"{name}: not a valid id")


def principal(request: Request) -> Principal:
    """The caller, as TokenAuth found it."""
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):
        raise ApiError("unauthorized", "send Authorization: Bearer <token>")
    return found


def job(request: Request, store: Store, job_id: str) -> Job:
    """A job the caller may use: 404 when unknown, 403 when not theirs."""
    found = store.get_job(job_id)
    if not may_use_job(principal(request), found.id, found.owner):
        raise ApiError("forbidden", f"job {job_id} is not yours")
    return found


def job_access(request: Request, store: Store, job_id: str) -> None:
    """`job` without the job itself (which counts its tasks): 404 unknown, 403 not theirs."""
    if not may_use_job(principal(request), job_id, store.job_owner(job_id)):
        raise ApiError("forbidden", f"job {job_id} is not yours")


def task(request: Request, store: Store, task_id: str) -> Task:
    """A task the caller may use (through its job)."""
    found = store.get_task(task_id)
    owner = store.job_owner(found.job_id)
    if not may_use_job(principal(request), found.job_id, owner):
        raise ApiError("forbidden", f"task {task_id} is not yours")
    return found


def after(request: Request, store: Store, specs: Sequence[TaskSpec]) -> None:
    """Every task named in `after` exists (else 422) and is the caller's to use (else 403)."""
    for dep in dict.fromkeys(dep for spec in specs for dep in spec.after):
        try:
            if not _valid_id(dep):
                raise NotFound(dep)  # not an id any task could have
            task(request, store, dep)
        except NotFound:
            raise ApiError("invalid_argument", f"after: no task {dep}") from None


def worker(request: Request, store: Store, worker_id: str) -> None:
    """A worker the caller registered (admins: any)."""
    owner = store.registered_by(worker_id)  # NotFound first
    who = principal(request)
    if not who.is_admin and owner != who.owner:
        raise ApiError("forbidden", f"worker {worker_id} is not yours")


def result_task(request: Request, store: Store, task_id: str) -> Task:
    """A task a worker reports on: held by one of its workers, or by nobody (then the lease
    fence answers 409)."""
    found = store.get_task(task_id)
    who = principal(request)
    if who.is_admin or found.worker_id is None:
        return found
    if store.worker_owner(found.worker_id) != who.owner:
        raise ApiError("forbidden", f"task {task_id} is held by a worker that is not yours")
    return found


def reads_blobs_freely(request: Request) -> bool:
    """Admins and workers read any blob; submitters and jobs only their own."""
    return principal(request).role in ("admin", "worker")


def unowned(request: Request, store: Store, hashes: Sequence[str]) -> list[str]:
    """The hashes the caller may not read, in the given order."""
    if reads_blobs_freely(request):
        return []
    owned = store.owned_blobs(principal(request).owner, hashes)
    return [h for h in dict.fromkeys(hashes) if h not in owned]


def grant(request: Request, store: Store, hashes: Iterable[str]) -> None:
    """Let the caller read these blobs from now on."""
    store.grant_blobs(principal(request).owner, hashes)


def audit(
    request: Request, store: Store, now: float, action: str, target: str, detail: str
) -> None:
    """Record who did `action` to `target`."""
    who = principal(request)
    store.add_audit(now, who.owner, who.token_id, action, target, detail)


__all__ = [
    "OPEN_PATHS",
    "TokenAuth",
    "after",
    "audit",
    "check_path_params",
    "grant",
    "job",
    "principal",
    "reads_blobs_freely",
    "result_task",
    "task",
    "unowned",
    "worker",
]

"""The dashboard's actions (POST): log in and out, Kill, Retry failed, Drain, Evict, tokens.

Each action goes through the same guard and service call as its API endpoint and is audited
with the same action name. An action asked for without `confirm=yes` answers with a page
that asks to confirm it (a form that posts it again), so confirming needs no script.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...protocol import TokenCreate
from .. import guards
from ..access import Principal, authenticate
from ..errors import ApiError
from ..routes.security import new_token
from .pages import admin_page
from .session import clear_cookie, session_cookie
from .web import HEADERS, Dash, form_of

__all__ = [
    "create_token",
    "drain_worker",
    "evict_worker",
    "kill_job",
    "kill_task",
    "login",
    "login_form",
    "logout",
    "retry_job",
    "revoke_token",
]


def _back(to: str) -> Response:
    return RedirectResponse(to, 303, headers=HEADERS)


def _safe_next(target: str) -> str:
    """Only a path of the dashboard itself (never another site) after logging in."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


async def login_form(request: Request, dash: Dash) -> Response:
    target = _safe_next(request.query_params.get("next", "/ui/"))
    return dash.render(request, "login.html", next=target, problem="", live="")


async def login(request: Request, dash: Dash) -> Response:
    form = await form_of(request)
    secret = str(form.get("token", "")).strip()
    target = _safe_next(str(form.get("next", "/ui/")))
    found: Principal | str = "enter a token"
    if secret:
        found = authenticate(dash.coord.store, dash.coord.job_tokens, secret, dash.now())
    if isinstance(found, str):
        return dash.render(request, "login.html", 401, next=target, problem=found, live="")
    response = _back(target)
    response.headers["set-cookie"] = session_cookie(secret, request.url.scheme == "https")
    return response


async def logout(request: Request, dash: Dash) -> Response:
    response = _back("/ui/login")
    response.headers["set-cookie"] = clear_cookie(request.url.scheme == "https")
    return response


async def _confirmed(request: Request) -> bool:
    return (await form_of(request)).get("confirm") == "yes"


def _confirm(request: Request, dash: Dash, action: str, what: str) -> Response:
    back = request.headers.get("referer", "/ui/")
    return dash.render(
        request, "confirm.html", action=action, what=what, url=request.url.path, back=back, live=""
    )


async def kill_job(request: Request, dash: Dash) -> Response:
    coord, job_id = dash.coord, request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    if not await _confirmed(request):
        return _confirm(request, dash, "Kill", f"every live task of job {job_id}")
    coord.stops.kill(coord.store.job_task_ids(job_id, only_live=True))
    guards.audit(request, coord.store, coord.clock(), "job.kill", job_id, "dashboard")
    return _back(f"/ui/jobs/{quote(job_id)}")


async def retry_job(request: Request, dash: Dash) -> Response:
    coord, job_id = dash.coord, request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    if not await _confirmed(request):
        return _confirm(request, dash, "Retry failed", f"the failed tasks of job {job_id}")
    ids = coord.stops.retry(job_id)
    guards.audit(request, coord.store, coord.clock(), "job.retry", job_id, f"{len(ids)} tasks")
    return _back(f"/ui/jobs/{quote(job_id)}")


async def kill_task(request: Request, dash: Dash) -> Response:
    coord, task_id = dash.coord, request.path_params["id"]
    guards.task(request, coord.store, task_id)
    if not await _confirmed(request):
        return _confirm(request, dash, "Kill", f"task {task_id}")
    coord.stops.kill([task_id])
    guards.audit(request, coord.store, coord.clock(), "task.kill", task_id, "dashboard")
    return _back(f"/ui/tasks/{quote(task_id)}")


async def drain_worker(request: Request, dash: Dash) -> Response:
    return await _drain(request, dash, evict=False)


async def evict_worker(request: Request, dash: Dash) -> Response:
    """Drain a worker now: its running tasks are evicted (checkpoint saved) and requeued."""
    return await _drain(request, dash, evict=True)


async def _drain(request: Request, dash: Dash, evict: bool) -> Response:
    coord, worker_id = dash.coord, request.path_params["id"]
    guards.worker(request, coord.store, worker_id)
    if not await _confirmed(request):
        name = coord.store.get_worker(worker_id).name
        what = f"worker {name}" + (
            ": its running tasks are checkpointed and requeued" if evict else ""
        )
        return _confirm(request, dash, "Evict" if evict else "Drain", what)
    coord.stops.drain(worker_id, evict)
    detail = "dashboard, evict" if evict else "dashboard"
    guards.audit(request, coord.store, coord.clock(), "worker.drain", worker_id, detail)
    return _back("/ui/workers")


async def create_token(request: Request, dash: Dash) -> Response:
    form = await form_of(request)
    role = str(form.get("role", ""))
    if role not in ("admin", "submit", "worker"):
        raise ApiError("invalid_argument", "role must be one of admin, submit, worker")
    name, owner = str(form.get("name", "")).strip(), str(form.get("owner", "")).strip()
    made = new_token(request, dash.coord, TokenCreate(name, role, owner))  # type: ignore[arg-type]
    return await admin_page(request, dash, made)


async def revoke_token(request: Request, dash: Dash) -> Response:
    token_id, store = request.path_params["id"], dash.coord.store
    if not await _confirmed(request):
        return _confirm(request, dash, "Revoke", f"token {token_id}")
    record = store.revoke_token(token_id, dash.now())
    guards.audit(request, store, dash.now(), "token.revoke", token_id, record.name)
    return _back("/ui/admin")

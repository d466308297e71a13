"""The dashboard's pages (GET): jobs, a job, a task, workers, admin, and the event stream
that tells an open page to refresh itself. Each reads through the same guards and store
calls as the API's handlers for the same thing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from ...protocol import TASK_STATUSES, Task, TokenCreated, cache_summary, explain
from .. import guards
from ..errors import ApiError
from . import timeline, views
from .web import HEADERS, Dash

__all__ = [
    "admin",
    "admin_page",
    "events",
    "job",
    "jobs",
    "log",
    "returned_file",
    "task",
    "workers",
]

JOBS_PER_PAGE = 50
TASKS_PER_PAGE = 100
TIMELINE_TASKS = 2000  # the timeline draws the tasks that started last
TAIL = 64 * 1024  # bytes of stdout and stderr shown on the task page
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "killed")


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in allowed:
        raise ApiError("bad_request", f"{name} must be one of {', '.join(allowed)}")
    return value


def _int(request: Request, name: str, low: int, default: int | None = None) -> int | None:
    text = request.query_params.get(name)
    if not text:
        return default
    if not text.lstrip("-").isdigit() or not low <= int(text) <= 2**62:
        raise ApiError("bad_request", f"{name} must be a whole number from {low}")
    return int(text)


async def jobs(request: Request, dash: Dash) -> Response:
    who = guards.principal(request)
    status = _choice(request, "status", JOB_STATUSES)
    owner = request.query_params.get("owner") or None
    if not who.is_admin:
        owner = who.owner  # as list_jobs: a submit token sees its own jobs only
    page = _int(request, "page", 1, 1) or 1
    rows = dash.coord.store.jobs_page(owner, status, (page - 1) * JOBS_PER_PAGE, JOBS_PER_PAGE + 1)
    return dash.render(
        request,
        "jobs.html",
        jobs=[(j, views.progress(j)) for j in rows[:JOBS_PER_PAGE]],
        more=len(rows) > JOBS_PER_PAGE,
        page=page,
        chosen=status or "",
        owner=request.query_params.get("owner", ""),
        statuses=JOB_STATUSES,
        live="/ui/events",
    )


async def job(request: Request, dash: Dash) -> Response:
    coord = dash.coord
    found = guards.job(request, coord.store, request.path_params["id"])
    status = _choice(request, "status", TASK_STATUSES)
    after, before = _int(request, "after", -1), _int(request, "before", 0)
    fetched = coord.store.tasks_page(found.id, status, after, before, TASKS_PER_PAGE + 1)
    page = views.keyset_page(fetched, TASKS_PER_PAGE, after, before)
    now = dash.now()
    workers = {w.id: w.name for w in coord.store.list_workers()}
    spans = coord.store.task_spans(found.id, TIMELINE_TASKS)
    picture = timeline.svg(timeline.lay_out(spans, now, workers))
    return dash.render(
        request,
        "job.html",
        job=found,
        bar=views.progress(found),
        rows=[(t, _why(dash, t), views.task_duration(t, now)) for t in page.rows],
        page=page,
        chosen=status or "",
        statuses=TASK_STATUSES,
        workers=workers,
        timeline=picture,
        shown=len(spans),
        live="/ui/events",
    )


def _why(dash: Dash, task: Task) -> str:
    """What `corral why` says of a task: for a queued one, why it is not running."""
    if task.status != "queued":
        return ""
    return explain(msgspec.structs.replace(task, pending_reason=dash.coord.pending_reason(task)))


def _tail(path: Path | None) -> tuple[str, bool]:
    """The last TAIL bytes of a log as text, and whether there was more before them."""
    if path is None:
        return "", False
    with contextlib.suppress(OSError), path.open("rb") as f:
        size = f.seek(0, 2)
        f.seek(max(size - TAIL, 0))
        return f.read().decode(errors="replace"), size > TAIL
    return "", False


async def task(request: Request, dash: Dash) -> Response:
    coord = dash.coord
    found = guards.task(request, coord.store, request.path_params["id"])
    found = msgspec.structs.replace(found, pending_reason=coord.pending_reason(found))
    logs = {s: _tail(coord.logs.where(found, s)[0]) for s in ("stdout", "stderr")}
    events = coord.store.task_events(found.job_id, found.id)
    names = {w.id: w.name for w in coord.store.list_workers()}
    return dash.render(
        request,
        "task.html",
        task=found,
        why=explain(found),
        logs=logs,
        events=events,
        workers=names,
        took=views.task_duration(found, dash.now()),
        live="/ui/events?tick=2" if found.status == "running" else "/ui/events",
    )


async def log(request: Request, dash: Dash) -> Response:
    """A task's whole stdout or stderr, as text."""
    found = guards.task(request, dash.coord.store, request.path_params["id"])
    stream = request.path_params["stream"]
    if stream not in ("stdout", "stderr"):
        raise ApiError("not_found", "a task has stdout and stderr")
    path, _ = dash.coord.logs.where(found, stream)
    if path is None or not path.exists():
        return Response(b"", media_type="text/plain; charset=utf-8", headers=HEADERS)
    return FileResponse(path, media_type="text/plain; charset=utf-8", headers=HEADERS)


async def returned_file(request: Request, dash: Dash) -> Response:
    """A file a task returned, as a download under its own name."""
    found = guards.task(request, dash.coord.store, request.path_params["id"])
    name = request.path_params["name"]
    entry = found.manifest.get(name)
    if entry is None:
        raise ApiError("not_found", f"task {found.id} returned no file {name}")
    if guards.unowned(request, dash.coord.store, [entry.sha256]):
        raise ApiError("forbidden", f"file {name} is not yours")
    base = name.rsplit("/", 1)[-1]
    return FileResponse(
        dash.coord.blobs.path(entry.sha256),
        media_type="application/octet-stream",
        filename=base,
        headers=HEADERS,
    )


async def workers(request: Request, dash: Dash) -> Response:
    rows = dash.coord.store.list_workers()
    return dash.render(
        request,
        "workers.html",
        workers=[(w, cache_summary(w.capabilities)) for w in rows],
        live="/ui/events?tick=2",
    )


async def admin(request: Request, dash: Dash) -> Response:
    return await admin_page(request, dash, None)


async def admin_page(request: Request, dash: Dash, created: TokenCreated | None) -> Response:
    """Tokens, the allowlist and the audit log; with a token just made, its secret once."""
    store = dash.coord.store
    return dash.render(
        request,
        "admin.html",
        tokens=store.list_tokens(),
        allowed=store.allow_list(),
        audit=store.audit_newest(200),
        created=created,
        live="",
    )


async def events(request: Request, dash: Dash) -> Response:
    """Server-Sent Events telling an open page to refresh: when any task changes state (at
    most once a second), and every `tick` seconds for what changes without an event
    (heartbeats, a running task's output). One stream per open page."""
    tick = float(min(_int(request, "tick", 1, 10) or 10, 60))
    coord = dash.coord

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 3000\n\n"
        while await coord.changed(tick):
            yield b"event: refresh\ndata: {}\n\n"
            await asyncio.sleep(1.0)  # a burst of changes makes one refresh a second

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)

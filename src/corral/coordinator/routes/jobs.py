"""Jobs: submit, list, read, add tasks to, kill, and follow one (Server-Sent Events)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ...protocol import (
    TASK_STATUSES,
    IdMatch,
    Job,
    JobCreate,
    JobCreated,
    KillOptions,
    RetryOptions,
    Task,
    TasksAdd,
    TaskSpec,
    is_sha256,
)
from .. import guards
from ..errors import ApiError
from ..inherit import inherit_requires
from ..service import Coordinator
from ..sizing import job_usage
from ._common import (
    AFTER,
    LAST_EVENT_ID,
    OFFSET,
    Endpoint,
    IntQuery,
    encoder,
    json_response,
    page_limit,
)

JOBS_LIMIT = page_limit(100)
TASKS_LIMIT = page_limit(1000)
IDS_LIMIT = IntQuery("limit", 20, 1, 1000)
_HEX = re.compile(r"[0-9a-f]{1,32}")


def _owner(request: Request) -> str:
    return str(getattr(request.state, "owner", "anonymous"))


async def create_job(request: Request, coord: Coordinator, body: JobCreate) -> Response:
    if body.blobs:  # small inputs sent along: stored as if uploaded just before
        problem = coord.store_inline(body.blobs)
        if problem:
            raise ApiError("invalid_argument", f"blobs: {problem}")
        guards.grant(request, coord.store, list(body.blobs))
    _check_inputs(request, coord, body.tasks)
    guards.after(request, coord.store, body.tasks)
    job = coord.submit(body, _owner(request))
    guards.audit(request, coord.store, job.created, "job.submit", job.id, f"{job.total} tasks")
    return json_response(job, 201)


def _check_inputs(request: Request, coord: Coordinator, tasks: list[TaskSpec]) -> None:
    hashes = [ref.sha256 for spec in tasks for ref in spec.inputs.values() if is_sha256(ref.sha256)]
    refused = guards.unowned(request, coord.store, hashes)
    if refused:
        raise ApiError("invalid_argument", f"input blob {refused[0]} was never uploaded")


def _status(request: Request) -> str | None:
    status = request.query_params.get("status")
    if status is not None and status not in TASK_STATUSES:
        raise ApiError("bad_request", f"status must be one of {', '.join(TASK_STATUSES)}")
    return status


async def list_jobs(request: Request, coord: Coordinator, _: None) -> list[Job]:
    who = guards.principal(request)
    # ?owner= narrows an admin's list; anyone else sees only their own jobs anyway
    owner = request.query_params.get("owner") if who.is_admin else who.owner
    status, offset, limit = _status(request), OFFSET.read(request), JOBS_LIMIT.read(request)
    if status is None and owner is None and not offset:
        return coord.store.list_jobs(limit)
    return coord.store.jobs_page(owner, status, offset, limit)


async def find_ids(request: Request, coord: Coordinator, _: None) -> list[IdMatch]:
    prefix = request.query_params.get("prefix", "")
    if not _HEX.fullmatch(prefix):
        raise ApiError("bad_request", "prefix: give 1 to 32 lowercase hex digits")
    who = guards.principal(request)
    name = request.query_params.get("name")
    owner = None if who.is_admin else who.owner
    return coord.store.find_ids(prefix, name, owner, IDS_LIMIT.read(request))


async def get_job(request: Request, coord: Coordinator, _: None) -> Job:
    found = guards.job(request, coord.store, request.path_params["id"])
    return msgspec.structs.replace(found, usage=job_usage(coord.store.finished_usage(found.id)))


async def list_tasks(request: Request, coord: Coordinator, _: None) -> list[Task]:
    job_id = request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    status = _status(request)
    found = coord.store.list_tasks(job_id, OFFSET.read(request), TASKS_LIMIT.read(request), status)
    return coord.samples.attach(found)


async def add_tasks(request: Request, coord: Coordinator, body: TasksAdd) -> Response:
    job_id = request.path_params["id"]
    guards.job(request, coord.store, job_id)
    # unlike create_job, every input hash is checked here, so a malformed one reads as never
    # uploaded; kept so that the error bodies stay as they were
    hashes = [r.sha256 for spec in body.tasks for r in spec.inputs.values()]
    refused = guards.unowned(request, coord.store, hashes)
    if refused:
        raise ApiError("invalid_argument", f"input blob {refused[0]} was never uploaded")
    guards.after(request, coord.store, body.tasks)
    specs = body.tasks
    parent = guards.principal(request).task_id  # a task forking children (a job token)
    if parent is not None:
        specs = inherit_requires(specs, coord.store.get_task(parent).requires)
    tasks = coord.add_tasks(job_id, specs)
    detail = f"{len(tasks)} tasks"
    guards.audit(request, coord.store, coord.clock(), "job.add_tasks", job_id, detail)
    return json_response(tasks, 201)


async def kill_job(request: Request, coord: Coordinator, body: KillOptions) -> Job:
    job_id = request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    coord.stops.kill(coord.store.job_task_ids(job_id, only_live=True), body.checkpoint)
    detail = "checkpoint" if body.checkpoint else ""
    guards.audit(request, coord.store, coord.clock(), "job.kill", job_id, detail)
    return coord.store.get_job(job_id)


async def retry_job(request: Request, coord: Coordinator, body: RetryOptions) -> Job:
    job_id = request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    ids = coord.stops.retry(job_id, body.killed)
    guards.audit(request, coord.store, coord.clock(), "job.retry", job_id, f"{len(ids)} tasks")
    return coord.store.get_job(job_id)


async def job_events(request: Request, coord: Coordinator, _: None) -> Response:
    job_id = request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    # Last-Event-ID (a reconnecting EventSource) wins over ?after=
    header = request.headers.get("last-event-id") or None
    after = AFTER.read(request) if header is None else LAST_EVENT_ID.read(request, header)
    detail = request.query_params.get("detail") == "1"
    stream = coord.events(job_id, after, keepalive=15.0)
    first = await anext(stream, "end")  # raises NotFound before the 200 is sent

    async def body() -> AsyncIterator[bytes]:
        item: Any = first
        while item != "end":
            if item is None:
                yield b": keepalive\n\n"
            else:
                event = coord.event_detail(item) if detail else item
                yield b"id: %d\nevent: task\ndata: %s\n\n" % (item.seq, encoder.encode(event))
            item = await anext(stream, "end")
        yield b"event: end\ndata: {}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/jobs", create_job, "Submit a job", JobCreate, JobCreated, 201),
    Endpoint(
        "GET",
        "/jobs",
        list_jobs,
        "List jobs, newest first (?status=, and ?owner= for an admin)",
        None,
        list[Job],
        query=(OFFSET, JOBS_LIMIT),
    ),
    Endpoint(
        "GET",
        "/ids",
        find_ids,
        "Jobs and tasks whose id starts with ?prefix= (with ?name=, tasks of that name in"
        " the jobs it starts)",
        None,
        list[IdMatch],
        query=(IDS_LIMIT,),
    ),
    Endpoint("GET", "/jobs/{id}", get_job, "One job", None, Job),
    Endpoint(
        "GET",
        "/jobs/{id}/tasks",
        list_tasks,
        "A job's tasks",
        None,
        list[Task],
        query=(OFFSET, TASKS_LIMIT),
    ),
    Endpoint(
        "POST", "/jobs/{id}/tasks", add_tasks, "Add tasks to a job", TasksAdd, list[Task], 201
    ),
    Endpoint(
        "POST",
        "/jobs/{id}/kill",
        kill_job,
        "Kill a job's live tasks (running ones after a checkpoint, if asked)",
        KillOptions,
        Job,
    ),
    Endpoint(
        "POST",
        "/jobs/{id}/retry",
        retry_job,
        "Requeue a job's failed (and, if asked, killed) tasks as new attempts",
        RetryOptions,
        Job,
    ),
    Endpoint(
        "GET",
        "/jobs/{id}/events",
        job_events,
        "Server-Sent Events of task changes",
        query=(AFTER,),
    ),
]

__all__ = ["ENDPOINTS"]

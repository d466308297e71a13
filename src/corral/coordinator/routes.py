"""The HTTP API under /api/v1: one table of endpoints, used for routing and for OpenAPI.

Bodies are decoded in one place (`_decode`) into protocol structs; any failure there, and every
ApiError or NotFound raised by the service, becomes `{"error": code, "detail": message}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..protocol import (
    TASK_STATUSES,
    Heartbeat,
    HeartbeatReply,
    Job,
    JobCreate,
    JobCreated,
    LeaseGrant,
    LeaseRequest,
    MissingBlobs,
    MissingBlobsReply,
    ResultsReply,
    Task,
    TaskRelease,
    TaskResult,
    TaskSpec,
    Worker,
    WorkerRegister,
    WorkerRegistered,
    WorkerResults,
    is_sha256,
    result_problems,
)
from . import guards
from .blobs import BlobError, BlobResponse
from .errors import ApiError
from .service import Coordinator

Handler = Callable[[Request, Coordinator, Any], Awaitable[Any]]
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Endpoint:
    """One API operation."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: Any = None
    returns: Any = None
    status: int = 200


def json_response(value: Any, status: int = 200) -> Response:
    """Encode a struct, list or dict as JSON."""
    return Response(_encoder.encode(value), status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) past `limit` bytes without reading further."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError("too_large", f"body of {declared} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError("too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, coord: Coordinator, kind: Any) -> Any:
    raw = await read_body(request, coord.settings.max_body_bytes)
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype != "application/json":
        raise ApiError("unsupported_media_type", f"send application/json, not {ctype}")
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise ApiError("invalid_body", str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise ApiError("bad_request", f"malformed JSON: {exc}") from exc


def _int_param(request: Request, name: str, default: int, low: int = 0) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise ApiError("bad_request", f"query parameter {name} must be an integer") from exc
    if value < low:
        raise ApiError("bad_request", f"query parameter {name} must be at least {low}")
    return value


def _owner(request: Request) -> str:
    return str(getattr(request.state, "owner", "anonymous"))


# jobs
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


async def list_jobs(request: Request, coord: Coordinator, _: None) -> list[Job]:
    who = guards.principal(request)
    owner = None if who.is_admin else who.owner
    return coord.store.list_jobs(_int_param(request, "limit", 100, 1), owner)


async def get_job(request: Request, coord: Coordinator, _: None) -> Job:
    return guards.job(request, coord.store, request.path_params["id"])


async def list_tasks(request: Request, coord: Coordinator, _: None) -> list[Task]:
    job_id = request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    status = request.query_params.get("status")
    if status is not None and status not in TASK_STATUSES:
        raise ApiError("bad_request", f"status must be one of {', '.join(TASK_STATUSES)}")
    return coord.store.list_tasks(
        job_id, _int_param(request, "offset", 0), _int_param(request, "limit", 1000, 1), status
    )


async def kill_job(request: Request, coord: Coordinator, _: None) -> Job:
    job_id = request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    coord.kill(coord.store.job_task_ids(job_id, only_live=True))
    guards.audit(request, coord.store, coord.clock(), "job.kill", job_id, "")
    return coord.store.get_job(job_id)


async def job_events(request: Request, coord: Coordinator, _: None) -> Response:
    job_id = request.path_params["id"]
    guards.job_access(request, coord.store, job_id)
    after = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not after.isdigit():
        raise ApiError("bad_request", "Last-Event-ID must be an event sequence number")
    detail = request.query_params.get("detail") == "1"
    stream = coord.events(job_id, int(after), keepalive=15.0)
    first = await anext(stream, "end")  # raises NotFound before the 200 is sent

    async def body() -> AsyncIterator[bytes]:
        item: Any = first
        while item != "end":
            if item is None:
                yield b": keepalive\n\n"
            else:
                event = coord.event_detail(item) if detail else item
                yield b"id: %d\nevent: task\ndata: %s\n\n" % (item.seq, _encoder.encode(event))
            item = await anext(stream, "end")
        yield b"event: end\ndata: {}\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


# tasks
async def get_task(request: Request, coord: Coordinator, _: None) -> Task:
    found = guards.task(request, coord.store, request.path_params["id"])
    return msgspec.structs.replace(found, pending_reason=coord.pending_reason(found))


async def kill_task(request: Request, coord: Coordinator, _: None) -> Task:
    task_id = request.path_params["id"]
    guards.task(request, coord.store, task_id)
    coord.kill([task_id])
    guards.audit(request, coord.store, coord.clock(), "task.kill", task_id, "")
    return coord.store.get_task(task_id)


async def task_log(request: Request, coord: Coordinator, _: None) -> Response:
    task = guards.task(request, coord.store, request.path_params["id"])
    stream = request.query_params.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise ApiError("bad_request", "stream must be stdout or stderr")
    offset = _int_param(request, "offset", 0)
    path, final = coord.log_path(task, stream)
    data = b""
    if path is not None:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(4 * 1024 * 1024)
    headers = {"x-corral-final": "1" if final and not data else "0", "x-corral-status": task.status}
    return Response(data, 200, headers=headers, media_type="application/octet-stream")


async def task_result(request: Request, coord: Coordinator, body: TaskResult) -> Task:
    problems = result_problems(body)
    if problems:
        raise ApiError("invalid_argument", problems[0])
    guards.result_task(request, coord.store, request.path_params["id"])
    return coord.result(request.path_params["id"], body)


async def task_release(request: Request, coord: Coordinator, body: TaskRelease) -> Task:
    guards.result_task(request, coord.store, request.path_params["id"])
    return coord.release(request.path_params["id"], body.lease_id)


# blobs
async def missing_blobs(request: Request, coord: Coordinator, body: MissingBlobs) -> Any:
    bad = [h for h in body.sha256 if not is_sha256(h)]
    if bad:
        raise ApiError("invalid_argument", f"{bad[0]!r} is not a sha256 hex digest")
    # a submitter proves it has a blob by uploading it, even when someone else already did
    absent = set(coord.blobs.missing(body.sha256))
    absent.update(guards.unowned(request, coord.store, body.sha256))
    return MissingBlobsReply([h for h in dict.fromkeys(body.sha256) if h in absent])


async def put_blob(request: Request, coord: Coordinator, _: None) -> Response:
    sha = request.path_params["sha256"]
    try:
        if coord.blobs.has(sha) and not guards.unowned(request, coord.store, [sha]):
            async for _chunk in request.stream():  # drain so the connection stays usable
                pass
            return json_response({"sha256": sha, "stored": False}, 200)
        size = await coord.blobs.put(sha, request.stream(), coord.settings.max_blob_bytes)
    except BlobError as exc:
        raise ApiError(exc.code, exc.detail) from exc
    guards.grant(request, coord.store, [sha])
    return json_response({"sha256": sha, "size": size, "stored": True}, 201)


async def get_blob(request: Request, coord: Coordinator, _: None) -> Response:
    try:
        path = coord.blobs.path(request.path_params["sha256"])
    except BlobError as exc:
        raise ApiError(exc.code, exc.detail) from exc
    if not path.is_file():
        raise ApiError("not_found", f"no blob {request.path_params['sha256']}")
    if guards.unowned(request, coord.store, [request.path_params["sha256"]]):
        raise ApiError("forbidden", f"blob {request.path_params['sha256']} is not yours")
    return BlobResponse(path)


# workers
async def register_worker(request: Request, coord: Coordinator, body: WorkerRegister) -> Any:
    registered = coord.register(body)
    coord.store.set_worker_owner(registered.id, guards.principal(request).owner)
    return registered


async def list_workers(request: Request, coord: Coordinator, _: None) -> list[Worker]:
    return coord.store.list_workers()


async def heartbeat(request: Request, coord: Coordinator, body: Heartbeat) -> HeartbeatReply:
    guards.worker(request, coord.store, request.path_params["id"])
    return await coord.heartbeat(request.path_params["id"], body)


async def lease(request: Request, coord: Coordinator, body: LeaseRequest) -> LeaseGrant:
    guards.worker(request, coord.store, request.path_params["id"])
    return await coord.lease(request.path_params["id"], body)


async def worker_results(request: Request, coord: Coordinator, body: WorkerResults) -> Any:
    guards.worker(request, coord.store, request.path_params["id"])
    return coord.results(request.path_params["id"], body.results)


async def drain_worker(request: Request, coord: Coordinator, _: None) -> Worker:
    guards.worker(request, coord.store, request.path_params["id"])
    coord.drain(request.path_params["id"])
    return coord.store.get_worker(request.path_params["id"])


async def deregister(request: Request, coord: Coordinator, _: None) -> Response:
    guards.worker(request, coord.store, request.path_params["id"])
    coord.deregister(request.path_params["id"])
    return Response(status_code=204)


ENDPOINTS: list[Endpoint] = [
    Endpoint("POST", "/jobs", create_job, "Submit a job", JobCreate, JobCreated, 201),
    Endpoint("GET", "/jobs", list_jobs, "List jobs, newest first", None, list[Job]),
    Endpoint("GET", "/jobs/{id}", get_job, "One job", None, Job),
    Endpoint("GET", "/jobs/{id}/tasks", list_tasks, "A job's tasks", None, list[Task]),
    Endpoint("POST", "/jobs/{id}/kill", kill_job, "Kill a job's live tasks", None, Job),
    Endpoint("GET", "/jobs/{id}/events", job_events, "Server-Sent Events of task changes"),
    Endpoint("GET", "/tasks/{id}", get_task, "One task", None, Task),
    Endpoint("POST", "/tasks/{id}/kill", kill_task, "Kill a task", None, Task),
    Endpoint("GET", "/tasks/{id}/log", task_log, "A task's stdout or stderr from an offset"),
    Endpoint("POST", "/tasks/{id}/result", task_result, "Report an attempt", TaskResult, Task),
    Endpoint(
        "POST",
        "/tasks/{id}/release",
        task_release,
        "Give a running task back to the queue, not counting the attempt",
        TaskRelease,
        Task,
    ),
    Endpoint(
        "POST",
        "/blobs/missing",
        missing_blobs,
        "Which blobs to upload",
        MissingBlobs,
        MissingBlobsReply,
    ),
    Endpoint("PUT", "/blobs/{sha256}", put_blob, "Upload a blob by its sha256", None, None, 201),
    Endpoint("GET", "/blobs/{sha256}", get_blob, "Download a blob"),
    Endpoint(
        "POST", "/workers", register_worker, "Register a worker", WorkerRegister, WorkerRegistered
    ),
    Endpoint("GET", "/workers", list_workers, "List workers", None, list[Worker]),
    Endpoint(
        "POST",
        "/workers/{id}/heartbeat",
        heartbeat,
        "Heartbeat and extend leases",
        Heartbeat,
        HeartbeatReply,
    ),
    Endpoint("POST", "/workers/{id}/lease", lease, "Long-poll for tasks", LeaseRequest, LeaseGrant),
    Endpoint(
        "POST",
        "/workers/{id}/results",
        worker_results,
        "Report several finished attempts at once",
        WorkerResults,
        ResultsReply,
    ),
    Endpoint("POST", "/workers/{id}/deregister", deregister, "Leave the farm"),
    Endpoint(
        "POST",
        "/workers/{id}/drain",
        drain_worker,
        "Finish running tasks, take no new ones, then leave",
        None,
        Worker,
    ),
]

__all__ = ["ENDPOINTS", "decode_body", "Endpoint", "json_response", "read_body"]

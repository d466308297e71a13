"""Tasks: read, kill, read the log of, report on, give back, and mark blocked one task.

`POST /tasks/{id}/blocked` is how a running task (with its job token, see client/_current.py)
says it waits on its children; the coordinator relays it to the task's worker in the
heartbeat reply, and the worker leases more work into the blocked task's slots.
"""

from __future__ import annotations

import os

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from ...protocol import KillOptions, Task, TaskBlocked, TaskRelease, TaskResult, result_problems
from .. import guards
from ..errors import ApiError
from ..service import Coordinator
from ._common import OFFSET, Endpoint, IntQuery

TAIL = IntQuery("tail", 0, 0, 1 << 20)  # read only the last this many bytes (0: from offset)


async def get_task(request: Request, coord: Coordinator, _: None) -> Task:
    found = guards.task(request, coord.store, request.path_params["id"])
    (found,) = coord.samples.attach([found])
    return msgspec.structs.replace(found, pending_reason=coord.pending_reason(found))


async def kill_task(request: Request, coord: Coordinator, body: KillOptions) -> Task:
    task_id = request.path_params["id"]
    guards.task(request, coord.store, task_id)
    coord.stops.kill([task_id], body.checkpoint)
    detail = "checkpoint" if body.checkpoint else ""
    guards.audit(request, coord.store, coord.clock(), "task.kill", task_id, detail)
    return coord.store.get_task(task_id)


async def task_log(request: Request, coord: Coordinator, _: None) -> Response:
    task = guards.task(request, coord.store, request.path_params["id"])
    stream = request.query_params.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise ApiError("bad_request", "stream must be stdout or stderr")
    offset, tail = OFFSET.read(request), TAIL.read(request)
    path, final = coord.logs.where(task, stream)
    data = b""
    if path is not None:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if tail:  # the last bytes only: a failure's last stderr line, say
                offset = max(size - tail, 0)
            # past the end there is nothing to read; ext4 refuses to seek that far at all
            if offset < size:
                f.seek(offset)
                data = f.read(4 * 1024 * 1024)
    headers = {"x-corral-final": "1" if final and not data else "0", "x-corral-status": task.status}
    return Response(data, 200, headers=headers, media_type="application/octet-stream")


async def task_result(request: Request, coord: Coordinator, body: TaskResult) -> Task:
    problems = result_problems(body)
    if problems:
        raise ApiError("invalid_argument", problems[0])
    task_id = request.path_params["id"]
    guards.result_task(request, coord.store, task_id)
    return await coord.commits.run(lambda: coord.result(task_id, body))


async def task_release(request: Request, coord: Coordinator, body: TaskRelease) -> Task:
    guards.result_task(request, coord.store, request.path_params["id"])
    return coord.stops.release(request.path_params["id"], body.lease_id, body.reason)


async def task_blocked(request: Request, coord: Coordinator, body: TaskBlocked) -> Task:
    task_id = request.path_params["id"]
    guards.task(request, coord.store, task_id)
    coord.set_blocked(task_id, body.blocked)
    return coord.store.get_task(task_id)


ENDPOINTS: list[Endpoint] = [
    Endpoint("GET", "/tasks/{id}", get_task, "One task", None, Task),
    Endpoint(
        "POST",
        "/tasks/{id}/kill",
        kill_task,
        "Kill a task (a running one after a checkpoint, if asked)",
        KillOptions,
        Task,
    ),
    Endpoint(
        "GET",
        "/tasks/{id}/log",
        task_log,
        "A task's stdout or stderr from an offset (or its last ?tail= bytes)",
        query=(OFFSET, TAIL),
    ),
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
        "/tasks/{id}/blocked",
        task_blocked,
        "A running task waits on its children (its slots may be used meanwhile), or not",
        TaskBlocked,
        Task,
    ),
]

__all__ = ["ENDPOINTS"]

"""API operations for tasks that wait: dependencies named on submit, and blocked parents.

`POST /tasks/{id}/blocked` is how a running task (with its job token, see
client/_current.py) says it waits on its children; the coordinator relays it to the task's
worker in the heartbeat reply, and the worker leases more work into the blocked task's slots.
"""

from __future__ import annotations

from starlette.requests import Request

from ..protocol import Task, TaskBlocked
from . import guards
from .routes import Endpoint
from .service import Coordinator


async def task_blocked(request: Request, coord: Coordinator, body: TaskBlocked) -> Task:
    task_id = request.path_params["id"]
    guards.task(request, coord.store, task_id)
    coord.set_blocked(task_id, body.blocked)
    return coord.store.get_task(task_id)


DEPS_ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/tasks/{id}/blocked",
        task_blocked,
        "A running task waits on its children (its slots may be used meanwhile), or not",
        TaskBlocked,
        Task,
    ),
]

__all__ = ["DEPS_ENDPOINTS"]

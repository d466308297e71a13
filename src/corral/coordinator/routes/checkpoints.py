"""Checkpoints: a worker records a running task's save; the task's owner lists them."""

from __future__ import annotations

from starlette.requests import Request

from ...protocol import CheckpointInfo, CheckpointSave, CheckpointSaved
from .. import guards
from ..service import Coordinator
from ._common import Endpoint


async def save_checkpoint(
    request: Request, coord: Coordinator, body: CheckpointSave
) -> CheckpointSaved:
    guards.result_task(request, coord.store, request.path_params["id"])
    return coord.resume.save(request.path_params["id"], body)


async def list_checkpoints(request: Request, coord: Coordinator, _: None) -> list[CheckpointInfo]:
    guards.task(request, coord.store, request.path_params["id"])
    return coord.resume.listed(request.path_params["id"])


ENDPOINTS: list[Endpoint] = [
    Endpoint(
        "POST",
        "/tasks/{id}/checkpoints",
        save_checkpoint,
        "Record a running task's checkpoint (files uploaded as blobs first)",
        CheckpointSave,
        CheckpointSaved,
    ),
    Endpoint(
        "GET",
        "/tasks/{id}/checkpoints",
        list_checkpoints,
        "A task's saved checkpoints, oldest first",
        None,
        list[CheckpointInfo],
    ),
]

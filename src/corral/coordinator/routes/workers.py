"""Workers: register, list, heartbeat, long-poll for tasks, report results, drain, leave."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ...protocol import (
    DrainOptions,
    Heartbeat,
    HeartbeatReply,
    LeaseGrant,
    LeaseRequest,
    ResultsReply,
    Worker,
    WorkerRegister,
    WorkerRegistered,
    WorkerResults,
)
from .. import guards
from ..service import Coordinator
from ._common import Endpoint


async def register_worker(request: Request, coord: Coordinator, body: WorkerRegister) -> Any:
    registered = coord.register(body)
    coord.store.set_worker_owner(registered.id, guards.principal(request).owner)
    return registered


async def list_workers(request: Request, coord: Coordinator, _: None) -> list[Worker]:
    return coord.store.list_workers()


async def heartbeat(request: Request, coord: Coordinator, body: Heartbeat) -> HeartbeatReply:
    guards.worker(request, coord.store, request.path_params["id"])
    coord.samples.heard(request.path_params["id"], body.usage, coord.clock())
    return await coord.heartbeat(request.path_params["id"], body)


async def lease(request: Request, coord: Coordinator, body: LeaseRequest) -> LeaseGrant:
    guards.worker(request, coord.store, request.path_params["id"])
    return await coord.lease(request.path_params["id"], body)


async def worker_results(request: Request, coord: Coordinator, body: WorkerResults) -> Any:
    worker_id = request.path_params["id"]
    guards.worker(request, coord.store, worker_id)
    return await coord.commits.run(lambda: coord.results(worker_id, body.results))


async def drain_worker(request: Request, coord: Coordinator, body: DrainOptions) -> Worker:
    worker_id = request.path_params["id"]
    guards.worker(request, coord.store, worker_id)
    coord.stops.drain(worker_id, body.evict)
    detail = "evict" if body.evict else ""
    guards.audit(request, coord.store, coord.clock(), "worker.drain", worker_id, detail)
    return coord.store.get_worker(worker_id)


async def deregister(request: Request, coord: Coordinator, _: None) -> Response:
    guards.worker(request, coord.store, request.path_params["id"])
    coord.deregister(request.path_params["id"])
    return Response(status_code=204)


ENDPOINTS: list[Endpoint] = [
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
        "Take no new tasks and leave once the running ones are finished (or evicted, if asked)",
        DrainOptions,
        Worker,
    ),
]

__all__ = ["ENDPOINTS"]

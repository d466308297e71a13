"""The HTTP API under /api/v1, one module per resource; ENDPOINTS is the one table that
app.py routes and openapi.py documents.

    jobs       submit, list, read, add tasks, kill, events (SSE)
    tasks      read, kill, log, result, release, blocked
    blobs      missing, upload, download
    workers    register, list, heartbeat, lease, results, drain, deregister
    security   tokens and the audit log (admin)
    allowlist  the executable allowlist
    checkpoints  a running task's saves (its worker), a task's list (its owner)
    scale      the autoscaler's providers, launches and reasons (admin)

A handler is `async (request, coordinator, body) -> struct | Response`: it checks access with
guards.py, asks the service (or the store, for plain reads), and returns what goes on the wire.
Its name is the operationId and the name access.py's role rules use.
"""

from __future__ import annotations

from . import allowlist, blobs, checkpoints, jobs, scale, security, tasks, workers
from ._common import Endpoint, IntQuery, decode_body, json_response, read_body

ENDPOINTS: list[Endpoint] = (
    jobs.ENDPOINTS
    + tasks.ENDPOINTS
    + blobs.ENDPOINTS
    + workers.ENDPOINTS
    + security.ENDPOINTS
    + allowlist.ENDPOINTS
    + checkpoints.ENDPOINTS
    + scale.ENDPOINTS
)

__all__ = ["ENDPOINTS", "Endpoint", "IntQuery", "decode_body", "json_response", "read_body"]

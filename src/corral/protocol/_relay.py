"""What a running task may ask of the coordinator through its worker's relay (worker/relay.py):
the operations a job token may call, as method and path under API_PREFIX. The coordinator's
access rules (coordinator/access.py, JOB_SCOPED_OPS and BLOB_OPS) say the same; a test
checks that the two agree."""

from __future__ import annotations

import re

__all__ = ["API_PREFIX", "JOB_TOKEN_ROUTES", "RELAY_SOCKET", "relay_allows"]

API_PREFIX = "/api/v1"
RELAY_SOCKET = "api.sock"  # in the task directory's STATE_DIR
JOB_TOKEN_ROUTES = (
    ("GET", "/jobs/{id}"),
    ("GET", "/jobs/{id}/tasks"),
    ("POST", "/jobs/{id}/tasks"),
    ("GET", "/jobs/{id}/events"),
    ("GET", "/tasks/{id}"),
    ("GET", "/tasks/{id}/log"),
    ("POST", "/tasks/{id}/blocked"),
    ("GET", "/tasks/{id}/checkpoints"),
    ("POST", "/blobs/missing"),
    ("PUT", "/blobs/{sha256}"),
    ("GET", "/blobs/{sha256}"),
)
_PARAM = re.compile(r"\{[a-z0-9_]+\}")
# a path parameter is one segment of id characters: no dot, slash or escape can widen it
_PATTERNS = tuple(
    (method, re.compile("[0-9A-Za-z_-]+".join(re.escape(p) for p in _PARAM.split(path))))
    for method, path in JOB_TOKEN_ROUTES
)


def relay_allows(method: str, target: str) -> str | None:
    """The path under API_PREFIX to forward a request for `target` (path and query) to, or
    None when a job token may not make it."""
    path, _, query = target.partition("?")
    if not path.startswith(API_PREFIX + "/"):
        return None
    rest = path[len(API_PREFIX) :]
    if not any(m == method and p.fullmatch(rest) for m, p in _PATTERNS):
        return None
    return rest + (f"?{query}" if query else "")

"""Wire models for identities, audit and adding tasks to a running job.

Roles::

    admin   everything
    submit  its own jobs (and the blobs it uploaded or its jobs produced)
    worker  the worker endpoints, for workers it registered and their leases
    job     minted per lease: read, and add tasks to, one job only
    metrics read `GET /metrics` only (what a Prometheus server scrapes with)
"""

from __future__ import annotations

import base64
import json
from typing import Literal

import msgspec

from ._bounds import Count, Lifetime, Share
from ._models import Request, TaskSpec

#: what every join string starts with (client/_join.py reads them)
JOIN_PREFIX = "corral1:"


def make_join(url: str, ca_sha256: str, token: str) -> str:
    """A join string for a worker: `corral1:<base64url of {"url", "ca", "token"}>`."""
    data = json.dumps({"url": url, "ca": ca_sha256, "token": token}, separators=(",", ":"))
    return JOIN_PREFIX + base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


Role = Literal["admin", "submit", "worker", "job", "metrics"]
ROLES: tuple[Role, ...] = ("admin", "submit", "worker", "job", "metrics")


class TokenCreate(Request):
    """Make a token; `expires` is seconds from now (none: never)."""

    name: str
    role: Literal["admin", "submit", "worker", "metrics"]
    owner: str = ""
    expires: Lifetime | None = None
    share: Share | None = None  # the owner's fair-share weight (None: keep it; 1 at first)
    # the most slots the owner's tasks may run at once (0: no cap; None: keep it)
    max_slots: Count | None = None


class TokenInfo(msgspec.Struct):
    """A token as listed: never its secret."""

    id: str
    name: str
    role: Role
    owner: str
    created: float
    expires: float | None
    revoked: float | None
    job_id: str | None = None
    share: float = 1.0  # its owner's fair-share weight
    max_slots: int | None = None  # its owner's cap on running slots


class TokenCreated(msgspec.Struct):
    """A new token, with its secret shown this once."""

    token: TokenInfo
    secret: str


class AuditEntry(msgspec.Struct):
    """Who did what, and when."""

    seq: int
    time: float
    actor: str
    token_id: str
    action: str
    target: str
    detail: str


class TasksAdd(Request):
    """Add tasks to an existing job (how a running task submits children)."""

    tasks: list[TaskSpec]

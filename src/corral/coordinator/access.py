"""Who may do what: bearer tokens to principals, and the role and ownership rules.

Tokens are 256-bit random secrets; the store keeps only their sha256. A fast hash is enough
because nobody can guess a 256-bit secret, so a slow password hash (bcrypt, argon2) would only
add its cost to every request. Every request looks its token up in the store, with no cache,
so a revoked or expired token fails on its very next use.

Job tokens, handed to each leased task, are not stored: a job token names the task and its
lease, with an HMAC of both under a key only the coordinator knows. It works while that lease
is the task's live lease (`Store.live_lease`: running, not past its expiry), so it stops when
the attempt ends (finished, killed, expired, requeued or given back) and keeps working across
extensions, with one indexed read per request and nothing written.

Rejected: an expiry inside the token, refreshed by heartbeats, would need the worker to hand
each task a new token mid-run (its environment is fixed at start) and would outlive a kill
until it ran out.

    admin   every operation, every job, worker and blob
    submit  JOB_OPS on jobs it owns, blobs it uploaded or its jobs produced, list workers
    worker  WORKER_OPS, for workers it registered and the tasks they hold
    job     reading and adding to one job (JOB_SCOPED_OPS)
    metrics `GET /metrics` (metrics.py), nothing else
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from .store import Store, TokenRecord

JOB_OPS = frozenset(
    {"create_job", "list_jobs", "get_job", "list_tasks", "kill_job", "job_events", "add_tasks"}
    | {"retry_job", "get_task", "kill_task", "task_log", "list_checkpoints", "find_ids"}
)
BLOB_OPS = frozenset({"missing_blobs", "put_blob", "get_blob"})
WORKER_OPS = frozenset(
    {"register_worker", "heartbeat", "lease", "deregister", "task_result", "worker_results"}
    | {"save_checkpoint"}
)
JOB_SCOPED_OPS = frozenset(
    {"get_job", "list_tasks", "job_events", "add_tasks", "get_task", "task_log", "task_blocked"}
    | {"list_checkpoints"}
)

#: role -> operations (handler names) it may call; admin may call everything
ROLE_OPS: dict[str, frozenset[str]] = {
    "submit": JOB_OPS | BLOB_OPS | {"list_workers"},
    "worker": WORKER_OPS | BLOB_OPS | {"list_allowed"},  # workers enforce the allowlist
    "job": JOB_SCOPED_OPS | BLOB_OPS,
    "metrics": frozenset({"metrics"}),
}

_JOB_PREFIX = "crj_"


@dataclass(frozen=True)
class Principal:
    """The identity behind a request's token."""

    token_id: str
    name: str
    role: str
    owner: str
    job_id: str | None = None
    task_id: str | None = None  # a job token's: the task it was handed to

    @property
    def is_admin(self) -> bool:
        """Admins pass every ownership check."""
        return self.role == "admin"


def new_secret() -> str:
    """A fresh token secret: 256 random bits, URL-safe."""
    return "crl_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """What the store keeps of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(
    name: str, role: str, owner: str, now: float, lifetime: float | None = None
) -> tuple[TokenRecord, str]:
    """A token to store and its secret (shown once, never stored); `lifetime` in seconds."""
    secret = new_secret()
    record = TokenRecord(
        id="tok_" + uuid.uuid4().hex[:12],
        name=name,
        role=role,
        owner=owner,
        secret_sha256=hash_secret(secret),
        created=now,
        expires=None if lifetime is None else now + lifetime,
    )
    return record, secret


def may_call(principal: Principal, operation: str) -> bool:
    """Whether the principal's role allows this operation at all."""
    return principal.is_admin or operation in ROLE_OPS.get(principal.role, frozenset())


def may_use_job(principal: Principal, job_id: str, job_owner: str) -> bool:
    """Whether the principal may read or act on this job."""
    if principal.is_admin:
        return True
    if principal.role == "job":
        return principal.job_id == job_id
    return principal.role == "submit" and principal.owner == job_owner


def token_problem(token: TokenRecord, now: float) -> str | None:
    """Why a stored token may not be used now, or None."""
    if token.revoked is not None:
        return "the token was revoked"
    if token.expires is not None and token.expires <= now:
        return "the token has expired"
    return None


class JobTokens:
    """Mints and checks job-scoped tokens without storing them."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, task_id: str, lease_id: str) -> str:
        msg = f"{task_id}.{lease_id}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def mint(self, task_id: str, lease_id: str) -> str:
        """The token for one lease of one task: `crj_<task>.<lease>.<mac>`."""
        return f"{_JOB_PREFIX}{task_id}.{lease_id}.{self._mac(task_id, lease_id)}"

    def lease_of(self, secret: str) -> tuple[str, str] | None:
        """The `(task_id, lease_id)` a job token is for, or None when it is not a valid one."""
        if not secret.startswith(_JOB_PREFIX):
            return None
        parts = secret[len(_JOB_PREFIX) :].split(".")
        if len(parts) != 3:
            return None
        task_id, lease_id, mac = parts
        if not hmac.compare_digest(mac, self._mac(task_id, lease_id)):
            return None
        return task_id, lease_id


def authenticate(store: Store, job_tokens: JobTokens, secret: str, now: float) -> Principal | str:
    """The principal a secret stands for, or why it is refused."""
    lease = job_tokens.lease_of(secret)
    if lease is not None:
        live = store.live_lease(*lease, now)
        if live is None:
            return "the token's task lease has ended"
        job_id, owner = live
        return Principal(f"job:{job_id}", f"job {job_id}", "job", owner, job_id, lease[0])
    token = store.token_by_hash(hash_secret(secret))
    if token is None:
        return "unknown token"
    problem = token_problem(token, now)
    if problem:
        return problem
    return Principal(token.id, token.name, token.role, token.owner, token.job_id)


__all__ = [
    "JobTokens",
    "Principal",
    "ROLE_OPS",
    "authenticate",
    "hash_secret",
    "may_call",
    "may_use_job",
    "new_secret",
    "token_problem",
]

"""Rows and wire models: the columns every backend keeps, in one order, and the one
conversion between rows and Jobs, Tasks, Workers, tokens and audit entries; also the small
encodings the store's SQL shares (requirement classes, lease ids, finish arguments).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec

from ...protocol import (
    TASK_STATUSES,
    AuditEntry,
    Job,
    OutputFile,
    Task,
    TaskSpec,
    Worker,
    slots_needed,
)
from .base import Outcome, TokenRecord, job_status

__all__ = [
    "AUDIT_COLUMNS",
    "JOB_COLUMNS",
    "TASK_COLUMNS",
    "TOKEN_COLUMNS",
    "WORKER_COLUMNS",
    "audit_from_row",
    "class_requires",
    "class_slots",
    "encode",
    "finish_args",
    "fitting_classes",
    "job_counts",
    "job_from_row",
    "new_lease_id",
    "requires_key",
    "spec_decoder",
    "task_from_row",
    "token_from_row",
    "unique_runs",
    "worker_from_row",
]

# Shared by the backends: how rows are encoded and turned back into wire models. Every backend
# keeps the same columns in the same order, so one conversion serves them all.

TASK_COLUMNS = (
    "id, job_id, seq, status, spec, attempts, max_attempts, worker_id, exit_code, error,"
    " stdout, stderr, manifest, created, started, finished, not_before, peak_memory,"
    " cpu_seconds"
)
JOB_COLUMNS = "id, name, owner, created, total, speculative, priority"
WORKER_COLUMNS = "id, name, slots, status, capabilities, registered, last_heartbeat"


def new_lease_id() -> str:
    """128 random bits in hex, as uuid4().hex was, at a fifth of its cost."""
    return os.urandom(16).hex()


def finish_args(outcome: Outcome, now: float) -> tuple[Any, ...]:
    """The values FINISH sets, in its order."""
    return (
        outcome.status,
        outcome.exit_code,
        outcome.error,
        outcome.stdout,
        outcome.stderr,
        encode(outcome.manifest),
        None if outcome.status == "queued" else now,
        outcome.not_before,
        outcome.peak_memory,
        outcome.cpu_seconds,
        outcome.status,
    )


def unique_runs(
    items: Sequence[tuple[str, str, Outcome]], limit: int = 512
) -> list[list[tuple[str, str, Outcome]]]:
    """Consecutive runs of at most `limit` results with no task twice in a run: each run can
    be recorded by one statement with the same effect as recording its results one by one."""
    runs: list[list[tuple[str, str, Outcome]]] = [[]]
    seen: set[str] = set()
    for item in items:
        if item[0] in seen or len(runs[-1]) >= limit:
            runs.append([])
            seen = set()
        runs[-1].append(item)
        seen.add(item[0])
    return runs if runs[0] else []


encode = msgspec.json.encode
spec_decoder = msgspec.json.Decoder(TaskSpec)
_manifest_decoder = msgspec.json.Decoder(dict[str, OutputFile])
_caps_decoder = msgspec.json.Decoder(dict[str, object])


def requires_key(spec: TaskSpec) -> str:
    """A canonical text for a task's requirements, so equal requirements share a queue."""
    return encode(dict(sorted(spec.requires.items()))).decode() if spec.requires else ""


def class_slots(key: str) -> int:
    """Slots each task of a requirement class (a `requires_key` text) takes."""
    return slots_needed(class_requires(key))


def class_requires(key: str) -> dict[str, str]:
    """The requirement map of a `requires_key` text."""
    out: dict[str, str] = msgspec.json.decode(key) if key else {}
    return out


def fitting_classes(keys: Iterable[str], fits: Callable[[dict[str, str]], bool]) -> list[str]:
    """The requirement classes (as `requires_key` texts) a worker's `fits` accepts."""
    out = []
    for key in keys:
        requires: dict[str, str] = msgspec.json.decode(key) if key else {}
        if fits(requires):
            out.append(key)
    return out


def job_counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Per-status task counts from (status, count) rows, every status present."""
    counts: dict[str, int] = dict.fromkeys(TASK_STATUSES, 0)
    for status, n in rows:
        counts[status] = n
    return counts


def job_from_row(row: Sequence[Any], counts: dict[str, int]) -> Job:
    """A Job from a JOB_COLUMNS row and its counts."""
    return Job(
        id=row[0],
        name=row[1],
        owner=row[2],
        created=row[3],
        total=row[4],
        counts=counts,
        status=job_status(counts),  # type: ignore[arg-type]
        speculative=bool(row[5]),
        priority=row[6],
    )


def task_from_row(row: Sequence[Any]) -> Task:
    """A Task from a TASK_COLUMNS row."""
    spec = spec_decoder.decode(row[4])
    return Task(
        id=row[0],
        job_id=row[1],
        seq=row[2],
        status=row[3],
        name=spec.name,
        argv=spec.argv,
        env=spec.env,
        inputs=spec.inputs,
        outputs=spec.outputs,
        requires=spec.requires,
        limits=spec.limits,
        shell=spec.shell,
        attempts=row[5],
        max_attempts=row[6],
        worker_id=row[7],
        exit_code=row[8],
        error=row[9],
        stdout=row[10],
        stderr=row[11],
        manifest=_manifest_decoder.decode(row[12]) if row[12] else {},
        created=row[13],
        started=row[14],
        finished=row[15],
        retries=spec.retries,
        not_before=row[16],
        after=spec.after,
        peak_memory=row[17],
        cpu_seconds=row[18],
    )


def worker_from_row(row: Sequence[Any], used: int) -> Worker:
    """A Worker from a WORKER_COLUMNS row and the number of tasks it is running."""
    return Worker(
        id=row[0],
        name=row[1],
        slots=row[2],
        slots_used=used,
        status=row[3],
        capabilities=_caps_decoder.decode(row[4]),
        registered=row[5],
        last_heartbeat=row[6],
    )


TOKEN_COLUMNS = "id, name, role, owner, secret_sha256, created, expires, revoked, job_id"
AUDIT_COLUMNS = "seq, time, actor, token_id, action, target, detail"


def token_from_row(row: Sequence[Any]) -> TokenRecord:
    """A TokenRecord from a TOKEN_COLUMNS row."""
    return TokenRecord(*row)


def audit_from_row(row: Sequence[Any]) -> AuditEntry:
    """An AuditEntry from an AUDIT_COLUMNS row."""
    return AuditEntry(*row)

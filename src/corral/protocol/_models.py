"""Wire models shared by the coordinator, workers and clients.

Every body that crosses HTTP is one of these msgspec structs. Request structs forbid unknown
fields so a typo in a script fails loudly instead of being ignored.

Task lifecycle::

    queued --lease--> running --complete--> succeeded | failed
       ^                 |
       +---lease expired-+   (attempts < max_attempts, else failed)
       +---failed--------+   (only with retries left: queued again, leased after not_before)
       +---given back----+   (evicted: not counted as an attempt, resumes from its checkpoint)
    queued | running --kill--> killed
    running --kill with checkpoint--> (evicted: SIGTERM, grace, checkpoint saved) --> killed
    failed | killed --retry--> queued   (killed ones only when asked; from their last checkpoint)
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from ._bounds import (
    Attempts,
    Count,
    ExitCode,
    Fact,
    FileMode,
    LimitValue,
    Offset,
    Priority,
    Retries,
    Seconds,
    Slots,
)

TaskStatus = Literal["queued", "running", "succeeded", "failed", "killed"]
TASK_STATUSES: tuple[TaskStatus, ...] = ("queued", "running", "succeeded", "failed", "killed")
FINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "killed"})
JobStatus = Literal["queued", "running", "succeeded", "failed", "killed"]
WorkerStatus = Literal["online", "draining", "lost", "gone", "idle-wait", "suspended"]
# what a worker in desktop mode (--when-idle) says of itself in heartbeats
IdleStatus = Literal["online", "idle-wait", "suspended"]
# why a worker gave a task back (TaskRelease): no slot came free in time; the desktop's owner
# came back; the worker is shutting down; the coordinator asked (drain --evict, kill
# --checkpoint)
ReleaseReason = Literal["busy", "owner", "shutdown", "evicted"]


class Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base for bodies clients send: unknown fields are an error."""


class InputRef(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A file to place in the task directory, by content hash."""

    sha256: str
    size: Offset
    mode: FileMode = 0o644


class OutputFile(msgspec.Struct, forbid_unknown_fields=True):
    """One returned file in a task's output manifest."""

    sha256: str
    size: Offset
    mode: FileMode = 0o644


class AfterFile(msgspec.Struct, forbid_unknown_fields=True):
    """A file a dependency (a task in `after`) returned, to stage as an input once it succeeded."""

    task: str
    path: str


class TaskSpec(Request):
    """What a task runs. `inputs` maps a relative path in the task directory to a blob."""

    argv: list[str]
    env: dict[str, str] = {}
    inputs: dict[str, InputRef] = {}
    outputs: list[str] = []
    requires: dict[str, str] = {}
    limits: dict[str, LimitValue] = {}
    shell: bool = False
    max_attempts: Attempts = 3
    name: str = ""
    retries: Retries = 0  # re-run a failed attempt (non-zero exit) up to this many times
    after: list[str] = []  # hold until these tasks (ids) have succeeded; see coordinator/deps.py
    after_index: list[Count] = []  # ... or these earlier tasks of the same submission
    after_inputs: dict[str, AfterFile] = {}  # name in the task directory -> a dependency's file
    priority: Priority | None = None  # within its owner's queue, higher first; None: its job's


# A blob this small may travel inside a JSON body (by its sha256) rather than on its own:
# a function task's call, its result, most tasks' stdout and stderr. Saves a round trip each.
INLINE_MAX = 64 * 1024
# ... and inside a lease, where the same function may go with every task, this small
INLINE_LEASE_MAX = 8 * 1024
# at most this much inline content in one result or one event (the rest goes on its own)
INLINE_TOTAL = 1024 * 1024


class JobCreate(Request):
    """Submit a job: a name and its tasks; `blobs` carries small inputs (sha256 -> content,
    each at most INLINE_MAX bytes), stored as if uploaded first. With `speculative`, a task
    running well past the median of its phase (the job's tasks of the same name) gets a backup
    attempt on another worker; the first to succeed is recorded (coordinator/speculation.py)."""

    tasks: list[TaskSpec]
    name: str = ""
    blobs: dict[str, bytes] = {}
    speculative: bool = False  # back up stragglers (coordinator/speculation.py)
    priority: Priority = 0  # its tasks' unless they set their own (coordinator/fairshare.py)


class Spread(msgspec.Struct):
    """How a figure spreads over a job's finished tasks."""

    median: float
    p95: float  # nearest rank: at least 95% of the tasks are at or below it
    max: float


class JobUsage(msgspec.Struct):
    """What a job's finished tasks used, where measured (`min_memory=auto` sizes by it)."""

    measured: int  # finished tasks with a measured peak memory or CPU time
    peak_memory: Spread | None = None  # bytes
    cpu_seconds: Spread | None = None


class Job(msgspec.Struct):
    """A job as the API reports it; `usage` only when one job is read."""

    id: str
    name: str
    owner: str
    status: JobStatus
    created: float
    counts: dict[str, int]
    total: int
    speculative: bool = False
    usage: JobUsage | None = None
    priority: int = 0


class JobCreated(Job):
    """The answer to a submit: the job, and its tasks' ids in submission order."""

    task_ids: list[str] = []


class LiveUsage(msgspec.Struct, forbid_unknown_fields=True):
    """What a running task's process tree uses now, sampled by its worker with each heartbeat
    (psutil); `sampled` is when the coordinator heard it, on its clock."""

    cpu_percent: Annotated[float, msgspec.Meta(ge=0, le=1e6)]  # of one core: 250 = 2.5 cores
    memory: Offset  # resident bytes now
    peak_memory: Offset  # the most resident bytes any sample of this attempt saw
    cpu_seconds: Seconds  # CPU time of its processes so far
    sampled: Seconds = 0.0


class Task(msgspec.Struct):
    """A task as the API reports it."""

    id: str
    job_id: str
    seq: int
    name: str
    status: TaskStatus
    argv: list[str]
    env: dict[str, str]
    inputs: dict[str, InputRef]
    outputs: list[str]
    requires: dict[str, str]
    limits: dict[str, float]
    shell: bool
    attempts: int
    max_attempts: int
    worker_id: str | None
    exit_code: int | None
    error: str | None
    stdout: str | None
    stderr: str | None
    manifest: dict[str, OutputFile]
    created: float
    started: float | None
    finished: float | None
    retries: int = 0
    not_before: float | None = None  # a queued retry is not leased before this time
    pending_reason: str | None = None  # why a queued task is not running (single-task reads)
    after: list[str] = []  # the tasks it waited for (dependencies)
    # what its last attempt used, measured where the worker gave it a cgroup (else None)
    peak_memory: int | None = None  # bytes
    cpu_seconds: float | None = None
    live: LiveUsage | None = None  # a running task's latest sample (from its worker)


class IdMatch(msgspec.Struct):
    """A job or task whose id starts with a given prefix (what `GET /ids` answers)."""

    kind: Literal["job", "task"]
    id: str
    job_id: str
    name: str


class Worker(msgspec.Struct):
    """A worker as the API reports it."""

    id: str
    name: str
    slots: int
    slots_used: int
    status: WorkerStatus
    capabilities: dict[str, Any]
    registered: float
    last_heartbeat: float


class WorkerRegister(Request):
    """A worker introduces itself."""

    name: str
    slots: Slots
    capabilities: dict[str, Fact] = {}


class WorkerRegistered(msgspec.Struct):
    """The coordinator's answer to a registration."""

    id: str
    heartbeat_interval: float
    lease_timeout: float


class LeaseRequest(Request):
    """Ask for up to `max` tasks, waiting up to `wait` seconds for one to appear.

    `results` carries attempts the worker finished since its last call (task id -> result):
    they are recorded first, in one transaction, so their slots count as free for this lease.
    """

    max: Count = 1
    wait: Seconds = 0.0
    results: dict[str, TaskResult] = {}
    # how many of `max` may go beyond the worker's slots, queued locally because its recent
    # tasks were short (worker/prefetch.py): only tasks of `prefetch_job`, the job those were
    # of, and only ones queued when asked; the coordinator caps it
    prefetch: Count = 0
    prefetch_job: str = ""


class Checkpoint(msgspec.Struct):
    """A task's saved checkpoint handed to a worker with a lease: restore these files into
    its checkpoint directory, then start it (protocol/_checkpoints.py)."""

    n: int
    files: dict[str, OutputFile]


class Assignment(msgspec.Struct):
    """One leased task: everything the worker needs to run it."""

    task_id: str
    job_id: str
    lease_id: str
    attempt: int
    expires: float
    spec: TaskSpec
    token: str = ""  # job-scoped bearer token: the task may read and add to its own job
    inline: dict[str, bytes] = {}  # small input blobs (sha256 -> content): no fetch needed
    owner: str = ""  # who submitted the job: a function runner serves one owner's tasks
    checkpoint: Checkpoint | None = None  # the one to start from (coordinator/checkpoints.py)


class LeaseGrant(msgspec.Struct):
    """The tasks handed to a worker in one lease call, and what became of the results it
    carried: `stale` ones were not recorded (the lease had moved on: killed, expired, or
    another attempt won), `refused` ones were malformed (task id -> why)."""

    assignments: list[Assignment]
    stale: list[str] = []
    refused: dict[str, str] = {}


class WorkerResults(Request):
    """Several finished attempts of one worker (task id -> result), recorded in one
    transaction; the worker sends these when no lease call of its is about to carry them."""

    results: dict[str, TaskResult]


class ResultsReply(msgspec.Struct):
    """What became of a batch of results (see LeaseGrant)."""

    stale: list[str] = []
    refused: dict[str, str] = {}


class LogChunk(msgspec.Struct, forbid_unknown_fields=True):
    """New bytes of a running task's stdout or stderr, sent with heartbeats."""

    task_id: str
    lease_id: str
    stream: Literal["stdout", "stderr"]
    offset: Offset
    data: bytes


class TaskSample(msgspec.Struct, forbid_unknown_fields=True):
    """One running task's usage, sent with heartbeats."""

    task_id: str
    lease_id: str
    usage: LiveUsage


class Heartbeat(Request):
    """A worker is alive; `leases` are the leases it still holds."""

    leases: list[str] = []
    logs: list[LogChunk] = []
    capabilities: dict[str, Fact] = {}
    wait: Seconds = 0.0
    draining: bool = False
    status: IdleStatus = "online"  # desktop mode: idle-wait or suspended
    blocked: list[str] = []  # the tasks it was last told are blocked (HeartbeatReply)
    evicting: list[str] = []  # the leases it was last told to evict (HeartbeatReply)
    usage: list[TaskSample] = []  # what its running tasks use now


class HeartbeatReply(msgspec.Struct):
    """Leases the worker must stop (killed or no longer its own); programs to look for on
    PATH and report; whether the operator asked it to drain; leases to evict: SIGTERM, a
    grace period, the checkpoint saved, then the task given back (worker/eviction.py)."""

    cancel: list[str]
    probe: list[str] = []
    drain: bool = False
    blocked: list[str] = []  # this worker's tasks now waiting on their children: slots free
    evict: list[str] = []


class TaskRelease(Request):
    """Give a running task back to the queue without counting the attempt, fenced by its
    lease id (after a checkpoint, when it ran); a task the coordinator asked to evict for a
    kill ends killed instead."""

    lease_id: str
    reason: ReleaseReason = "busy"


class KillOptions(Request):
    """How to kill (`POST /tasks/{id}/kill`, `/jobs/{id}/kill`; no body: at once). With
    `checkpoint`, a running task is evicted first (SIGTERM, its worker's grace period, its
    checkpoint saved) and ends killed with its checkpoints kept, for a retry to resume."""

    checkpoint: bool = False


class DrainOptions(Request):
    """How to drain (`POST /workers/{id}/drain`; no body: let running tasks finish). With
    `evict`, its running tasks are evicted (checkpoint saved) and requeued, not counting
    the attempt, to resume elsewhere."""

    evict: bool = False


class RetryOptions(Request):
    """What `POST /jobs/{id}/retry` requeues: the failed tasks, and with `killed` the
    killed ones too (each resumes from its last good checkpoint, if it saved one)."""

    killed: bool = False


class TaskResult(Request):
    """A finished attempt, fenced by its lease id."""

    lease_id: str
    exit_code: ExitCode | None
    stdout: str | None = None
    stderr: str | None = None
    manifest: dict[str, OutputFile] = {}
    error: str | None = None
    # new small blobs among stdout, stderr and the manifest (sha256 -> content, each at most
    # INLINE_MAX bytes): stored with the result instead of uploaded before it
    inline: dict[str, bytes] = {}
    # measured in the task's cgroup, when the worker gave it one: peak bytes, CPU seconds
    peak_memory: Offset | None = None  # bytes
    cpu_seconds: Seconds | None = None
    restored: Count | None = None  # the checkpoint (its n) this attempt started from


class TaskBlocked(Request):
    """A running task says it is (or no longer is) waiting on tasks it submitted."""

    blocked: bool


class MissingBlobs(Request):
    """Which of these hashes the coordinator lacks."""

    sha256: list[str]


class MissingBlobsReply(msgspec.Struct):
    """Hashes to upload."""

    missing: list[str]


class Event(msgspec.Struct):
    """A task changed state."""

    seq: int
    job_id: str
    task_id: str
    status: TaskStatus
    exit_code: int | None
    time: float
    # asked for with ?detail=1, for final statuses: the task, and its small output files and
    # stderr (sha256 -> content), so a client learns a result without further requests
    task: Task | None = None
    files: dict[str, bytes] = {}


class ErrorBody(msgspec.Struct):
    """Every 4xx and 5xx answer has this shape."""

    error: str
    detail: str

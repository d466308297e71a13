"""The sans-IO core shared by Client and AsyncClient.

Each API operation is written once, as a generator that yields `Call`s (what to send) and
receives `Reply`s (what came back), returning the decoded answer. A transport only moves
bytes: the sync Client drives these generators with httpx.Client, the AsyncClient with
httpx.AsyncClient. Multi-step operations (paging, find-then-act, fetch) live here too, so the
two clients cannot drift apart. The same idea as h11 or httpx's transports.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from ..protocol import (
    FINAL_STATUSES,
    INLINE_MAX,
    CheckpointInfo,
    DrainOptions,
    Event,
    IdMatch,
    InputRef,
    Job,
    JobCreate,
    JobCreated,
    KillOptions,
    MissingBlobsReply,
    RetryOptions,
    Task,
    TaskBlocked,
    TasksAdd,
    TaskSpec,
    Worker,
)
from ._errors import ApiError, NotFoundError

T = TypeVar("T")
CHUNK = 1024 * 1024
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Call:
    """One HTTP request to send; `path` is under /api/v1."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    upload: Path | None = None  # stream this file as the body
    download: Path | None = None  # stream the body into this file
    blob: bool = False  # moves a blob's bytes: over HTTP, never the channel (_async.py)

    @property
    def target(self) -> str:
        """The path with its query, as the channel carries it."""
        return self.path + ("?" + str(httpx.QueryParams(self.params)) if self.params else "")


@dataclass(frozen=True)
class Reply:
    """What came back; `content` is empty when the body went to `Call.download`."""

    status: int
    headers: dict[str, str]
    content: bytes


Op = Generator[Call, Reply, T]


def error_for(status: int, content: bytes, reason: str = "") -> ApiError | None:
    """The error an answer stands for, or None when it succeeded."""
    if status < 400:
        return None
    try:
        body = msgspec.json.decode(content)
        code, detail = str(body["error"]), str(body["detail"])
    except (msgspec.DecodeError, KeyError, TypeError):
        code, detail = "http_error", content[:200].decode(errors="replace") or reason
    kind = NotFoundError if status == 404 else ApiError
    return kind(status, code, detail)


def check(reply: Reply) -> Reply:
    """Raise the error an answer stands for."""
    error = error_for(reply.status, reply.content)
    if error is not None:
        raise error
    return reply


def _json(method: str, path: str, kind: type[T], body: Any = None, **params: Any) -> Op[T]:
    content = None if body is None else msgspec.json.encode(body)
    headers = JSON if content is not None else {}
    reply = yield Call(method, path, params or None, headers, content)
    return msgspec.json.decode(check(reply).content, type=kind)


# files
def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def input_files(path: Path) -> list[tuple[str, Path]]:
    """(name in the task directory, local file) for a file or, recursively, a directory."""
    if path.is_file():
        return [(path.name, path)]
    if path.is_dir():
        base = path.resolve()
        return [
            (f"{base.name}/{p.relative_to(base).as_posix()}", p)
            for p in sorted(base.rglob("*"))
            if p.is_file() and not p.is_symlink()
        ]
    raise FileNotFoundError(f"input {path} does not exist")


@dataclass
class UploadPlan:
    """Hashed local inputs: per path its task-relative refs, and each distinct file by hash."""

    refs: list[dict[str, InputRef]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


# a file's identity while unchanged: (path, device, inode, size, mtime in ns)
FileKey = tuple[str, int, int, int, int]


def plan_uploads(paths: Sequence[Path], memo: dict[FileKey, str] | None = None) -> UploadPlan:
    """Hash files and directories (local file I/O only; no network). With `memo`, a file
    seen before and unchanged since is not hashed again (many tasks sharing a big input)."""
    plan = UploadPlan()
    memo = {} if memo is None else memo
    for path in paths:
        refs = {}
        for name, file in input_files(path):
            st = file.stat()
            key = (str(file), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            sha = memo.get(key) or sha256_file(file)
            memo[key] = sha
            refs[name] = InputRef(sha, st.st_size, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)
            plan.files[sha] = file
        plan.refs.append(refs)
    return plan


def missing(hashes: Iterable[str]) -> Op[list[str]]:
    """Which of these blobs the coordinator lacks."""
    wanted = list(dict.fromkeys(hashes))
    if not wanted:
        return []
    reply = yield from _json("POST", "/blobs/missing", MissingBlobsReply, {"sha256": wanted})
    return reply.missing


def put_blob(sha: str, data: Path | bytes) -> Op[None]:
    """Upload one blob, from a file (streamed) or from memory."""
    if isinstance(data, Path):
        check((yield Call("PUT", f"/blobs/{sha}", upload=data, blob=True)))
    else:
        check((yield Call("PUT", f"/blobs/{sha}", content=data, blob=True)))


def upload(blobs: dict[str, Path | bytes]) -> Op[None]:
    """Upload those of these blobs (by hash) that the coordinator lacks."""
    for sha in (yield from missing(blobs)):
        yield from put_blob(sha, blobs[sha])


def upload_plan(plan: UploadPlan) -> Op[list[dict[str, InputRef]]]:
    """Upload a plan's files; for each planned path, its refs."""
    yield from upload(dict(plan.files))
    return plan.refs


def read_blob(sha: str) -> Op[bytes]:
    """One blob, in memory."""
    reply = yield Call("GET", f"/blobs/{sha}", blob=True)
    return check(reply).content


def download(sha: str, dest: Path, mode: int = 0o644) -> Op[None]:
    """Write one blob to `dest`, atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    check((yield Call("GET", f"/blobs/{sha}", download=tmp, blob=True)))
    tmp.chmod(mode)
    os.replace(tmp, dest)


# jobs, tasks, workers
def submit_job(
    tasks: list[TaskSpec],
    name: str = "",
    blobs: dict[str, bytes] | None = None,
    speculative: bool = False,
    priority: int = 0,
) -> Op[JobCreated]:
    """Submit tasks as one job; `blobs`, small inputs (by hash), go in the same request;
    `speculative` gives stragglers a backup attempt on another worker; `priority` orders the
    job's tasks among the owner's queued ones (higher first; a task may set its own)."""
    body = JobCreate(tasks, name, blobs or {}, speculative, priority)
    return (yield from _json("POST", "/jobs", JobCreated, body))


def split_inline(
    blobs: dict[str, Path | bytes], budget: int = 4 * INLINE_MAX
) -> tuple[dict[str, bytes], dict[str, Path | bytes]]:
    """Small in-memory blobs to send inside a submit (up to `budget` bytes in all), and the
    rest, to upload on their own."""
    inline: dict[str, bytes] = {}
    rest: dict[str, Path | bytes] = {}
    for sha, data in blobs.items():
        if isinstance(data, bytes) and len(data) <= min(INLINE_MAX, budget):
            inline[sha] = data
            budget -= len(data)
        else:
            rest[sha] = data
    return inline, rest


def add_tasks(job_id: str, tasks: list[TaskSpec]) -> Op[list[Task]]:
    """Add tasks to an existing job (a running task forking children, client/_current.py)."""
    body = TasksAdd(tasks=tasks)
    return (yield from _json("POST", f"/jobs/{job_id}/tasks", list[Task], body))


def jobs(
    limit: int = 100, status: str | None = None, owner: str | None = None, offset: int = 0
) -> Op[list[Job]]:
    """Newest jobs first; optionally of one status, or (an admin asking) one owner's."""
    wanted = {"status": status, "owner": owner, "offset": offset or None}
    params = {k: v for k, v in wanted.items() if v is not None}
    return (yield from _json("GET", "/jobs", list[Job], limit=limit, **params))


def find_ids(prefix: str, name: str | None = None, limit: int = 20) -> Op[list[IdMatch]]:
    """Jobs and tasks whose id starts with `prefix` (hex); with `name`, the tasks of that name
    in the jobs it starts."""
    params = {"prefix": prefix, "limit": limit, **({} if name is None else {"name": name})}
    return (yield from _json("GET", "/ids", list[IdMatch], **params))


def job(job_id: str) -> Op[Job]:
    """One job."""
    return (yield from _json("GET", f"/jobs/{job_id}", Job))


def tasks(job_id: str, page: int = 1000) -> Op[list[Task]]:
    """All of a job's tasks, in submission order."""
    out: list[Task] = []
    while True:
        got = yield from _json(
            "GET", f"/jobs/{job_id}/tasks", list[Task], offset=len(out), limit=page
        )
        out += got
        if len(got) < page:
            return out


def task(task_id: str) -> Op[Task]:
    """One task."""
    return (yield from _json("GET", f"/tasks/{task_id}", Task))


def checkpoints(task_id: str) -> Op[list[CheckpointInfo]]:
    """A task's saved checkpoints, oldest first."""
    return (yield from _json("GET", f"/tasks/{task_id}/checkpoints", list[CheckpointInfo]))


def workers() -> Op[list[Worker]]:
    """All workers the coordinator knows."""
    return (yield from _json("GET", "/workers", list[Worker]))


def drain_worker(worker_id: str, evict: bool = False) -> Op[Worker]:
    """Ask a worker to finish its running tasks, take no new ones, and leave."""
    body = DrainOptions(evict) if evict else None
    return (yield from _json("POST", f"/workers/{worker_id}/drain", Worker, body))


def find(some_id: str) -> Op[Job | Task]:
    """A job or a task by its id."""
    try:
        return (yield from job(some_id))
    except NotFoundError:
        pass
    try:
        return (yield from task(some_id))
    except NotFoundError:
        raise NotFoundError(404, "not_found", f"no job or task {some_id}") from None


def kill(some_id: str, checkpoint: bool = False) -> Op[Job | Task]:
    """Kill a job's live tasks, or one task (running ones after a checkpoint, if asked)."""
    found = yield from find(some_id)
    kind = "jobs" if isinstance(found, Job) else "tasks"
    body = KillOptions(checkpoint) if checkpoint else None
    return (yield from _json("POST", f"/{kind}/{some_id}/kill", type(found), body))


def retry(job_id: str, killed: bool = False) -> Op[Job]:
    """Requeue a job's failed tasks, and with `killed` its killed ones."""
    body = RetryOptions(killed) if killed else None
    return (yield from _json("POST", f"/jobs/{job_id}/retry", Job, body))


def kill_task(task_id: str) -> Op[Task]:
    """Kill one task by id (no lookup first)."""
    return (yield from _json("POST", f"/tasks/{task_id}/kill", Task))


def log(
    task_id: str, stream: str = "stdout", offset: int = 0, tail: int = 0
) -> Op[tuple[bytes, bool]]:
    """Bytes of a task's output from `offset` (or its last `tail` bytes), and whether no more
    will come."""
    params = {"stream": stream, "offset": offset, **({"tail": tail} if tail else {})}
    reply = check((yield Call("GET", f"/tasks/{task_id}/log", params)))
    return reply.content, reply.headers.get("x-corral-final") == "1"


def folder_names(todo: Sequence[Task], by_name: bool) -> list[str]:
    """A folder per task: its id, or with `by_name` its name where that is unique and safe
    (a task without one, or sharing it, keeps its id)."""
    if not by_name:
        return [t.id for t in todo]
    counts = Counter(t.name for t in todo)
    usable = {n for n, k in counts.items() if k == 1 and n and "/" not in n and n not in ".."}
    return [t.name if t.name in usable else t.id for t in todo]


def fetch(some_id: str, to: Path, by_name: bool = False) -> Op[list[Path]]:
    """Write each finished task's files, stdout and stderr to `to/<task-id>/` (with
    `by_name`, `to/<task-name>/` where names are unique)."""
    found = yield from find(some_id)
    todo = (yield from tasks(found.id)) if isinstance(found, Job) else [found]
    todo = [t for t in todo if t.status in FINAL_STATUSES]
    written = []
    for t, folder in zip(todo, folder_names(todo, by_name), strict=True):
        base = to / folder
        base.mkdir(parents=True, exist_ok=True)
        for rel, entry in t.manifest.items():
            yield from download(entry.sha256, base / rel, entry.mode)
        for stream in ("stdout", "stderr"):
            sha = getattr(t, stream)
            if sha:
                yield from download(sha, base / stream)
            else:
                (base / stream).write_bytes(b"")
        written.append(base)
    return written


def set_blocked(task_id: str, blocked: bool) -> Op[Task]:
    """Tell the coordinator a running task waits on tasks it submitted (or no longer does)."""
    return (yield from _json("POST", f"/tasks/{task_id}/blocked", Task, TaskBlocked(blocked)))


def some_id(thing: Any) -> str:
    """The id of a job, task or task future, or the id itself."""
    if isinstance(thing, str):
        return thing
    found = getattr(thing, "task_id", None) or getattr(thing, "id", None)
    if not found:
        raise ValueError(f"{thing!r} has no task or job id (not submitted yet?)")
    return str(found)


def job_id_of(job_or_id: Job | str) -> str:
    """A job's id, given the job or its id."""
    return job_or_id if isinstance(job_or_id, str) else job_or_id.id


# events
def events_call(job_id: str, after: int, detail: bool = False) -> Call:
    """The request that opens a job's event stream, resuming after event `after`; with
    `detail`, final events carry the task and its small output files."""
    headers = {"last-event-id": str(after), "accept": "text/event-stream"}
    params = {"after": after, "detail": 1} if detail else {"after": after}
    return Call("GET", f"/jobs/{job_id}/events", params, headers)


class SSEDecoder:
    """Server-Sent Events, one line at a time: task events out, `done` once `end` arrives."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.kind = "message"
        self.done = False
        self._rest = ""  # the start of a line whose end has not come yet (feed_text)

    def feed_lines(self, lines: Iterable[str]) -> Iterator[Event]:
        """Take lines (without their newlines); the events they complete, until `end`."""
        for line in lines:
            event = self.feed(line)
            if event is not None:
                yield event
            if self.done:
                return

    def feed_text(self, text: str) -> Iterator[Event]:
        """Take a piece of the stream, which may end mid-line; the events it completes."""
        *lines, self._rest = (self._rest + text).split("\n")
        return self.feed_lines(lines)

    def feed(self, line: str) -> Event | None:
        """Take one line (without its newline); return an event when one is complete."""
        if line.startswith("data:"):
            self.data.append(line[5:].strip())
        elif line.startswith("event:"):
            self.kind = line[6:].strip()
        elif line == "":
            kind, data = self.kind, self.data
            self.data, self.kind = [], "message"
            if kind == "end":
                self.done = True
            elif kind == "task" and data:
                return msgspec.json.decode("\n".join(data), type=Event)
        return None


def parse_sse(lines: Iterable[str]) -> Generator[Event, None, None]:
    """Task events from SSE lines, until the stream's `end`."""
    yield from SSEDecoder().feed_lines(lines)


__all__ = [
    "CHUNK",
    "FileKey",
    "Call",
    "Op",
    "Reply",
    "SSEDecoder",
    "UploadPlan",
    "check",
    "error_for",
    "events_call",
    "find_ids",
    "folder_names",
    "input_files",
    "parse_sse",
    "plan_uploads",
    "sha256_file",
    "some_id",
]

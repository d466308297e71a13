"""The Python API: a synchronous Client over the coordinator's HTTP API."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from ..protocol import (
    FINAL_STATUSES,
    Event,
    InputRef,
    Job,
    JobCreate,
    MissingBlobsReply,
    Task,
    TaskSpec,
    Worker,
)
from ._config import resolve
from ._errors import ApiError, ConfigError, CorralError, NotFoundError, Unreachable

T = TypeVar("T")
_CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
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


class Client:
    """Talks to one coordinator; found from arguments, env vars or the `corral up` config."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 30.0
    ) -> None:
        target = resolve(url, token)
        self.url = target.url
        headers = {"authorization": f"Bearer {target.token}"} if target.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # plumbing
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, "/api/v1" + path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the coordinator at {self.url}: {exc}") from exc
        _raise_for(response)
        return response

    def _call(self, method: str, path: str, kind: type[T], **kwargs: Any) -> T:
        return msgspec.json.decode(self._send(method, path, **kwargs).content, type=kind)

    # jobs and tasks
    def upload_each(self, paths: Sequence[Path]) -> list[dict[str, InputRef]]:
        """Upload what the coordinator lacks; for each path, its task-relative names and refs."""
        per_path: list[dict[str, InputRef]] = []
        local: dict[str, Path] = {}
        for path in paths:
            refs = {}
            for name, file in input_files(path):
                st = file.stat()
                sha = sha256_file(file)
                refs[name] = InputRef(
                    sha, st.st_size, 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                )
                local[sha] = file
            per_path.append(refs)
        if local:
            body = msgspec.json.encode({"sha256": list(local)})
            missing = self._call(
                "POST",
                "/blobs/missing",
                MissingBlobsReply,
                content=body,
                headers={"content-type": "application/json"},
            )
            for sha in missing.missing:
                self.put_blob(sha, local[sha])
        return per_path

    def upload(self, paths: Sequence[Path]) -> dict[str, InputRef]:
        """Upload files and directories; map their task-relative names to refs."""
        merged: dict[str, InputRef] = {}
        for refs in self.upload_each(paths):
            merged.update(refs)
        return merged

    def put_blob(self, sha: str, path: Path) -> None:
        """Stream one file to the blob store."""
        with path.open("rb") as f:
            self._send("PUT", f"/blobs/{sha}", content=iter(lambda: f.read(_CHUNK), b""))

    def submit_job(self, tasks: list[TaskSpec], name: str = "") -> Job:
        """Submit tasks as one job."""
        body = msgspec.json.encode(JobCreate(tasks=tasks, name=name))
        return self._call(
            "POST", "/jobs", Job, content=body, headers={"content-type": "application/json"}
        )

    def jobs(self, limit: int = 100) -> list[Job]:
        """Newest jobs first."""
        return self._call("GET", "/jobs", list[Job], params={"limit": limit})

    def job(self, job_id: str) -> Job:
        """One job."""
        return self._call("GET", f"/jobs/{job_id}", Job)

    def tasks(self, job_id: str) -> list[Task]:
        """All of a job's tasks, in submission order."""
        out: list[Task] = []
        while True:
            page = self._call(
                "GET",
                f"/jobs/{job_id}/tasks",
                list[Task],
                params={"offset": len(out), "limit": 1000},
            )
            out += page
            if len(page) < 1000:
                return out

    def task(self, task_id: str) -> Task:
        """One task."""
        return self._call("GET", f"/tasks/{task_id}", Task)

    def workers(self) -> list[Worker]:
        """All workers the coordinator knows."""
        return self._call("GET", "/workers", list[Worker])

    def find(self, some_id: str) -> Job | Task:
        """A job or a task by its id."""
        try:
            return self.job(some_id)
        except NotFoundError:
            pass
        try:
            return self.task(some_id)
        except NotFoundError:
            raise NotFoundError(404, "not_found", f"no job or task {some_id}") from None

    def kill(self, some_id: str) -> Job | Task:
        """Kill a job's live tasks, or one task."""
        found = self.find(some_id)
        kind = "jobs" if isinstance(found, Job) else "tasks"
        return self._call("POST", f"/{kind}/{some_id}/kill", type(found))

    # output
    def log(self, task_id: str, stream: str = "stdout", offset: int = 0) -> tuple[bytes, bool]:
        """Bytes of a task's output from `offset`, and whether no more will come."""
        response = self._send(
            "GET", f"/tasks/{task_id}/log", params={"stream": stream, "offset": offset}
        )
        return response.content, response.headers.get("x-corral-final") == "1"

    def download(self, sha: str, dest: Path, mode: int = 0o644) -> None:
        """Write one blob to `dest`."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        try:
            with self._http.stream("GET", f"/api/v1/blobs/{sha}") as response:
                _raise_for(response)
                with tmp.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the coordinator at {self.url}: {exc}") from exc
        tmp.chmod(mode)
        os.replace(tmp, dest)

    def fetch(self, some_id: str, to: Path) -> list[Path]:
        """Write each finished task's files, stdout and stderr to `to/<task-id>/`."""
        found = self.find(some_id)
        tasks = self.tasks(found.id) if isinstance(found, Job) else [found]
        written = []
        for task in tasks:
            if task.status not in FINAL_STATUSES:
                continue
            base = to / task.id
            base.mkdir(parents=True, exist_ok=True)
            for rel, entry in task.manifest.items():
                self.download(entry.sha256, base / rel, entry.mode)
            for stream in ("stdout", "stderr"):
                sha = getattr(task, stream)
                if sha:
                    self.download(sha, base / stream)
                else:
                    (base / stream).write_bytes(b"")
            written.append(base)
        return written

    def events(self, job_id: str, after: int = 0) -> Iterator[Event]:
        """Task state changes of a job as they happen, until the job is done (SSE)."""
        headers = {"last-event-id": str(after), "accept": "text/event-stream"}
        try:
            with self._http.stream(
                "GET",
                f"/api/v1/jobs/{job_id}/events",
                headers=headers,
                timeout=httpx.Timeout(30.0, read=60.0),
            ) as response:
                _raise_for(response)
                yield from _parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach the coordinator at {self.url}: {exc}") from exc


def _parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    data: list[str] = []
    kind = "message"
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line == "":
            if kind == "end":
                return
            if kind == "task" and data:
                yield msgspec.json.decode("\n".join(data), type=Event)
            data, kind = [], "message"


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    response.read()
    try:
        body = response.json()
        code, detail = str(body["error"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        code, detail = "http_error", response.text[:200] or response.reason_phrase
    kind = NotFoundError if response.status_code == 404 else ApiError
    raise kind(response.status_code, code, detail)


__all__ = [
    "ApiError",
    "Client",
    "ConfigError",
    "CorralError",
    "NotFoundError",
    "Unreachable",
    "input_files",
    "sha256_file",
]

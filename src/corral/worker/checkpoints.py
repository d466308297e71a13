"""A task's checkpoint on this worker: restore it before the task starts, save it when the
task asks, when it exits with the checkpoint code, or when it is evicted.

Every task gets CORRAL_CHECKPOINT_DIR, `<work>/.corral/checkpoint`: empty, or holding the
checkpoint its lease names (restored through the blob cache, like inputs). It lies inside
the task's directory, so it is read-write in the sandbox and, under a root worker, handed to
the task's slot uid with the rest; `.corral/` is never collected as output.

How a running task asks for a save
----------------------------------
`corral checkpoint` (or `corral.checkpoint.save`) writes a token to `.corral/save-request`;
the worker looks for that file every POLL seconds while the task runs, saves, and answers
"<token> ok <n>" or "<token> error <why>" in `.corral/save-reply`; the caller waits for its
token. Files in the task's own directory work wherever the task runs: sandboxed (no network,
no view of the worker), unsandboxed, under any uid, and in a pooled function runner.
Rejected: a request over HTTP to the coordinator (a sandboxed task has no network, and the
worker holds the files anyway); a signal to the worker (a task cannot name its worker's pid
from its PID namespace, and a signal carries no answer); a FIFO (a task that dies while the
worker writes would leave either side blocked).

Saving
------
The task's files are first copied out of its reach (a task must not swap a file for a
symlink to something only a root worker may read while it is being read): walked with
directory descriptors, never following a symlink, regular files only. The copies are uploaded
as blobs, then recorded in one request (POST /tasks/{id}/checkpoints), which the coordinator
stores in one transaction: a save cut short leaves the previous checkpoint in place.

An eviction's save is skipped when the directory holds exactly the checkpoint the attempt
restored or last saved: a second copy would push the one before out of the two kept, and
with it the fallback from a corrupt checkpoint.

CORRAL_TEST_CHECKPOINT_CRASH=N makes a worker SIGKILL itself in its N-th save, after the
upload and before the record: the chaos tests' half-way save (a test hook, nothing else).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..protocol import (
    CHECKPOINT_DIR,
    REPLY_FILE,
    REQUEST_FILE,
    STATE_DIR,
    Assignment,
    CheckpointSave,
    CheckpointSaved,
    OutputFile,
)
from ._link import Link, retrying
from .cache import FileCache
from .outputs import make_dir, resolve_inside, safe_relpath, sha256_file

__all__ = ["POLL", "Checkpoints", "SaveFailed", "checkpoint_dir", "copy_out"]

log = logging.getLogger("corral.worker")
POLL = 0.1  # seconds between looks for a save request
_CRASH_ENV = "CORRAL_TEST_CHECKPOINT_CRASH"


class SaveFailed(Exception):
    """A save did not record a checkpoint; the message says why."""


def checkpoint_dir(work: Path) -> Path:
    """The checkpoint directory of a task working in `work`."""
    return work / STATE_DIR / CHECKPOINT_DIR


def copy_out(src: Path, dest: Path) -> dict[str, Path]:
    """Copy the regular files under `src` (a task's checkpoint directory) into `dest` without
    following any symlink, `src` and its parent (the task's state directory) included: by
    directory descriptors. Their relative posix paths -> the copies. A task that put a link
    at either name has nothing saved (else it could have another task's files saved as its
    own checkpoint, read by the worker)."""
    out: dict[str, Path] = {}
    with _state_dir(src.parent) as state_fd:
        if state_fd is None:  # the task removed it, or put a link there: nothing to save
            return out
        walk = os.fwalk(src.name, follow_symlinks=False, dir_fd=state_fd)
        try:
            # (each directory's descriptor is open only while its turn lasts: not a list)
            for top, _, files, top_fd in walk:
                rel_top = os.path.relpath(top, src.name)
                for name in files:
                    rel = name if rel_top == "." else f"{rel_top}/{name}"
                    if _copy_file(name, top_fd, dest / rel):
                        out[rel] = dest / rel
        except FileNotFoundError:  # no checkpoint directory: nothing to save
            return {}
    return out


def _copy_file(name: str, dir_fd: int, target: Path) -> bool:
    """Copy a regular file (never through a symlink) to target; False when it is not one."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return False  # a symlink, a socket, gone meanwhile
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as w:
            shutil.copyfileobj(f, w, 1 << 20)
        os.chmod(target, stat.S_IMODE(st.st_mode) & 0o777)
    return True


def _hashed(files: dict[str, Path]) -> dict[str, OutputFile]:
    return {
        rel: OutputFile(sha256_file(p), p.stat().st_size, stat.S_IMODE(p.stat().st_mode))
        for rel, p in files.items()
    }


class Checkpoints:
    """Restores and saves the checkpoints of this worker's tasks."""

    def __init__(self, link: Link, cache: FileCache, scratch: Path) -> None:
        self.link = link
        self.cache = cache
        self.scratch = scratch  # out of every task's reach: copies on their way out
        self.saves = 0
        self._known: dict[str, dict[str, OutputFile]] = {}  # lease -> restored or last saved
        crash = os.environ.get(_CRASH_ENV, "")
        self._crash_at = int(crash) if crash.isdigit() else None

    async def restore(self, a: Assignment, work: Path) -> None:
        """Make the task's checkpoint directory: empty, or its lease's checkpoint."""
        state = f"{os.fspath(work)}/{STATE_DIR}"
        make_dir(state)  # one mkdir each: a missing parent costs an exception more
        make_dir(f"{state}/{CHECKPOINT_DIR}")
        if a.checkpoint is None:
            return
        target = checkpoint_dir(work)
        self._known[a.lease_id] = a.checkpoint.files
        for name, f in a.checkpoint.files.items():
            dest = resolve_inside(target, safe_relpath(name))
            dest.parent.mkdir(parents=True, exist_ok=True)
            await self.cache.stage(f.sha256, f.size, dest, f.mode)
        log.info("task %s restored checkpoint %d", a.task_id, a.checkpoint.n)

    def forget(self, a: Assignment) -> None:
        """The attempt left this worker."""
        self._known.pop(a.lease_id, None)

    async def save(self, a: Assignment, work: Path, unless_unchanged: bool = False) -> int | None:
        """Save what the task's checkpoint directory holds; its number, None when empty (or,
        `unless_unchanged`, the same as restored or last saved). Raises SaveFailed when
        nothing was recorded."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{a.task_id}.", dir=self.scratch))
        try:
            copies = await asyncio.to_thread(copy_out, checkpoint_dir(work), tmp)
            if not copies:
                return None
            files = await asyncio.to_thread(_hashed, copies)
            if unless_unchanged and files == self._known.get(a.lease_id):
                return None
            await self.link.upload({f.sha256: copies[rel] for rel, f in files.items()})
            self.saves += 1
            if self.saves == self._crash_at:
                log.warning("%s: dying half-way through a save", _CRASH_ENV)
                os.kill(os.getpid(), signal.SIGKILL)
            body = CheckpointSave(a.lease_id, files)
            path = f"/tasks/{a.task_id}/checkpoints"
            reply = await retrying(lambda: self.link.post(path, body, CheckpointSaved))
        except Exception as exc:  # the task runs on: it learns of it from the reply
            raise SaveFailed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
        self._known[a.lease_id] = files
        log.info("task %s saved checkpoint %d (%d files)", a.task_id, reply.n, len(files))
        return int(reply.n)

    async def serve(self, a: Assignment, work: Path) -> None:
        """Answer the task's save requests until cancelled (when its process ends)."""
        state = work / STATE_DIR
        while True:
            await asyncio.sleep(POLL)
            token = _take_request(state)
            if token is None:
                continue
            try:
                n = await self.save(a, work)
                answer = "ok 0" if n is None else f"ok {n}"
            except SaveFailed as exc:
                log.warning("task %s: checkpoint not saved: %s", a.task_id, exc)
                answer = f"error {exc}"
            _reply(state, f"{token} {answer}\n")


@contextlib.contextmanager
def _state_dir(state: Path) -> Iterator[int | None]:
    """The task's state directory, opened without following a symlink the task may have put
    at its name (the worker may be root: the request is removed and the reply written there),
    as a descriptor to work below; None when it is not a directory of its own."""
    fd = None
    with contextlib.suppress(OSError):
        parent = os.open(state.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(state.name, flags, dir_fd=parent)
        finally:
            os.close(parent)
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _take_request(state: Path) -> str | None:
    """The token of a pending save request (the request is consumed), or None."""
    with _state_dir(state) as dir_fd:
        if dir_fd is None:
            return None
        try:
            fd = os.open(REQUEST_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError:
            return None
        try:
            ok = stat.S_ISREG(os.fstat(fd).st_mode)
            data = os.read(fd, 200) if ok else b""
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(REQUEST_FILE, dir_fd=dir_fd)
    token = data.decode(errors="replace").strip()
    return token if token and token.isprintable() and " " not in token else None


def _reply(state: Path, text: str) -> None:
    """Write the reply in a file of a fresh name, then rename it into place (a rename never
    follows a symlink the task left at the reply's name), all below the state directory's
    own descriptor."""
    with _state_dir(state) as dir_fd, contextlib.suppress(OSError):
        if dir_fd is None:
            return
        tmp = f".reply.{os.urandom(8).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            os.fchmod(f.fileno(), 0o644)  # the task reads it (as another user, on a root worker)
        os.replace(tmp, REPLY_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

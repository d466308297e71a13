"""A pooled runner's own part of a task's directory (fnpool.py), run inside its sandbox as its
user: make the directory, write the inputs that came with the lease, and once the call has
returned find what is new or changed, the bytes of small files included in the answer.

So for such a task the worker never opens, makes or reads a file in the runner's reach: a
thread or a signal handler a call left behind in the runner could swap a name there for a
symlink between the worker's check and its use, and the worker may be root. Nothing here
needs the runner stopped meanwhile (fnpool.py stops it before the worker itself touches
files in its root: large outputs, inputs from the cache).

    worker ── request {cwd, make: {rel: [mode, sha256, bytes]}, collect: [globs]} ──> runner
    runner: `prepare` (mkdir, one exclusive create an input), the call, `collect`
    runner ── answer line `... found=N`, then N bytes: msgpack [[rel, mode, size, bytes|None]]

A file over `each` bytes, or past `total` in all, comes without its bytes (None): the worker
reads it once the runner is stopped.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from ..protocol import CHECKPOINT_DIR, STATE_DIR
from ._place import write_new
from .outputs import Entry, Snapshot, changed_entries

__all__ = ["Found", "collect", "prepare"]

Found = list[tuple[str, int, int, bytes | None]]  # rel, mode, size, bytes (None: too large)
_STATE_PREFIX = f"{STATE_DIR}/"


def prepare(cwd: str, inputs: dict[str, Any], reuse: str | None = None) -> Snapshot:
    """Make `cwd` (not there before) with the task's state directory, out of `reuse` (the
    last task's `cwd`, emptied, renamed if it is another) where that works, and write each
    input `{rel: [mode, sha256, bytes]}` there; the snapshot to compare with after the call."""
    if reuse is None or not _renew(reuse, cwd):
        # one mkdir each (os.makedirs costs six times as much, in stat calls and Python)
        for path in (
            os.path.dirname(cwd),
            cwd,
            f"{cwd}/{STATE_DIR}",
            f"{cwd}/{STATE_DIR}/{CHECKPOINT_DIR}",
        ):
            os.mkdir(path, 0o700)
    before: Snapshot = {}
    for rel, (mode, sha256, data) in inputs.items():
        st = write_new(f"{cwd}/{rel}", data, mode & 0o777)
        if st is None:
            raise FileExistsError(f"input {rel} given twice")
        before[rel] = Entry(st.st_size, st.st_mtime_ns, mode & 0o777, sha256)
    return before


def _renew(old: str, cwd: str) -> bool:
    """Empty the last task's directory but for its (emptied) state directory, and move it
    to `cwd`: a few unlinks instead of removing and making four directories. False, with
    `old` removed, where that could not be done."""
    try:
        _empty(old, keep=STATE_DIR)
        _empty(f"{old}/{STATE_DIR}", keep=CHECKPOINT_DIR)
        _empty(f"{old}/{STATE_DIR}/{CHECKPOINT_DIR}", keep=None)
        if old != cwd:
            os.rename(os.path.dirname(old), os.path.dirname(cwd))
    except OSError:
        shutil.rmtree(os.path.dirname(old), ignore_errors=True)
        return False
    return True


def _empty(path: str, keep: str | None) -> None:
    """Remove what a directory holds, all but a directory named `keep`; raise OSError where
    `keep` is not one (the task replaced it)."""
    kept = False
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if entry.name == keep:
                    kept = True
                else:
                    shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    if keep is not None and not kept:
        raise FileNotFoundError(f"{path}/{keep}")


def collect(cwd: str, before: Snapshot, globs: list[str], each: int, total: int) -> Found:
    """What the task made or changed in `cwd` (its state directory aside), sorted; a file's
    bytes with it while it is at most `each` and the bytes so far at most `total`."""
    found: Found = []
    budget = total
    for rel, st in changed_entries(Path(cwd), before, globs):
        if rel.startswith(_STATE_PREFIX):
            continue
        mode, size, data = st.st_mode & 0o777, st.st_size, None
        if size <= each and size <= budget:
            data = _read(f"{cwd}/{rel}", min(each, budget))
            if data is not None:
                size = len(data)  # what was read is what goes, even if it grew meanwhile
                budget -= size
        found.append((rel, mode, size, data))
    return found


def _read(path: str, limit: int) -> bytes | None:
    """A regular file's bytes, never through a symlink; None when it is not one any more, or
    holds more than `limit` bytes by now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while chunk := os.read(fd, limit + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)

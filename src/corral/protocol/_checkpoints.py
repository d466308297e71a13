"""Checkpoints on the wire: what a worker saves, what a lease restores, what the API lists;
and the file names of the channel between a running task and its worker.

The task side of that channel (`corral checkpoint`, `corral.checkpoint.save`) and the worker
side (worker/checkpoints.py) share only these names: the task's checkpoint directory is
`<task dir>/.corral/checkpoint` (CORRAL_CHECKPOINT_DIR), and beside it the task drops
REQUEST_FILE to ask for a save and the worker answers in REPLY_FILE.
"""

from __future__ import annotations

import msgspec

from ._bounds import INT64_MAX
from ._models import Checkpoint, OutputFile, Request
from ._validate import is_sha256, relpath_problem

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_ENV",
    "REPLY_FILE",
    "REQUEST_FILE",
    "STATE_DIR",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointSave",
    "CheckpointSaved",
    "checkpoint_problems",
]

CHECKPOINT_ENV = "CORRAL_CHECKPOINT_DIR"
STATE_DIR = ".corral"  # in the task's directory: never one of its outputs
CHECKPOINT_DIR = "checkpoint"  # in STATE_DIR
REQUEST_FILE = "save-request"  # in STATE_DIR: a token, written by the task
REPLY_FILE = "save-reply"  # in STATE_DIR: "<token> ok <n>" or "<token> error <why>"


class CheckpointSave(Request):
    """A worker records a running task's checkpoint: files already uploaded as blobs."""

    lease_id: str
    files: dict[str, OutputFile]


class CheckpointSaved(msgspec.Struct):
    """The checkpoint's number (1, 2, ... per task)."""

    n: int


class CheckpointInfo(msgspec.Struct):
    """One saved checkpoint of a task, as the API lists it. `bad`: an attempt failed straight
    after restoring it, so it is not restored again."""

    n: int
    attempt: int
    created: float
    size: int
    files: int
    bad: bool = False


def checkpoint_problems(body: CheckpointSave) -> list[str]:
    """Every reason a checkpoint cannot be recorded, as 'field: problem' strings."""
    problems = []
    for name, entry in body.files.items():
        why = relpath_problem(name)
        if why:
            problems.append(f"files[{name!r}]: path {why}")
        if not is_sha256(entry.sha256):
            problems.append(f"files[{name!r}].sha256: not a sha256 hex digest")
        if entry.size < 0:
            problems.append(f"files[{name!r}].size: negative")
    if sum(f.size for f in body.files.values()) > INT64_MAX:
        problems.append("files: their total size is out of range")
    return problems

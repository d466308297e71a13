"""Checks on task specs that need no I/O, shared by the coordinator and clients."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from ._bounds import MAX_ATTEMPTS, MAX_LIMIT, MAX_SLOTS
from ._models import TaskResult, TaskSpec

# one regex match, not a Python test a character: the coordinator checks every hash it is
# sent, and every blob path it makes (16 a function task on a farm)
_SHA256 = re.compile("[0-9a-f]{64}")

#: limits a task may set (seconds, bytes or a count); the worker enforces each one
LIMIT_KEYS: tuple[str, ...] = (
    "cpu_time",
    "file_size",
    "memory",
    "output_size",
    "processes",
    "wall_time",
)


def is_sha256(text: str) -> bool:
    """True for 64 lowercase hex characters."""
    return len(text) == 64 and _SHA256.fullmatch(text) is not None


def relpath_problem(name: str) -> str | None:
    """Why `name` is not a safe path inside a task directory, or None when it is."""
    if not name or name in (".", "./"):
        return "is empty"
    if "\x00" in name:
        return "contains a NUL byte"
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is absolute"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "contains '..'"
    if not parts:
        return "is empty"
    return None


def task_problems(spec: TaskSpec) -> list[str]:
    """Every reason this task spec cannot run, as 'field: problem' strings."""
    problems: list[str] = []
    if not spec.argv or not spec.argv[0]:
        problems.append("argv: the command is empty")
    for name, ref in spec.inputs.items():
        why = relpath_problem(name)
        if why:
            problems.append(f"inputs[{name!r}]: path {why}")
        if not is_sha256(ref.sha256):
            problems.append(f"inputs[{name!r}].sha256: not a sha256 hex digest")
        if ref.size < 0:
            problems.append(f"inputs[{name!r}].size: negative")
    for glob in spec.outputs:
        why = relpath_problem(glob)
        if why:
            problems.append(f"outputs: glob {glob!r} {why}")
    for key in spec.env:
        if not key or "=" in key or "\x00" in key:
            problems.append(f"env: bad variable name {key!r}")
    problems += _limit_problems(spec)
    problems += _count_problems(spec)
    return problems


def _limit_problems(spec: TaskSpec) -> list[str]:
    problems = []
    for key, value in spec.limits.items():
        if key not in LIMIT_KEYS:
            problems.append(f"limits.{key}: unknown limit (known: {', '.join(LIMIT_KEYS)})")
        elif value < 0:
            problems.append(f"limits.{key}: negative")
        elif not value <= MAX_LIMIT:  # also NaN, which a spec built in Python may hold
            problems.append(f"limits.{key}: must be a finite number from 0 to {MAX_LIMIT:.0f}")
    return problems


def _count_problems(spec: TaskSpec) -> list[str]:
    # a decoded body has had these ranges checked (protocol/_bounds.py); a spec built in
    # Python (a client's, before it is sent) has not
    problems = []
    if not 1 <= spec.max_attempts <= MAX_ATTEMPTS:
        problems.append(f"max_attempts: must be an integer from 1 to {MAX_ATTEMPTS}")
    if not 0 <= spec.retries <= MAX_ATTEMPTS:
        problems.append(f"retries: must be an integer from 0 to {MAX_ATTEMPTS}")
    cpus = spec.requires.get("cpus", "1")
    # the task's slots go to an INTEGER column; no worker has more than MAX_SLOTS anyway
    if cpus.isdigit() and int(cpus) > MAX_SLOTS:
        problems.append(f"requires.cpus: must be an integer from 1 to {MAX_SLOTS}")
    return problems


def result_problems(result: TaskResult) -> list[str]:
    """Every reason a worker's result cannot be stored, as 'field: problem' strings."""
    problems = []
    for field in ("stdout", "stderr"):
        value = getattr(result, field)
        if value is not None and not is_sha256(value):
            problems.append(f"{field}: not a sha256 hex digest")
    for name, entry in result.manifest.items():
        why = relpath_problem(name)
        if why:
            problems.append(f"manifest[{name!r}]: path {why}")
        if not is_sha256(entry.sha256):
            problems.append(f"manifest[{name!r}].sha256: not a sha256 hex digest")
        if entry.size < 0:
            problems.append(f"manifest[{name!r}].size: negative")
    return problems

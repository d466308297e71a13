"""Short ids: what a user types for a job, task, worker, token or allowlist entry, resolved
to the one full id it stands for, as git and docker do.

A reference is a full id, a unique prefix of at least 4 characters, or for a task
`JOB/NAME`: the task of that name within the job (a prefix of the job's id). An ambiguous
prefix is an error that lists what it matches. Jobs and tasks are looked up through the
coordinator (`GET /ids`, which accepts a prefix and answers full ids); the short lists
(workers, tokens, the allowlist) are matched here against what the client already read.
`choose` is the one decision, pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..client import Client
from ..protocol import IdMatch, Job, Task
from ._common import Fail
from ._format import short

MIN_PREFIX = 4
SHOWN = 10  # matches listed in an ambiguity error
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class Candidate:
    """Something a reference may name: its full id, what it is, and words to tell it by."""

    id: str
    kind: str
    label: str = ""
    names: tuple[str, ...] = ()  # other names it answers to exactly (a worker's, a token's)


def choose(ref: str, found: Sequence[Candidate], what: str, hint: str) -> Candidate:
    """The one candidate `ref` names: an exact id or name first, else a unique id prefix of at
    least MIN_PREFIX characters; Fail (naming the matches, or with `hint`) otherwise."""
    exact = [c for c in found if ref == c.id or ref in c.names]
    if len(exact) == 1:
        return exact[0]
    matches = exact or [c for c in found if c.id.startswith(ref)]
    if len(matches) == 1 and (exact or len(ref) >= MIN_PREFIX):
        return matches[0]
    if not matches:
        raise Fail(f"no {what} {ref}; {hint}")
    if len(ref) < MIN_PREFIX and not exact:
        raise Fail(f"{ref!r} is too short: give at least {MIN_PREFIX} characters of an id")
    listed = "; ".join(f"{c.kind} {short(c.id)}{f' {c.label}' if c.label else ''}" for c in matches)
    more = f" and {len(matches) - SHOWN} more" if len(matches) > SHOWN else ""
    raise Fail(f"{ref} is ambiguous: it matches {listed}{more}; give more characters")


def _candidates(matches: Sequence[IdMatch]) -> list[Candidate]:
    return [
        Candidate(m.id, m.kind, m.name if m.kind == "job" else f"{m.name} in job {short(m.job_id)}")
        for m in matches
    ]


def match_ids(client: Client, ref: str, kinds: tuple[str, ...] = ("job", "task")) -> IdMatch:
    """The job or task `ref` stands for (an id, a prefix, or JOB/NAME for a task)."""
    what = " or ".join(kinds)
    hint = "list ids with `corral ps`"
    job_ref, slash, name = ref.partition("/")
    prefix = job_ref.lower()
    if not _HEX.fullmatch(prefix) or len(prefix) > 32 or (slash and not name):
        raise Fail(f"no {what} {ref}: give an id (4 or more of its characters) or JOB/TASKNAME")
    if len(prefix) < MIN_PREFIX:
        raise Fail(f"{ref!r} is too short: give at least {MIN_PREFIX} characters of an id")
    found = client.find_ids(prefix, name if slash else None, SHOWN + 1)
    found = [m for m in found if m.kind in kinds]
    if slash and not found:
        raise Fail(f"no task named {name!r} in job {job_ref}; {hint}")
    if slash:  # every match has the name: one is the answer, more are ambiguous
        named = [Candidate(c.id, c.kind, c.label, (name,)) for c in _candidates(found)]
        picked = choose(name, named, "task", hint)
    else:
        picked = choose(prefix, _candidates(found), what, hint)
    return next(m for m in found if m.id == picked.id)


def resolve(client: Client, ref: str) -> Job | Task:
    """The job or task `ref` stands for, read in full."""
    match = match_ids(client, ref)
    return client.job(match.id) if match.kind == "job" else client.task(match.id)


def job_id(client: Client, ref: str) -> str:
    """The job `ref` stands for; a task's reference stands for its job."""
    return match_ids(client, ref).job_id


def task_ids(client: Client, ref: str) -> list[str]:
    """The task `ref` stands for, or every task of the job it stands for."""
    match = match_ids(client, ref)
    return [match.id] if match.kind == "task" else [t.id for t in client.tasks(match.id)]


__all__ = ["MIN_PREFIX", "Candidate", "choose", "job_id", "match_ids", "resolve", "task_ids"]

"""Task dependencies, the pure half: naming them, and what a task's dependencies mean for it.

A task names its dependencies in `after` (ids of tasks that already exist) and `after_index`
(positions of earlier tasks in the same submission, for raw API and job-file users; the Python
client sends a dependency before its dependents, so it only uses ids). On submit the
coordinator turns indexes into ids, so a stored spec only has `after`. Since a task can only
name tasks that exist before it does, a cycle cannot be written down.

A held task keeps the public status `queued`, with a count of dependencies still to succeed
(the `waiting` column; `pending_reason` says "waiting for N dependencies"). The store settles
dependents inside the transaction that finishes a task, so nothing polls::

    queued, waiting N --a dependency succeeds--> queued, waiting N-1 ... 0: leasable
    queued, waiting N --a dependency fails or is killed--> failed ("dependency_failed"),
                                                            and so on down the graph
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from ..protocol import InputRef, OutputFile, TaskSpec, relpath_problem

__all__ = [
    "DEPENDENCY_FAILED",
    "MAX_AFTER",
    "hold",
    "inputs_from_dependencies",
    "named_dependencies",
    "resolve_after",
    "waiting_text",
]

DEPENDENCY_FAILED = "dependency_failed"
MAX_AFTER = 1000  # dependencies one task may name
_BROKEN = frozenset({"failed", "killed"})


def resolve_after(specs: Sequence[TaskSpec], ids: Sequence[str]) -> list[TaskSpec]:
    """Specs with `after_index` turned into ids (`ids[i]` is task i's new id), deduplicated.

    Raises ValueError naming the task and field when an index does not point backwards."""
    out = []
    for i, spec in enumerate(specs):
        if not (spec.after or spec.after_index or spec.after_inputs):
            out.append(spec)
            continue
        for j in spec.after_index:
            if not 0 <= j < i:
                raise ValueError(
                    f"tasks[{i}].after_index: {j} is not an earlier task of this submission"
                )
        named = list(dict.fromkeys([*spec.after, *(ids[j] for j in spec.after_index)]))
        if len(named) > MAX_AFTER:
            raise ValueError(f"tasks[{i}].after: at most {MAX_AFTER} dependencies")
        for name, ref in spec.after_inputs.items():
            problem = relpath_problem(name)
            if ref.task not in named:
                problem = f"{ref.task} is not one of the task's dependencies"
            if problem:
                raise ValueError(f"tasks[{i}].after_inputs[{name!r}]: {problem}")
        out.append(msgspec.structs.replace(spec, after=named, after_index=[]))
    return out


def named_dependencies(specs: Sequence[TaskSpec], new_ids: Sequence[str]) -> list[str]:
    """Ids the specs depend on that are not part of the submission itself (must exist)."""
    own = set(new_ids)
    found = (dep for spec in specs for dep in spec.after if dep not in own)
    return list(dict.fromkeys(found))


def inputs_from_dependencies(
    spec: TaskSpec, manifests: dict[str, dict[str, OutputFile]]
) -> TaskSpec:
    """The spec to hand a worker: `after_inputs` found in the dependencies' returned files
    (`manifests`, by task id) become ordinary inputs; one a dependency did not return is left
    out, so the task sees it missing."""
    if not spec.after_inputs:
        return spec
    inputs = dict(spec.inputs)
    for name, ref in spec.after_inputs.items():
        found = manifests.get(ref.task, {}).get(ref.path)
        if found is not None:
            inputs[name] = InputRef(found.sha256, found.size, found.mode)
    return msgspec.structs.replace(spec, inputs=inputs)


def hold(statuses: Sequence[str]) -> tuple[str, int]:
    """What a new task becomes, given its dependencies' statuses: ("failed", 0) when one of
    them failed or was killed, else ("queued", how many have yet to succeed)."""
    if any(s in _BROKEN for s in statuses):
        return "failed", 0
    return "queued", sum(1 for s in statuses if s != "succeeded")


def waiting_text(left: int) -> str:
    """The pending reason of a task held by its dependencies."""
    return f"waiting for {left} dependenc{'y' if left == 1 else 'ies'}"

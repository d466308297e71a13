"""Futures as arguments: `client.submit(g, client.submit(f, x))` runs g on f's result.

A future among a function task's arguments becomes a dependency (the task is held until that
task succeeds; if it fails, this one fails with `dependency_failed`) and, in the pickled call,
a `("r", "corral-dep-K.pkl")` argument. Once the dependency's id is known the spec names its
result file in `after_inputs`, so the coordinator stages that blob under that name when it
hands the task out, and `corral.worker.pyrunner` passes the value it holds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass
from typing import Any

import msgspec

from ..protocol import AfterFile, TaskSpec

__all__ = ["DependencyResult", "lift_futures", "with_after_files"]


@dataclass(frozen=True)
class DependencyResult:
    """Stands in for a future argument: the file its task's result will be staged as."""

    file: str


def _is_task_future(value: Any) -> bool:
    futures = (concurrent.futures.Future, asyncio.Future)
    return isinstance(value, futures) and hasattr(type(value), "task_id")


def lift_futures(
    args: tuple[Any, ...], kwargs: dict[str, Any], after: list[Any]
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, int]]:
    """Replace task futures among the arguments by DependencyResults, appending the futures
    to `after`; returns the new arguments and {file name: index in `after`}."""
    files: dict[str, int] = {}

    def lift(value: Any) -> Any:
        if not _is_task_future(value):
            return value
        name = f"corral-dep-{len(after)}.pkl"
        files[name] = len(after)
        after.append(value)
        return DependencyResult(name)

    new_args = tuple(lift(a) for a in args)
    new_kwargs = {k: lift(v) for k, v in kwargs.items()}
    return new_args, new_kwargs, files


def with_after_files(spec: TaskSpec, ids: list[str], files: dict[str, int], path: str) -> TaskSpec:
    """The spec staging file `path` of dependency `ids[k]` as each name in `files`."""
    if not files:
        return spec
    wanted = {name: AfterFile(ids[k], path) for name, k in files.items()}
    return msgspec.structs.replace(spec, after_inputs={**spec.after_inputs, **wanted})

"""Futures as arguments: `client.submit(g, client.submit(f, x))` runs g on f's result.

A future among a function task's arguments becomes a dependency (the task is held until that
task succeeds; if it fails, this one fails with `dependency_failed`) and, in the pickled call,
a `("r", "corral-dep-K.pkl")` argument. Once the dependency's id is known the spec names its
result file in `after_inputs`, so the coordinator stages that blob under that name when it
hands the task out, and `corral.worker.pyrunner` passes the value it holds.

`after_files={name: (future, path)}` (a task option) stages any file a dependency returned
the same way: a MapReduce's reduce reads its partition's runs from each map like this.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ..protocol import AfterFile, TaskSpec

__all__ = ["DependencyResult", "lift_futures", "stage_files", "with_after_files"]


@dataclass(frozen=True)
class DependencyResult:
    """Stands in for a future argument: the file its task's result will be staged as."""

    file: str


def _is_task_future(value: Any) -> bool:
    futures = (concurrent.futures.Future, asyncio.Future)
    return isinstance(value, futures) and hasattr(type(value), "task_id")


def lift_futures(
    args: tuple[Any, ...], kwargs: dict[str, Any], after: list[Any], result_file: str
) -> tuple[tuple[Any, ...], dict[str, Any], dict[str, tuple[int, str]]]:
    """Replace task futures among the arguments by DependencyResults, appending the futures
    to `after`; returns the new arguments and {file name: (index in `after`, result_file)}."""
    files: dict[str, tuple[int, str]] = {}

    def lift(value: Any) -> Any:
        if not _is_task_future(value):
            return value
        name = f"corral-dep-{len(after)}.pkl"
        files[name] = (len(after), result_file)
        after.append(value)
        return DependencyResult(name)

    new_args = tuple(lift(a) for a in args)
    new_kwargs = {k: lift(v) for k, v in kwargs.items()}
    return new_args, new_kwargs, files


def stage_files(
    wanted: Mapping[str, tuple[Any, str]], after: list[Any]
) -> dict[str, tuple[int, str]]:
    """`after_files={name: (future or task id, path)}` as {name: (index in `after`, path)},
    appending each dependency not already in `after`."""
    files: dict[str, tuple[int, str]] = {}
    for name, (dep, path) in wanted.items():
        if not (isinstance(dep, str) or _is_task_future(dep)):
            raise TypeError(f"after_files[{name!r}]: {dep!r} is neither a task future nor an id")
        at = next((i for i, known in enumerate(after) if known is dep), None)
        if at is None:
            at = len(after)
            after.append(dep)
        files[str(name)] = (at, str(path))
    return files


def with_after_files(
    spec: TaskSpec, ids: list[str], files: Mapping[str, tuple[int, str]]
) -> TaskSpec:
    """The spec staging, as each name in `files`, that file of dependency `ids[k]`."""
    if not files:
        return spec
    wanted = {name: AfterFile(ids[k], path) for name, (k, path) in files.items()}
    return msgspec.structs.replace(spec, after_inputs={**spec.after_inputs, **wanted})

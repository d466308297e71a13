"""Turning calls into submissions: pure, shared by Client, AsyncClient and Executor."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..protocol import TaskSpec
from ._deps import lift_futures, stage_files
from ._functions import RESULT_FILE, build_payload, dump_function, function_spec
from ._outcomes import chunk_outcome, command_outcome, function_outcome
from ._submission import Submission


def _name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "function"))


def _input_paths(inputs: Iterable[str | Path]) -> list[Path]:
    if isinstance(inputs, (str, Path)):
        raise TypeError("inputs= takes a list of paths, not one path")
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
    return paths


def command_submission(
    argv: Sequence[str],
    future: Any,
    *,
    inputs: Iterable[str | Path] = (),
    outputs: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    requires: Mapping[str, str] | None = None,
    limits: Mapping[str, float] | None = None,
    after: Iterable[Any] = (),
    shell: bool = False,
    max_attempts: int = 3,
    name: str = "",
) -> Submission:
    """A command task; input paths are checked now, hashed and uploaded when sent."""
    argv = [str(a) for a in argv]
    if not argv or not argv[0]:
        raise ValueError("submit_command needs a non-empty argv")
    paths = _input_paths(inputs)
    spec = TaskSpec(
        argv=argv,
        env=dict(env or {}),
        outputs=list(outputs),
        requires=dict(requires or {}),
        limits={k: float(v) for k, v in (limits or {}).items()},
        shell=shell,
        max_attempts=max_attempts,
        name=name,
    )
    return Submission(
        spec, [future], command_outcome, paths=paths, after=list(after), job_name=argv[0]
    )


def function_submission(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: Mapping[str, Any],
    future: Any,
) -> Submission:
    """One call of `fn` as a task; pickling problems are raised here, in the caller.

    `options["after"]` (ids or futures) holds it; futures among the arguments hold it too,
    and their results are passed in their place (client/_deps.py). `options["inputs"]`
    (paths) are staged in its working directory as a command's are, and
    `options["after_files"]` ({name: (future or id, path)}) stages files its dependencies
    returned."""
    after = list(options.get("after", ()))
    args, kwargs, files = lift_futures(args, kwargs, after, RESULT_FILE)
    files.update(stage_files(options.get("after_files", {}), after))
    payload = build_payload(dump_function(fn), [(args, kwargs)], chunked=False)
    spec = function_spec(payload, dict(options), _name(fn))
    return Submission(
        spec,
        [future],
        function_outcome,
        payload.blobs,
        paths=_input_paths(options.get("inputs", ())),
        after=after,
        after_files=files,
        job_name=_name(fn),
    )


def map_submissions(
    fn: Callable[..., Any],
    iterables: Sequence[Iterable[Any]],
    chunksize: int,
    options: Mapping[str, Any],
    make_future: Callable[[], Any],
) -> tuple[list[Submission], list[Any]]:
    """`fn` over zipped iterables, `chunksize` calls a task; one future per item."""
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1")
    fn_pickle = dump_function(fn)
    subs, futures = [], []
    calls = iter(zip(*iterables, strict=False))
    while chunk := list(itertools.islice(calls, chunksize)):
        items = [make_future() for _ in chunk]
        chunked = chunksize > 1
        payload = build_payload(fn_pickle, [(tuple(a), {}) for a in chunk], chunked)
        spec = function_spec(payload, dict(options), _name(fn))
        decode = chunk_outcome(len(chunk)) if chunked else function_outcome
        subs.append(Submission(spec, items, decode, payload.blobs, job_name=_name(fn)))
        futures += items
    return subs, futures


__all__ = ["command_submission", "function_submission", "map_submissions"]

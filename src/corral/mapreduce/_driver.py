"""The submitter's side: run a MapReduce on the farm or in this process, then deliver.

On the farm the whole job is one Corral job (`Client.as_job`), sent at once: one map task
per chunk, and one reduce task per partition that waits for every map through task
dependencies and has each map's run for its partition staged by name (`after_files`). Maps
and reduces are function tasks carrying the user's object; the user's own modules travel by
value (`_shipping.py`). A failed map or reduce kills the rest of the job and raises one
MapReduceError naming the task and its chunk or partition. With `speculative` (the default)
the coordinator may back up a straggler on another worker: a task's outputs are blobs
recorded with the task in one step, so only one attempt's runs are ever used.

Local mode runs the same task cores (`_tasks.py`) one after the other in a temporary
directory, each on a fresh unpickled copy of the object as a worker would, so both modes
give the same output.

Delivery is the same for both: the sorted part files are merged in key order and returned
as a list, passed to `write`, or written to `out/part-NNNNN` through a temporary directory
renamed into place, so a failed job leaves no half-written output behind.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cloudpickle

from corral.client import Client, CorralError, TaskFuture

from ._job import MapReduce, MapReduceError, overrides, take_counters
from ._keys import order
from ._progress import Progress, show_counters
from ._runs import run_file
from ._shipping import ship_by_value
from ._tasks import (
    DIR,
    RUNS,
    map_chunk,
    map_task,
    part_name,
    read_pairs,
    reduce_partition,
    reduce_task,
    run_name,
)

__all__ = ["MAX_MAPS", "run"]

MAX_MAPS = 1000  # a reduce waits on every map: the coordinator's dependency limit per task


def run(
    job: MapReduce,
    client: Client | None,
    reducers: int,
    out: str | Path | None,
    local: bool,
    progress: bool | None,
    speculative: bool,
    name: str | None,
) -> Any:
    """`MapReduce.run`: see there."""
    if reducers < 1:
        raise ValueError("reducers must be at least 1")
    target = Path(out) if out is not None else None
    if target is not None and target.exists():
        raise MapReduceError(f"output directory {target} already exists: remove it or pick another")
    name = name or type(job).__name__
    take_counters(job)
    chunks = list(job.chunks())
    if not chunks:
        raise MapReduceError(f"{name}.chunks() returned no chunks: there is nothing to map")
    show = sys.stderr.isatty() if progress is None else progress
    with tempfile.TemporaryDirectory(prefix="corral-mr-") as scratch:
        work = Path(scratch)
        if local:
            parts, counters = _run_local(job, chunks, reducers, work, show)
        else:
            parts, counters = _on_farm(job, client, chunks, reducers, work, show, speculative, name)
        job.counters = counters
        if show:
            show_counters(counters)
        return _deliver(job, parts, target)


def _on_farm(
    job: MapReduce, client: Client | None, chunks: Sequence[Any], reducers: int, *rest: Any
) -> tuple[list[Path | None], dict[str, dict[str, int]]]:
    if len(chunks) > MAX_MAPS:
        raise MapReduceError(
            f"{type(job).__name__}: {len(chunks)} chunks; at most {MAX_MAPS}: use larger chunks"
        )
    if client is not None:
        return _run_farm(job, client, chunks, reducers, *rest)
    with Client() as own:
        return _run_farm(job, own, chunks, reducers, *rest)


def _fresh(job_pickle: bytes) -> MapReduce:
    copy: MapReduce = cloudpickle.loads(job_pickle)
    return copy


def _dump(job: MapReduce, name: str) -> bytes:
    try:
        return bytes(cloudpickle.dumps(job))
    except Exception as exc:  # pickling fails with many exception types
        raise MapReduceError(
            f"{name} cannot be sent to the workers: it cannot be pickled "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _run_local(
    job: MapReduce, chunks: Sequence[Any], reducers: int, work: Path, show: bool
) -> tuple[list[Path | None], dict[str, dict[str, int]]]:
    data = _dump(job, type(job).__name__)
    stats: list[dict[str, Any]] = []
    with Progress(show, len(chunks), reducers) as bars:
        for i, chunk in enumerate(chunks):
            stats.append(map_chunk(_fresh(data), chunk, reducers, work / f"m{i:05d}"))
            bars.mapped()
        parts: list[Path | None] = []
        for p in range(reducers):
            maps = (work / f"m{i:05d}" / run_file(p) for i in range(len(chunks)))
            runs = [r for r in maps if r.exists()]
            out = work / "reduce" / part_name(p)
            stats.append(reduce_partition(_fresh(data), p, runs, out))
            parts.append(out if out.exists() else None)
            bars.reduced()
    return parts, _sum_counters(stats)


def _run_farm(
    job: MapReduce,
    client: Client,
    chunks: Sequence[Any],
    reducers: int,
    work: Path,
    show: bool,
    speculative: bool,
    name: str,
) -> tuple[list[Path | None], dict[str, dict[str, int]]]:
    ship_by_value()
    _dump(job, name)  # a clear error before anything is sent
    shared = [str(p) for p in job._corral_files()]
    maps: list[TaskFuture] = []
    reduces: list[TaskFuture] = []
    try:
        with client.as_job(name, speculative=speculative) as group:
            for chunk in chunks:
                inputs = shared + [str(p) for p in getattr(chunk, "corral_inputs", list)()]
                options: dict[str, Any] = {"name": f"{name}.map", "outputs": [RUNS]}
                options["inputs"] = inputs
                maps.append(client.submit_with(options, map_task, job, chunk, reducers))
            for p in range(reducers):
                staged = {f"{DIR}/in/{i:05d}": (m, run_name(p)) for i, m in enumerate(maps)}
                options = {
                    "name": f"{name}.reduce",
                    "outputs": [part_name(p)],
                    "inputs": shared,
                    "after_files": staged,
                }
                reduces.append(client.submit_with(options, reduce_task, job, p))
    except CorralError as exc:
        raise MapReduceError(f"{name} cannot be sent to the farm: {exc}") from exc
    try:
        with Progress(show, len(maps), reducers) as bars:
            stats = _wait(maps, chunks, "map", bars.mapped)
            stats += _wait(reduces, range(reducers), "reduce", bars.reduced)
    except BaseException:  # a failed task, or Ctrl-C: stop the rest of the job
        if group.job_id is not None:
            with contextlib.suppress(CorralError):
                client.kill(group.job_id)
        raise
    parts = [_fetch(client, f, p, work) for p, f in enumerate(reduces)]
    return parts, _sum_counters(stats)


def _wait(
    futures: Sequence[TaskFuture], what: Sequence[Any], phase: str, tick: Any
) -> list[dict[str, Any]]:
    """Each task's statistics as it finishes; the first failure raises, naming the task and
    its chunk or partition."""
    index = {id(f): i for i, f in enumerate(futures)}
    stats = []
    for done in concurrent.futures.as_completed(futures):
        i = index[id(done)]
        future = futures[i]
        error = future.exception()
        if error is not None:
            where = f"chunk {what[i]}" if phase == "map" else f"partition {what[i]}"
            raise MapReduceError(
                f"{phase} task {future.task_id} ({where}) failed: {error}"
            ) from error
        stats.append(future.result())
        tick()
    return stats


def _fetch(client: Client, future: TaskFuture, partition: int, work: Path) -> Path | None:
    if not future.result()["records"]:
        return None
    assert future.task_id is not None
    entry = client.task(future.task_id).manifest[part_name(partition)]
    dest = work / "parts" / f"{partition:05d}.pkl"
    dest.parent.mkdir(parents=True, exist_ok=True)
    client.download(entry.sha256, dest)
    return dest


def _sum_counters(stats: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for s in stats:
        for group, names in s["counters"].items():
            for n, v in names.items():
                total.setdefault(group, {})[n] = total.get(group, {}).get(n, 0) + v
    shuffled = sum(s.get("shuffled", 0) for s in stats)
    records = sum(s["records"] for s in stats if "partitions" in s)
    total.setdefault("corral", {}).update(
        {
            "map output records": records,
            "shuffled records": shuffled,
            "reduce output records": sum(s["records"] for s in stats if "partitions" not in s),
        }
    )
    return total


def _merged(parts: Sequence[Path | None]) -> Iterator[tuple[Any, Any]]:
    streams = [read_pairs(p) for p in parts if p is not None]
    return heapq.merge(*streams, key=lambda pair: order(pair[0]))


def _deliver(job: MapReduce, parts: list[Path | None], target: Path | None) -> Any:
    if target is not None:
        _write_dir(job, parts, target)
        return target
    if overrides(job, "write"):
        for key, value in _merged(parts):
            job.write(key, value)
        return None
    return list(_merged(parts))


def _write_dir(job: MapReduce, parts: list[Path | None], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for p, part in enumerate(parts):
            with (tmp / f"part-{p:05d}").open("w", encoding="utf-8") as f:
                for key, value in read_pairs(part) if part is not None else ():
                    try:
                        line = job._corral_line(key, value)
                    except (TypeError, ValueError) as exc:
                        raise MapReduceError(
                            f"output pair for key {key!r} cannot be written as JSON ({exc}): "
                            "emit JSON values, or override write()"
                        ) from None
                    f.write(line + "\n")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

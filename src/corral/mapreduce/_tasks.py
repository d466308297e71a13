"""The two tasks, as functions a worker runs in the task directory, and the cores that
local mode runs in this process: the same code either way, so both give the same output.

A map task writes `corral-mr/run-PPPPP` for each partition it has records for (its declared
outputs) and returns its statistics and counters. A reduce task finds the runs of its
partition staged as `corral-mr/in/MMMMM` (one per map that had any; `after_files`), merges
them, and writes `corral-mr/part-PPPPP.pkl`: its output pairs, sorted by key, in pickled
batches.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._job import MapReduce, MapReduceError, take_counters
from ._keys import BadKey, check_key, order
from ._runs import BATCH, MapOutput, merged, read_batches, run_file

__all__ = [
    "DIR",
    "RUNS",
    "map_chunk",
    "map_task",
    "part_name",
    "read_pairs",
    "reduce_partition",
    "reduce_task",
    "run_name",
]

DIR = "corral-mr"
RUNS = f"{DIR}/run-*"  # a map task's outputs


def run_name(partition: int) -> str:
    """A map's run for one partition, relative to the task directory."""
    return f"{DIR}/{run_file(partition)}"


def part_name(partition: int) -> str:
    """A reduce's output, relative to the task directory."""
    return f"{DIR}/part-{partition:05d}.pkl"


def map_chunk(job: MapReduce, chunk: Any, reducers: int, out: Path) -> dict[str, Any]:
    """Map one chunk into sorted runs under `out`; its statistics and counters."""
    out.mkdir(parents=True, exist_ok=True)
    take_counters(job)  # only this task's own counts go back
    combiner = job._corral_combine if job._corral_combines() else None
    output = MapOutput(out, reducers, combiner)
    try:
        job._corral_map(chunk, output.emit)
        partitions = output.finish()
    except BadKey as exc:
        raise MapReduceError(f"map of chunk {chunk}: {exc}") from None
    return {
        "partitions": partitions,
        "records": output.records,
        "shuffled": output.written,
        "counters": take_counters(job),
    }


def map_task(job: MapReduce, chunk: Any, reducers: int) -> dict[str, Any]:
    """On a worker: map one chunk into the task directory's `corral-mr/`."""
    staged = getattr(chunk, "corral_staged", None)
    return map_chunk(job, staged() if staged else chunk, reducers, Path(DIR))


def reduce_partition(job: MapReduce, partition: int, runs: list[Path], out: Path) -> dict[str, Any]:
    """Merge one partition's runs through `reduce`; write its sorted pairs to `out`."""
    take_counters(job)
    pairs: list[tuple[Any, Any]] = []

    def emit(key: Any, value: Any) -> None:
        try:
            check_key(key)
        except BadKey as exc:
            raise MapReduceError(f"reduce of partition {partition}: {exc}") from None
        pairs.append((key, value))

    job._corral_reduce(merged(runs), emit)
    if any(order(a[0]) > order(b[0]) for a, b in zip(pairs, pairs[1:], strict=False)):
        pairs.sort(key=lambda pair: order(pair[0]))  # reduce emitted keys out of order
    if pairs:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:
            for i in range(0, len(pairs), BATCH):
                pickle.dump(pairs[i : i + BATCH], f, protocol=pickle.HIGHEST_PROTOCOL)
    return {"records": len(pairs), "counters": take_counters(job)}


def reduce_task(job: MapReduce, partition: int) -> dict[str, Any]:
    """On a worker: reduce the runs staged in `corral-mr/in/` into `corral-mr/part-*.pkl`."""
    staged = Path(DIR, "in")
    runs = sorted(staged.iterdir()) if staged.is_dir() else []
    return reduce_partition(job, partition, runs, Path(part_name(partition)))


def read_pairs(path: Path) -> Iterator[tuple[Any, Any]]:
    """The pairs of a reduce's output file, in order."""
    return read_batches(path)

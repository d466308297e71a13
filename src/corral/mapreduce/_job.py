"""The MapReduce base class: what a user overrides, and the hooks the tasks call.

    chunks() --on the submitter--> chunk, chunk, ...          one map task each
    read(chunk) -> (key, value) ... map(key, value) -> emit(k, v) ...   on a worker
    [combine(k, values) -> emit(k, v)]                        on the map side, per spill
    ... shuffle: one sorted run per reducer partition, through the blob store ...
    reduce(k, values) -> emit(k, v)                           on a worker, one task a partition
    [write(k, v)]                                             on the submitter, in key order

`emit` is an instance attribute while a phase runs (the fast path is a closure, not a method
call through the class); outside a phase it is the method below, which says so. A method may
also `yield` (key, value) pairs instead of emitting them. The `_corral_*` methods are the
phase hooks the tasks call; streaming mode (`_streaming.py`) overrides them to run whole
chunks and partitions through external programs.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._runs import Emit

if TYPE_CHECKING:
    from corral.client import Client

__all__ = ["MapReduce", "MapReduceError", "overrides", "take_counters"]

_COUNTERS = "_corral_counters"


class MapReduceError(Exception):
    """A MapReduce job could not run or failed; the message names the chunk, key or task."""


class MapReduce:
    """Subclass it: `chunks`, `map` and `reduce` (and optionally `read`, `combine`, `write`),
    then `run()` it on the farm or with `local=True` in this process."""

    counters: dict[str, dict[str, int]]  # after `run()`: {group: {name: total}}

    def chunks(self) -> Iterable[Any]:
        """On the submitter: picklable chunk descriptors, one map task each."""
        raise NotImplementedError(f"{type(self).__name__}.chunks() must return the chunks")

    def read(self, chunk: Any) -> Iterable[tuple[Any, Any]]:
        """On a worker: the (key, value) records of a chunk; `chunk.lines()` by default."""
        lines: Callable[[], Iterable[tuple[Any, Any]]] | None = getattr(chunk, "lines", None)
        if lines is None:
            raise TypeError(
                f"{type(self).__name__}.read() must be overridden to read chunks of type "
                f"{type(chunk).__name__}"
            )
        return lines()

    def map(self, key: Any, value: Any) -> Iterable[tuple[Any, Any]] | None:
        """On a worker, once per record: emit (or yield) pairs. Emits the record itself."""
        self.emit(key, value)
        return None

    def combine(self, key: Any, values: Iterator[Any]) -> Iterable[tuple[Any, Any]] | None:
        """Optional, on the map side: fold one key's values before the shuffle."""
        raise NotImplementedError  # never called unless a subclass defines it

    def reduce(self, key: Any, values: Iterator[Any]) -> Iterable[tuple[Any, Any]] | None:
        """On a worker, once per key of a partition: emit (or yield) output pairs."""
        for value in values:
            self.emit(key, value)
        return None

    def write(self, key: Any, value: Any) -> None:
        """Optional, on the submitter: once per output pair, in key order."""
        raise NotImplementedError  # never called unless a subclass defines it

    def emit(self, key: Any, value: Any) -> None:
        """Emit a pair (only inside map, combine and reduce)."""
        raise RuntimeError("emit() can only be called inside map, combine or reduce")

    def count(self, group: str, name: str, n: int = 1) -> None:
        """Add `n` to a counter; counters are summed over the job and shown at the end."""
        counters = self.__dict__.setdefault(_COUNTERS, collections.Counter())
        counters[(str(group), str(name))] += n

    def run(
        self,
        client: Client | None = None,
        *,
        reducers: int = 1,
        out: str | Path | None = None,
        local: bool = False,
        progress: bool | None = None,
        speculative: bool = True,
        name: str | None = None,
    ) -> Any:
        """Run the job: on the farm (the default client unless one is given), or with
        `local=True` in this process. Returns the output pairs sorted by key, unless `write`
        is overridden (None) or `out` names a directory to write part files to (its Path)."""
        from ._driver import run

        return run(self, client, reducers, out, local, progress, speculative, name)

    # the phase hooks: the tasks call these, with `emit` where the output goes
    def _corral_map(self, chunk: Any, emit: Emit) -> None:
        with _emitting(self, emit):
            for key, value in self.read(chunk):
                _drain(self.map(key, value), emit, "map")

    def _corral_combine(self, groups: Iterable[tuple[Any, Iterator[Any]]], emit: Emit) -> None:
        with _emitting(self, emit):
            for key, values in groups:
                _drain(self.combine(key, values), emit, "combine")

    def _corral_reduce(self, groups: Iterable[tuple[Any, Iterator[Any]]], emit: Emit) -> None:
        with _emitting(self, emit):
            for key, values in groups:
                _drain(self.reduce(key, values), emit, "reduce")

    def _corral_combines(self) -> bool:
        """Whether this job has a map-side combiner."""
        return overrides(self, "combine")

    def _corral_files(self) -> list[Path]:
        """Local files every task of this job needs in its directory (streaming's --file)."""
        return []

    def _corral_line(self, key: Any, value: Any) -> str:
        """One line of an output part file: JSON `[key, value]`."""
        import json

        return json.dumps([key, value], ensure_ascii=False)


@contextlib.contextmanager
def _emitting(job: MapReduce, emit: Emit) -> Iterator[None]:
    # shadows the method for this phase only; a combiner runs inside a map (a spill), so
    # what was there before comes back after
    before = job.__dict__.get("emit")
    job.__dict__["emit"] = emit
    try:
        yield
    finally:
        if before is None:
            job.__dict__.pop("emit", None)
        else:
            job.__dict__["emit"] = before


def _drain(result: Iterable[tuple[Any, Any]] | None, emit: Emit, where: str) -> None:
    if result is None:
        return
    for pair in result:
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"{where} yielded {pair!r}: yield (key, value) pairs")
        emit(pair[0], pair[1])


def overrides(job: MapReduce, method: str) -> bool:
    """Whether the job's class defines `method` itself rather than inheriting the base's."""
    return getattr(type(job), method) is not getattr(MapReduce, method)


def take_counters(job: MapReduce) -> dict[str, dict[str, int]]:
    """The job's counters so far, as {group: {name: n}}, cleared."""
    counters: collections.Counter[tuple[str, str]] = job.__dict__.pop(
        _COUNTERS, collections.Counter()
    )
    out: dict[str, dict[str, int]] = {}
    for (group, name), n in sorted(counters.items()):
        out.setdefault(group, {})[name] = n
    return out

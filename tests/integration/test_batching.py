"""The fast path through real processes: batched leases and results, small blobs inline.

The worker logs every request it makes (`-v`), which is how these tests see what crossed the
wire: they would fail if results went one request each, or small blobs on their own.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import pytest

from corral import Executor
from corral.protocol import TaskSpec

from .conftest import Farm

# the worker cannot import this test module: send its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def requests(log: Path) -> dict[str, int]:
    """How many requests of each kind a worker made, by method and last path segment."""
    counts: dict[str, int] = {}
    for method, path in re.findall(r"HTTP Request: (\w+) \S+/api/v1(/\S*) ", log.read_text()):
        kind = f"{method} {path.split('/')[1]}/{path.rsplit('/', 1)[-1]}"
        if path.startswith("/blobs/") and path != "/blobs/missing":
            kind = f"{method} blobs"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def square(x: int) -> int:
    return x * x


@pytest.mark.timeout(120)
def test_function_tasks_move_no_blob_on_its_own(farm: Callable[..., Farm]) -> None:
    f = farm()
    worker = f.start_worker(1)
    with f.client() as client, Executor(client) as ex:
        assert list(ex.map(square, range(40))) == [x * x for x in range(40)]
    seen = requests(worker.stderr_path)
    # the function, each call and each result travelled inside lease and result bodies
    assert seen.get("GET blobs", 0) == 0, seen
    assert seen.get("PUT blobs", 0) == 0 and seen.get("POST blobs/missing", 0) == 0, seen
    assert not any(k.startswith("POST tasks/") for k in seen), seen  # no per-task result call


@pytest.mark.timeout(120)
def test_short_tasks_are_leased_and_reported_in_batches(farm: Callable[..., Farm]) -> None:
    f = farm()
    worker = f.start_worker(1)
    n = 150
    with f.client() as client:
        job = client.submit_job([TaskSpec(argv=["true"]) for _ in range(n)])
        done = f.wait_job(client, job.id, timeout=90)
        assert done.counts.get("succeeded") == n, done.counts
        assert all(t.attempts == 1 for t in client.tasks(job.id))
    seen = requests(worker.stderr_path)
    calls = seen.get("POST workers/lease", 0) + seen.get("POST workers/results", 0)
    # a lease call and a result call a task would be 2 * n: results ride on lease calls (and
    # prefetch, which a loaded machine may switch off, makes it fewer still: see the unit tests)
    assert calls <= 1.2 * n, seen

"""The worker's requests outside its loops (_link.py), where they need no coordinator."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from corral.protocol import Assignment, InputRef, TaskSpec
from corral.worker import WorkerConfig, WorkerState
from corral.worker._link import Link


def test_an_inline_input_is_written_with_no_request_after_another_task_ended(
    tmp_path: Path,
) -> None:
    # nothing listens on port 9: a GET /blobs would fail the fetch
    state = WorkerState(1)
    link = Link(WorkerConfig("http://127.0.0.1:9", work_dir=tmp_path), state)
    data = b"the function, the same for every task"
    sha = hashlib.sha256(data).hexdigest()
    spec = TaskSpec(["true"], inputs={"fn": InputRef(sha, len(data))})
    a = Assignment("a", "j", "la", 1, 0.0, spec, inline={sha: data})
    b = Assignment("b", "j", "lb", 1, 0.0, spec, inline={sha: data})
    state.granted(a, 0.0)
    state.try_start("a", 0.0)
    state.granted(b, 0.1)
    state.finished(a, 0.2, ran=True)  # between B's grant and its staging

    async def fetch() -> str:
        try:
            return await link.fetch(sha, tmp_path / "fn")
        finally:
            await link.http.aclose()

    assert asyncio.run(fetch()) == sha
    assert (tmp_path / "fn").read_bytes() == data

"""AsyncClient, the event stream and as_completed, against a real farm."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import cloudpickle
import pytest

from corral import AsyncClient, Client
from corral.client import TaskFailed
from corral.protocol import TaskSpec

from .conftest import Farm

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(60)


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise LookupError(message)


def test_async_client_submits_maps_and_fetches(wide_farm: Farm, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncClient(wide_farm.url, wide_farm.token) as client:
            assert [w.name for w in await client.workers()] == ["w1"]
            assert await client.submit(square, 7) == 49
            assert await asyncio.gather(*client.map(square, range(5), chunksize=2)) == [
                0,
                1,
                4,
                9,
                16,
            ]
            with pytest.raises(LookupError, match="nope"):
                await client.submit(fail, "nope")
            task = await client.submit_command(["sh", "-c", "echo hi > out.txt"])
            assert task.status == "succeeded" and "out.txt" in task.manifest
            (written,) = await client.fetch(task, tmp_path)
            assert (written / "out.txt").read_text() == "hi\n"
            with pytest.raises(TaskFailed, match="exit code 3") as info:
                await client.submit_command(["sh", "-c", "echo why >&2; exit 3"])
            assert any("why" in note for note in info.value.__notes__)

    asyncio.run(main())


def test_async_as_completed_yields_each_task_once(wide_farm: Farm) -> None:
    async def main() -> None:
        async with AsyncClient(wide_farm.url, wide_farm.token) as client:
            job = await client.submit_job([TaskSpec(argv=["true"]) for _ in range(4)])
            seen = [t async for t in client.as_completed(job)]
            assert sorted(t.id for t in seen) == sorted(t.id for t in await client.tasks(job.id))
            assert {t.status for t in seen} == {"succeeded"}

    asyncio.run(main())


def test_event_stream_resumes_after_a_drop_without_missing_an_event(wide_farm: Farm) -> None:
    client = Client(wide_farm.url, wide_farm.token)
    try:
        # tasks of different lengths, so events keep coming after the drop
        job = client.submit_job([TaskSpec(argv=["sleep", str(0.5 * i)]) for i in range(1, 5)])
        first = []
        stream = client.events(job.id)
        for event in stream:
            first.append(event)
            if len(first) == 2:
                break
        stream.close()  # drop the connection while the job is still going
        assert client.job(job.id).status not in ("succeeded", "failed")
        rest = list(client.events(job.id, after=first[-1].seq))  # sent as Last-Event-ID
        everything = list(client.events(job.id))
        assert [e.seq for e in first + rest] == [e.seq for e in everything]
        assert sum(e.status == "succeeded" for e in first + rest) == 4
        finished = list(client.as_completed(job))
        assert len(finished) == 4 and {t.status for t in finished} == {"succeeded"}
    finally:
        client.close()


def test_client_futures_for_commands_and_functions(wide_farm: Farm) -> None:
    with Client(wide_farm.url, wide_farm.token) as client:
        command = client.submit_command(["sh", "-c", "echo $X > x.txt"], env={"X": "42"})
        futures = client.map(square, [1, 2, 3])
        assert [f.result(30) for f in futures] == [1, 4, 9]
        task = command.result(30)
        assert task.status == "succeeded" and command.task_id == task.id
        assert client.submit(square, 12).result(30) == 144

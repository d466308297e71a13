"""Issue 3 in the Coordinator, no sockets: program probes, drain, slots, retries, `why`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from corral.coordinator import Settings
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.service import Coordinator
from corral.coordinator.store import SQLiteStore
from corral.protocol import (
    Heartbeat,
    JobCreate,
    LeaseRequest,
    TaskResult,
    TaskSpec,
    WorkerRegister,
)

CAPS: dict[str, Any] = {"slots": 2, "programs": {}, "programs_missing": []}


def run(tmp_path: Path, body: Callable[[Coordinator], Awaitable[None]]) -> None:
    """A started coordinator on a real SQLite store and the real clock; always stopped."""
    settings = Settings(data_dir=tmp_path, lease_timeout=5.0, heartbeat_interval=0.5)
    store = SQLiteStore(settings.db_path)

    async def main() -> None:
        coord = Coordinator(store, LocalBlobs(settings.blob_dir), settings)
        await coord.start()
        try:
            await asyncio.wait_for(body(coord), 30)
        finally:
            await asyncio.wait_for(coord.stop(), 5)

    try:
        asyncio.run(main())
    finally:
        store.close()


def submit(coord: Coordinator, *specs: TaskSpec) -> list[str]:
    job = coord.submit(JobCreate(tasks=list(specs)), "alice")
    return [t.id for t in coord.store.list_tasks(job.id, 0, 100)]


def test_programs_are_probed_on_demand_then_matched(tmp_path: Path) -> None:
    async def body(coord: Coordinator) -> None:
        worker = coord.register(WorkerRegister("w", 2, CAPS)).id
        assert (await coord.heartbeat(worker, Heartbeat())).probe == []
        (task,) = submit(coord, TaskSpec(argv=["povray"], requires={"programs": "povray"}))
        assert (await coord.lease(worker, LeaseRequest(max=2))).assignments == []
        assert (await coord.heartbeat(worker, Heartbeat())).probe == ["povray"]
        reason = coord.pending_reason(coord.store.get_task(task))
        assert reason == "waiting for workers to look for program povray (1 worker checked)"

        # a lease held open is answered as soon as the worker reports the program
        held = asyncio.create_task(coord.lease(worker, LeaseRequest(max=2, wait=10)))
        await asyncio.sleep(0.05)
        found = {"programs": {"povray": "/usr/bin/povray"}, "programs_missing": []}
        reply = await coord.heartbeat(worker, Heartbeat(capabilities=found))
        assert reply.probe == []
        (grant,) = (await asyncio.wait_for(held, 2)).assignments
        assert grant.task_id == task

    run(tmp_path, body)


def test_a_probe_that_finds_nothing_explains_itself(tmp_path: Path) -> None:
    async def body(coord: Coordinator) -> None:
        worker = coord.register(WorkerRegister("w", 2, CAPS)).id
        (task,) = submit(coord, TaskSpec(argv=["x"], requires={"programs": "blender"}))
        missing = {"programs": {}, "programs_missing": ["blender"]}
        assert (await coord.heartbeat(worker, Heartbeat(capabilities=missing))).probe == []
        reason = coord.pending_reason(coord.store.get_task(task))
        assert reason == "no connected worker has program blender (1 worker checked)"

    run(tmp_path, body)


def test_drain_stops_leasing_and_tells_the_worker(tmp_path: Path) -> None:
    async def body(coord: Coordinator) -> None:
        worker = coord.register(WorkerRegister("w", 1, CAPS)).id
        held = asyncio.create_task(coord.lease(worker, LeaseRequest(max=1, wait=10)))
        await asyncio.sleep(0.05)
        coord.stops.drain(worker)
        assert (await asyncio.wait_for(held, 2)).assignments == []  # answered at once
        submit(coord, TaskSpec(argv=["true"]))
        assert (await coord.lease(worker, LeaseRequest(max=1))).assignments == []
        reply = await coord.heartbeat(worker, Heartbeat())
        assert reply.drain is True
        assert coord.store.get_worker(worker).status == "draining"  # a heartbeat keeps it
        other = coord.register(WorkerRegister("o", 1, CAPS)).id
        assert len((await coord.lease(other, LeaseRequest(max=1))).assignments) == 1

    run(tmp_path, body)


def test_leases_count_slots_and_the_coordinator_caps_them(tmp_path: Path) -> None:
    async def body(coord: Coordinator) -> None:
        worker = coord.register(WorkerRegister("w", 2, {**CAPS, "slots": 2})).id
        small, big = submit(
            coord, TaskSpec(argv=["b"]), TaskSpec(argv=["a"], requires={"cpus": "2"})
        )
        (got,) = (await coord.lease(worker, LeaseRequest(max=5))).assignments
        assert got.task_id == small  # the 2-slot task no longer fits beside it
        assert coord.store.get_worker(worker).slots_used == 1
        assert (await coord.lease(worker, LeaseRequest(max=1))).assignments == []
        reason = coord.pending_reason(coord.store.get_task(big))
        assert reason == "needs 2 free slots on one worker; at most 1 are free on any"
        coord.result(small, TaskResult(lease_id=got.lease_id, exit_code=0))
        (got,) = (await coord.lease(worker, LeaseRequest(max=2))).assignments
        assert got.task_id == big and coord.store.get_worker(worker).slots_used == 2
        (extra,) = submit(coord, TaskSpec(argv=["c"]))
        # the worker asks for more than it has free: the coordinator gives nothing
        assert (await coord.lease(worker, LeaseRequest(max=2))).assignments == []
        reason = coord.pending_reason(coord.store.get_task(extra))
        assert reason == "all 2 matching slots are busy (1 matching worker)"

    run(tmp_path, body)


def test_a_failed_retry_waits_then_wakes_a_held_lease(tmp_path: Path) -> None:
    async def body(coord: Coordinator) -> None:
        worker = coord.register(WorkerRegister("w", 1, CAPS)).id
        (task,) = submit(coord, TaskSpec(argv=["false"], retries=2, max_attempts=1))
        (first,) = (await coord.lease(worker, LeaseRequest(max=1))).assignments
        loop = asyncio.get_running_loop()
        failed_at = loop.time()
        after = coord.result(task, TaskResult(lease_id=first.lease_id, exit_code=1))
        assert after.status == "queued" and after.not_before is not None
        assert after.error == "exit code 1 on attempt 1; retry 1 of 2 in 1 s"
        assert coord.pending_reason(after) == "waiting 1 s before retrying a failed attempt"
        # no polling: the lease waits on an event the expiry loop fires when the time comes
        (second,) = (await coord.lease(worker, LeaseRequest(max=1, wait=10))).assignments
        assert 0.8 <= loop.time() - failed_at < 3
        assert (second.task_id, second.attempt) == (task, 2)
        coord.result(task, TaskResult(lease_id=second.lease_id, exit_code=1))
        (third,) = (await coord.lease(worker, LeaseRequest(max=1, wait=10))).assignments
        done = coord.result(task, TaskResult(lease_id=third.lease_id, exit_code=1))
        # retries=2 allows 3 attempts although max_attempts said 1
        assert (done.status, done.attempts) == ("failed", 3)
        assert done.error == "exit code 1; gave up after 3 attempts"

    run(tmp_path, body)


def test_requirement_values_are_refused_at_submit(tmp_path: Path) -> None:
    async def body(coord: Coordinator) -> None:
        from corral.coordinator.errors import ApiError

        for requires, words in [
            ({"python": "three"}, "version clause"),
            ({"cpus": "0"}, "cpus must be at least 1"),
            ({"min_memory": "lots"}, "not a size"),
        ]:
            try:
                submit(coord, TaskSpec(argv=["x"], requires=requires))
            except ApiError as exc:
                assert words in exc.detail and exc.status == 422
            else:
                raise AssertionError(f"{requires} was accepted")
        assert coord.store.list_jobs(10) == []

    run(tmp_path, body)

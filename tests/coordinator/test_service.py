"""The Coordinator itself, on a real SQLiteStore, with a fake clock for lease expiry.

The expiry loop sleeps in real time for at most `lease_timeout` between checks, so with a short
timeout it notices a clock moved forward within a fraction of a second; `until` polls for that
with a generous bound instead of asserting any timing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.coordinator import Settings
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.errors import ApiError
from corral.coordinator.service import Coordinator
from corral.coordinator.store import SQLiteStore
from corral.protocol import (
    INLINE_MAX,
    Heartbeat,
    InputRef,
    JobCreate,
    LeaseRequest,
    OutputFile,
    TaskResult,
    TaskSpec,
    WorkerRegister,
)

TIMEOUT = 0.2  # lease timeout, in fake seconds; also the expiry loop's longest real sleep
BOUND = 5.0  # real seconds any wait in a test may take before it counts as hung


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Farm:
    coord: Coordinator
    store: SQLiteStore
    clock: FakeClock
    settings: Settings

    def submit(self, *specs: TaskSpec) -> str:
        return self.coord.submit(JobCreate(tasks=list(specs)), "alice").id

    def register(self, name: str = "w", slots: int = 4) -> str:
        return self.coord.register(WorkerRegister(name, slots)).id

    async def lease_one(self, worker: str) -> tuple[str, str]:
        (grant,) = (await self.coord.lease(worker, LeaseRequest(max=1))).assignments
        return grant.task_id, grant.lease_id

    def result(self, task_id: str, lease_id: str, exit_code: int = 0) -> Any:
        return self.coord.result(task_id, TaskResult(lease_id=lease_id, exit_code=exit_code))

    def status(self, task_id: str) -> str:
        return self.store.get_task(task_id).status


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (polling) until `check()` holds, failing after BOUND real seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + BOUND
    while not check():
        assert loop.time() < give_up, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, lease_timeout=TIMEOUT, heartbeat_interval=TIMEOUT / 4)


@pytest.fixture
def store(settings: Settings) -> Iterator[SQLiteStore]:
    s = SQLiteStore(settings.db_path)
    yield s
    s.close()


def farm(settings: Settings, store: SQLiteStore, clock: FakeClock) -> Farm:
    return Farm(
        Coordinator(store, LocalBlobs(settings.blob_dir), settings, clock), store, clock, settings
    )


def run(settings: Settings, store: SQLiteStore, body: Callable[[Farm], Awaitable[None]]) -> None:
    """Start a coordinator with a fake clock, run `body`, always stop it (bounded)."""

    async def main() -> None:
        f = farm(settings, store, FakeClock())
        await f.coord.start()
        try:
            await asyncio.wait_for(body(f), 30)
        finally:
            await asyncio.wait_for(f.coord.stop(), BOUND)

    asyncio.run(main())


def spec(*argv: str, **fields: Any) -> TaskSpec:
    return TaskSpec(argv=list(argv or ["true"]), **fields)


# lease expiry


def test_silent_worker_loses_its_lease_and_the_task_is_requeued(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        f.submit(spec(max_attempts=3))
        first = f.register("first")
        task_id, first_lease = await f.lease_one(first)
        assert store.get_task(task_id).attempts == 1

        f.clock.advance(TIMEOUT * 2)  # `first` says nothing for two lease timeouts
        await until(lambda: f.status(task_id) == "queued", "the lease expires")
        task = store.get_task(task_id)
        assert (task.attempts, task.worker_id) == (1, None)
        assert task.error is not None and "lost" in task.error
        assert store.get_worker(first).status == "lost"

        second = f.register("second")
        again, second_lease = await f.lease_one(second)
        assert again == task_id and second_lease != first_lease
        assert store.get_task(task_id).attempts == 2

        with pytest.raises(ApiError) as refused:  # the first worker's late result
            f.result(task_id, first_lease, exit_code=0)
        assert (refused.value.code, refused.value.status) == ("stale_lease", 409)
        task = store.get_task(task_id)
        assert (task.status, task.worker_id, task.exit_code) == ("running", second, None)
        reply = await f.coord.heartbeat(first, Heartbeat(leases=[first_lease]))
        assert reply.cancel == [first_lease]

        assert f.result(task_id, second_lease, exit_code=0).status == "succeeded"

    run(settings, store, body)


def test_a_heartbeating_worker_keeps_its_lease(settings: Settings, store: SQLiteStore) -> None:
    async def body(f: Farm) -> None:
        f.submit(spec())
        worker = f.register()
        task_id, lease_id = await f.lease_one(worker)
        for _ in range(6):  # three lease timeouts in all, never more than 3/4 of one silent
            f.clock.advance(TIMEOUT * 0.5)
            reply = await f.coord.heartbeat(worker, Heartbeat(leases=[lease_id]))
            assert reply.cancel == []
            await asyncio.sleep(TIMEOUT / 2)  # give the expiry loop its chances
        assert f.status(task_id) == "running"
        assert store.get_worker(worker).status == "online"
        assert f.result(task_id, lease_id).status == "succeeded"

    run(settings, store, body)


def test_out_of_attempts_the_task_fails_with_a_reason(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        job_id = f.submit(spec(max_attempts=2))
        leases = []
        for attempt in (1, 2):
            worker = f.register(f"w{attempt}")
            task_id, lease_id = await f.lease_one(worker)
            leases.append(lease_id)
            assert store.get_task(task_id).attempts == attempt
            f.clock.advance(TIMEOUT * 2)
            final = "queued" if attempt == 1 else "failed"
            await until(lambda t=task_id, s=final: f.status(t) == s, f"attempt {attempt} expires")
        task = store.get_task(task_id)
        assert task.error == "worker lost on all 2 attempts"
        assert task.finished == f.clock.now
        assert store.get_job(job_id).status == "failed"
        assert [e.status for e in store.events(job_id, 0, 100)] == [
            "running",
            "queued",
            "running",
            "failed",
        ]
        for lease_id in leases:
            with pytest.raises(ApiError, match="no longer holds"):
                f.result(task_id, lease_id)
        assert store.get_task(task_id) == task
        assert (await f.coord.lease(f.register(), LeaseRequest(max=5))).assignments == []

    run(settings, store, body)


def test_restart_gives_running_leases_time_to_report(
    settings: Settings, store: SQLiteStore
) -> None:
    clock = FakeClock()

    async def before() -> tuple[str, str, str]:
        f = farm(settings, store, clock)
        await f.coord.start()
        f.submit(spec())
        worker = f.register()
        task_id, lease_id = await f.lease_one(worker)
        await asyncio.wait_for(f.coord.stop(), BOUND)
        return worker, task_id, lease_id

    async def after(worker: str, task_id: str, lease_id: str) -> None:
        clock.advance(3600)  # down for an hour: every lease is long past its expiry
        f = farm(settings, store, clock)
        await f.coord.start()
        try:
            await asyncio.sleep(TIMEOUT * 2)  # the expiry loop runs; the clock stands still
            assert f.status(task_id) == "running"
            reply = await f.coord.heartbeat(worker, Heartbeat(leases=[lease_id]))
            assert reply.cancel == []
            assert f.result(task_id, lease_id).status == "succeeded"
        finally:
            await asyncio.wait_for(f.coord.stop(), BOUND)

    asyncio.run(after(*asyncio.run(before())))


def test_stop_right_after_a_lease_does_not_hang(settings: Settings, store: SQLiteStore) -> None:
    # A lease wakes the expiry loop; stopping before the loop has run once used to lose the
    # cancel inside asyncio.wait_for (Python 3.11), so stop() waited forever.
    async def main() -> None:
        for _ in range(20):
            f = farm(settings, store, FakeClock())
            await f.coord.start()
            await asyncio.sleep(0)  # the loop is now waiting
            f.submit(spec())
            await f.lease_one(f.register())  # fires the wake-up, with no await after it
            await asyncio.wait_for(f.coord.stop(), BOUND)

    asyncio.run(main())


# kill and long polls


def test_kill_queued_and_running(settings: Settings, store: SQLiteStore) -> None:
    async def body(f: Farm) -> None:
        job_id = f.submit(spec("a"), spec("b"))
        worker = f.register()
        running, lease_id = await f.lease_one(worker)
        (queued,) = [t for t in store.job_task_ids(job_id, only_live=True) if t != running]
        f.coord.stops.kill([queued])
        assert f.status(queued) == "killed"
        assert (await f.coord.heartbeat(worker, Heartbeat(leases=[lease_id]))).cancel == []

        beat = asyncio.create_task(
            f.coord.heartbeat(worker, Heartbeat(leases=[lease_id], wait=BOUND))
        )
        await asyncio.sleep(0.01)
        f.coord.stops.kill([running])
        reply = await asyncio.wait_for(beat, BOUND)
        assert reply.cancel == [lease_id]
        assert store.get_job(job_id).status == "killed"
        with pytest.raises(ApiError, match="no longer holds"):
            f.result(running, lease_id)
        f.coord.stops.kill([running, queued])  # killing again changes nothing
        assert [e.status for e in store.events(job_id, 0, 100)].count("killed") == 2

    run(settings, store, body)


def test_waiting_lease_is_woken_by_a_submit(settings: Settings, store: SQLiteStore) -> None:
    async def body(f: Farm) -> None:
        worker = f.register()
        # the fake clock stands still, so only new work (or the real-time wait) ends the poll
        poll = asyncio.create_task(f.coord.lease(worker, LeaseRequest(max=1, wait=BOUND)))
        await asyncio.sleep(0.01)
        job_id = f.submit(spec())
        grant = await asyncio.wait_for(poll, BOUND * 2)
        assert [a.job_id for a in grant.assignments] == [job_id]

    run(settings, store, body)


def test_events_end_when_the_job_is_done(settings: Settings, store: SQLiteStore) -> None:
    async def body(f: Farm) -> None:
        job_id = f.submit(spec())

        async def collect() -> list[str]:
            return [e.status async for e in f.coord.events(job_id, 0, keepalive=BOUND) if e]

        reader = asyncio.create_task(collect())
        task_id, lease_id = await f.lease_one(f.register())
        await asyncio.sleep(0.01)
        assert not reader.done()
        f.result(task_id, lease_id, exit_code=2)
        assert await asyncio.wait_for(reader, BOUND) == ["running", "failed"]

    run(settings, store, body)


# validation and retries


def test_a_bad_task_anywhere_refuses_the_whole_job(settings: Settings, store: SQLiteStore) -> None:
    async def body(f: Farm) -> None:
        bad = [
            spec(requires={"min_cpus": "many"}),
            spec(requires={"no_such_key": "1"}),
            spec(limits={"wall_time": -1.0}),
            spec(max_attempts=0),
            TaskSpec(argv=[]),
        ]
        for problem in bad:
            with pytest.raises(ApiError) as refused:
                f.submit(spec("ok"), problem)
            assert refused.value.code == "invalid_argument"
            assert refused.value.detail.startswith("tasks[1].")
        with pytest.raises(ApiError, match="at least one task"):
            f.submit()
        assert store.list_jobs(10) == []

    run(settings, store, body)


def test_a_failed_attempt_with_retries_waits_then_runs_again(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        f.submit(spec(retries=1))
        worker = f.register()
        task_id, lease_id = await f.lease_one(worker)
        task = f.result(task_id, lease_id, exit_code=1)
        assert task.status == "queued"
        assert task.not_before is not None and task.not_before > f.clock.now
        assert (await f.coord.lease(worker, LeaseRequest(max=1))).assignments == []
        f.clock.now = task.not_before
        again, second = await f.lease_one(worker)
        assert again == task_id and second != lease_id
        task = f.result(task_id, second, exit_code=1)
        assert (task.status, task.attempts) == ("failed", 2)

    run(settings, store, body)


# batched results and prefetch


def test_batched_results_record_good_ones_and_name_stale_and_refused(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        f.submit(spec(), spec(), spec())
        w = f.register("w", slots=3)
        grant = await f.coord.lease(w, LeaseRequest(max=3))
        (a, b, c) = [(x.task_id, x.lease_id) for x in grant.assignments]
        f.coord.stops.kill([b[0]])  # b's lease is now stale
        bad = TaskResult(lease_id=c[1], exit_code=0, stdout="f" * 64)  # never uploaded
        reply = f.coord.results(
            w,
            {
                a[0]: TaskResult(lease_id=a[1], exit_code=0),
                b[0]: TaskResult(lease_id=b[1], exit_code=0),
                c[0]: bad,
            },
        )
        assert reply.stale == [b[0]]
        assert list(reply.refused) == [c[0]] and "never uploaded" in reply.refused[c[0]]
        assert (f.status(a[0]), f.status(b[0]), f.status(c[0])) == (
            "succeeded",
            "killed",
            "running",
        )
        # results ride on the next lease call too; another worker's lease is not ours to end
        other = f.register("other", slots=1)
        reply2 = await f.coord.lease(
            other, LeaseRequest(max=1, results={c[0]: TaskResult(lease_id=c[1], exit_code=0)})
        )
        assert reply2.stale == [c[0]] and f.status(c[0]) == "running"
        grant3 = await f.coord.lease(
            w, LeaseRequest(max=1, results={c[0]: TaskResult(lease_id=c[1], exit_code=3)})
        )
        assert grant3.stale == [] and f.status(c[0]) == "failed"

    run(settings, store, body)


def test_prefetch_takes_only_queued_tasks_of_the_named_job(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        short = f.submit(*(spec() for _ in range(5)))
        other = f.submit(spec())
        w = f.register("w", slots=1)
        # one slot, three ahead: four tasks, all of the named job
        grant = await f.coord.lease(w, LeaseRequest(max=4, prefetch=3, prefetch_job=short))
        assert [x.job_id for x in grant.assignments] == [short] * 4
        # with no job named, nothing beyond the slots (now all taken)
        none = await f.coord.lease(w, LeaseRequest(max=4, prefetch=3))
        assert none.assignments == []
        assert store.get_task(store.job_task_ids(other, only_live=True)[0]).status == "queued"

    run(settings, store, body)


def test_prefetch_does_not_take_a_task_submitted_while_the_call_is_held(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        job = f.submit(spec())
        w = f.register("w", slots=1)
        await f.lease_one(w)  # the only slot is busy
        held = asyncio.create_task(
            f.coord.lease(w, LeaseRequest(max=2, wait=0.5, prefetch=2, prefetch_job=job))
        )
        await asyncio.sleep(0.05)
        late = f.coord.add_tasks(job, [spec()])[0].id
        f.clock.advance(1.0)  # the held call's deadline passes as it wakes
        assert (await held).assignments == []
        assert f.status(late) == "queued"

    run(settings, store, body)


# small blobs inside bodies


def test_inline_blobs_in_a_result_are_stored_or_the_result_refused(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        f.submit(spec(), spec())
        w = f.register("w", slots=2)
        grant = await f.coord.lease(w, LeaseRequest(max=2))
        (a, b) = [(x.task_id, x.lease_id) for x in grant.assignments]
        out = b"forty-two\n"
        sha = hashlib.sha256(out).hexdigest()
        wrong = {sha: b"something else"}
        reply = f.coord.results(
            w,
            {
                a[0]: TaskResult(lease_id=a[1], exit_code=0, stdout=sha, inline={sha: out}),
                b[0]: TaskResult(lease_id=b[1], exit_code=0, stdout=sha, inline=wrong),
            },
        )
        assert list(reply.refused) == [b[0]] and "does not hash" in reply.refused[b[0]]
        assert f.status(a[0]) == "succeeded" and f.status(b[0]) == "running"
        assert f.coord.blobs.path(sha).read_bytes() == out
        big = b"x" * (INLINE_MAX + 1)
        too_big = {hashlib.sha256(big).hexdigest(): big}
        assert "upload it on its own" in (f.coord.store_inline(too_big) or "")
        assert not f.coord.blobs.has(next(iter(too_big)))

    run(settings, store, body)


def test_small_inputs_ride_with_the_lease_and_results_with_the_final_event(
    settings: Settings, store: SQLiteStore
) -> None:
    async def body(f: Farm) -> None:
        data = b"input bytes"
        sha = f.coord.blobs.put_bytes(data)
        job = f.submit(spec(inputs={"in.txt": InputRef(sha, len(data))}))
        w = f.register("w", slots=1)
        (a,) = (await f.coord.lease(w, LeaseRequest(max=1))).assignments
        assert a.inline == {sha: data}
        result = b"done"
        rsha = hashlib.sha256(result).hexdigest()
        manifest = {"out.txt": OutputFile(rsha, len(result), 0o644)}
        f.coord.results(
            w,
            {a.task_id: TaskResult(a.lease_id, 0, manifest=manifest, inline={rsha: result})},
        )
        events = [e async for e in f.coord.events(job, 0, 0.1) if e is not None]
        final = f.coord.event_detail(events[-1])
        assert final.status == "succeeded" and final.task is not None
        assert final.task.manifest == manifest and final.files == {rsha: result}
        assert f.coord.event_detail(events[0]).task is None  # "running": nothing attached

    run(settings, store, body)

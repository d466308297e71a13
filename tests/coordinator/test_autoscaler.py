"""The autoscaler (autoscaler.py): its fact gathering, pure, and its rounds against a real
SQLite store with a provider that records what it is asked (no processes, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from test_store_contract import Backend

from corral.coordinator import Settings
from corral.coordinator.access import hash_secret
from corral.coordinator.autoscaler import (
    BACKOFF,
    BACKOFF_MAX,
    JOIN_MARGIN,
    Autoscaler,
    launch_provider,
    new_launch_id,
    paused_until,
    queue_classes,
    worker_facts,
)
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.providers import ProviderError, ScaleSpec, Start, WorkerProvider
from corral.coordinator.providers.base import ScaleOptions
from corral.coordinator.scaling import QueueClass, WorkerState
from corral.coordinator.service import Coordinator
from corral.coordinator.store import NewTask, SQLiteStore
from corral.protocol import JobCreate, LeaseRequest, TaskResult, TaskSpec, Worker, WorkerRegister

# pure: the facts


def test_queue_classes_weight_each_jobs_mean_by_its_tasks() -> None:
    gpu = '{"label.gpu":"yes"}'
    rows = [("", "j1", 3), ("", "j2", 1), (gpu, "j3", 2)]
    got = queue_classes(rows, {"j1": 10.0, "j2": 30.0})
    assert got == [QueueClass({}, 4, 15.0), QueueClass({"label.gpu": "yes"}, 2, None)]
    # one job of the class without a finished task: the class's time is unknown
    assert queue_classes([("", "j1", 1), ("", "new", 1)], {"j1": 5.0}) == [QueueClass({}, 2)]
    assert queue_classes([], {}) == []


def test_launch_ids_name_their_provider() -> None:
    lid = new_launch_id("ssh:gpu-hosts")
    assert launch_provider(lid, ["local", "ssh:gpu-hosts"]) == "ssh:gpu-hosts"
    assert launch_provider(lid, ["local"]) is None
    assert launch_provider("local-1234567", ["local"]) is None  # 7 hex digits
    assert launch_provider("local-ABCDEF12", ["local"]) is None
    assert launch_provider("my-laptop", ["local"]) is None


def worker(id: str, used: int = 0, status: str = "online", name: str = "") -> Worker:
    caps = {"labels": {"site": "lab"}}
    return Worker(id, name or id, 2, used, status, caps, 0.0, 0.0)  # type: ignore[arg-type]


def test_worker_facts_keep_idle_since_and_drop_gone_workers() -> None:
    workers = [
        worker("a"),
        worker("b", used=1),
        worker("c", status="draining"),
        worker("gone", status="gone"),
        worker("lost", status="lost"),
    ]
    states, idle = worker_facts(workers, {"a": "local"}, {"a": 50.0, "b": 40.0}, 100.0)
    assert [s.id for s in states] == ["a", "b", "c"]
    assert states[0] == WorkerState("a", "local", 0, 2, 50.0, "online", {"labels": {"site": "lab"}})
    assert states[1].idle_since is None and states[1].provider is None  # busy: not idle
    assert states[2].status == "draining" and states[2].idle_since is None
    assert idle == {"a": 50.0}  # b is busy again: its old idle time is forgotten
    _, later = worker_facts([worker("a"), worker("b")], {}, idle, 120.0)
    assert later == {"a": 50.0, "b": 120.0}


def test_backoff_doubles_up_to_its_cap() -> None:
    assert paused_until(0, 100.0) == 100.0
    assert paused_until(1, 100.0) == 100.0 + BACKOFF
    assert paused_until(3, 100.0) == 100.0 + 4 * BACKOFF
    assert paused_until(60, 100.0) == 100.0 + BACKOFF_MAX


# rounds against a real store


class Recorder(WorkerProvider):
    """A provider that starts nothing: it records what it is asked; `refuse` fails launches."""

    kind = "local"

    def __init__(self, options: ScaleOptions, tmp: Path) -> None:
        super().__init__(ScaleSpec("local", options), tmp)
        self.started: list[Start] = []
        self.stopped: list[str] = []
        self.refuse = ""

    async def launch(self, start: Start) -> str:
        if self.refuse:
            raise ProviderError(self.refuse)
        self.started.append(start)
        return f"h-{start.launch_id}"

    async def stop(self, handle: str) -> None:
        self.stopped.append(handle)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Round = Callable[[], Awaitable[None]]


def scaled(
    tmp_path: Path,
    options: ScaleOptions,
    body: Callable[[Coordinator, Autoscaler, Recorder, Clock, Round], Awaitable[None]],
) -> None:
    settings = Settings(data_dir=tmp_path, url="http://127.0.0.1:1")
    store = SQLiteStore(settings.db_path)
    clock = Clock()
    coord = Coordinator(store, LocalBlobs(settings.blob_dir), settings, clock)
    provider = Recorder(options, tmp_path)
    scaler = Autoscaler(store, coord.stops, coord.metrics, settings, [provider], clock)

    async def one_round() -> None:
        await scaler.tick()
        await scaler.settle(5.0)

    try:
        asyncio.run(asyncio.wait_for(body(coord, scaler, provider, clock, one_round), 30))
    finally:
        store.close()


def counter(coord: Coordinator, name: str) -> float:
    value = coord.metrics.registry.get_sample_value(name, {"provider": "local"})
    return value or 0.0


@pytest.mark.timeout(30)
def test_a_launch_joins_works_idles_and_is_drained_then_cleaned_up(tmp_path: Path) -> None:
    async def body(
        coord: Coordinator, scaler: Autoscaler, p: Recorder, clock: Clock, tick: Round
    ) -> None:
        job = coord.submit(JobCreate(tasks=[TaskSpec(argv=["true"])] * 3), "alice")
        await tick()
        (start,) = p.started  # 3 tasks, 4 slots a worker: one launch
        assert start.slots == 4 and start.labels == {"gpu": "no"} and start.join is None
        token = coord.store.token_by_hash(hash_secret(start.token))
        assert token is not None and token.role == "worker"
        assert token.owner == f"autoscaler/{start.launch_id}"  # its own worker's, no other
        assert token.expires == clock.now + 60.0 + JOIN_MARGIN  # join_timeout, and a margin
        assert [x.state for x in scaler.status().launches] == ["launched"]
        assert counter(coord, "corral_autoscaler_launches_total") == 1

        await tick()
        assert len(p.started) == 1  # the launch counts: no second one for the same tasks

        wid = coord.register(WorkerRegister(start.launch_id, 4)).id
        await tick()
        (info,) = scaler.status().launches
        assert (info.state, info.worker_id, info.handle) == ("joined", wid, f"h-{start.launch_id}")
        token = coord.store.token_by_hash(hash_secret(start.token))
        assert token is not None and token.expires is None  # it lives as long as its worker

        grant = await coord.lease(wid, LeaseRequest(max=4))
        for a in grant.assignments:
            coord.result(a.task_id, TaskResult(lease_id=a.lease_id, exit_code=0))
        assert coord.store.get_job(job.id).status == "succeeded"
        await tick()  # seen idle now
        clock.now += 31.0  # past idle_timeout
        await tick()
        assert coord.store.get_worker(wid).status == "draining"
        assert scaler.status().launches[0].state == "draining"
        assert f"worker {start.launch_id} of provider local idle for 31 s" in " ".join(
            scaler.status().reasons
        )

        coord.deregister(wid)  # it finished draining and left
        await tick()
        (info,) = scaler.status().launches
        assert info.state == "stopped" and info.ended == clock.now
        assert p.stopped == [f"h-{start.launch_id}"]
        token = coord.store.token_by_hash(hash_secret(start.token))
        assert token is not None and token.revoked is not None
        assert scaler.status().providers[0].running == 0

    opts = ScaleOptions(max=2, slots=4, labels={"gpu": "no"}, idle_timeout=30, join_timeout=60)
    scaled(tmp_path, opts, body)


@pytest.mark.timeout(30)
def test_failed_and_unjoined_launches_count_as_failed_and_back_off(tmp_path: Path) -> None:
    async def body(
        coord: Coordinator, scaler: Autoscaler, p: Recorder, clock: Clock, tick: Round
    ) -> None:
        coord.submit(JobCreate(tasks=[TaskSpec(argv=["true"])]), "alice")
        p.refuse = "no quota left"
        await tick()
        (failed,) = scaler.status().launches
        assert (failed.state, failed.error) == ("failed", "no quota left")
        assert counter(coord, "corral_autoscaler_launch_failures_total") == 1

        await tick()  # backing off: no second try at once
        assert scaler.status().providers[0].launched == 1
        assert "1 failed launch in a row; trying again in 5 s" in scaler.status().reasons[0]

        p.refuse = ""
        clock.now += BACKOFF + 0.1
        await tick()
        (start,) = p.started
        clock.now += 10.1  # past join_timeout, and it never joined
        await tick()
        gave_up = next(x for x in scaler.status().launches if x.id == start.launch_id)
        assert (gave_up.state, gave_up.error) == ("failed", "did not join within 10 s")
        assert p.stopped == [f"h-{start.launch_id}"]
        token = coord.store.token_by_hash(hash_secret(start.token))
        assert token is not None and token.revoked is not None
        assert scaler.status().providers[0].failed == 2
        assert counter(coord, "corral_autoscaler_launch_failures_total") == 2

        # a worker that registers under a launch's name after a restart is adopted
        wid = coord.register(WorkerRegister(new_launch_id("local"), 1)).id
        await tick()
        assert [x.state for x in scaler.status().launches if x.worker_id == wid] == ["adopted"]

    scaled(tmp_path, ScaleOptions(max=1, join_timeout=10), body)


@pytest.mark.timeout(30)
def test_only_the_coordinator_holding_the_lead_launches(backend: Backend, tmp_path: Path) -> None:
    """Two coordinators on one database: one autoscaler acts, the other waits and says so;
    it takes over when the first one's store is closed (its session, and lock, gone)."""
    scalers: list[tuple[Autoscaler, Recorder]] = []
    for i in range(2):
        store = backend.open()
        settings = Settings(data_dir=tmp_path / f"c{i}", url="http://127.0.0.1:1")
        coord = Coordinator(store, LocalBlobs(settings.blob_dir), settings, Clock())
        p = Recorder(ScaleOptions(max=1), tmp_path / f"p{i}")
        scalers.append(
            (Autoscaler(store, coord.stops, coord.metrics, settings, [p], coord.clock), p)
        )
    (first, p1), (second, p2) = scalers
    first.store.create_job("j", "j", "alice", 1.0, [NewTask("t", 0, TaskSpec(argv=["true"]))])

    async def rounds() -> None:
        await first.tick()
        await second.tick()
        await first.settle(5.0)
        await second.settle(5.0)

    asyncio.run(rounds())
    assert first.leader and len(p1.started) == 1
    if backend.kind == "sqlite":
        return  # one coordinator per SQLite file: nothing to share
    assert not second.leader and p2.started == [] and not second.status().leader
    first.store.close()  # the server frees its lock a moment after the session ends

    async def until_second_leads() -> None:
        while not second.leader:
            await rounds()
            await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(until_second_leads(), 10))
    assert len(p2.started) == 1  # the first's launches died with it

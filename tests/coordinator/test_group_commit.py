"""Group commit: the policy as plain functions, then the service on each backend, with the
store's transactions counted (a commit is an outermost transaction that ended well)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_store_contract import Backend

from corral.coordinator import Settings
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.errors import ApiError
from corral.coordinator.group_commit import GroupPolicy, again, groups, wanted
from corral.coordinator.service import Coordinator
from corral.coordinator.store import Store
from corral.protocol import JobCreate, LeaseRequest, TaskResult, TaskSpec, WorkerRegister

# the policy


def test_a_group_is_flushed_at_once_only_when_full() -> None:
    policy = GroupPolicy(max_items=3)
    assert [policy.flush_now(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_the_queue_is_cut_into_groups_of_at_most_max_items_in_arrival_order() -> None:
    assert groups(0, 4) == []
    assert groups(3, 4) == [range(0, 3)]
    assert groups(9, 4) == [range(0, 4), range(4, 8), range(8, 9)]
    assert groups(2, 0) == [range(0, 1), range(1, 2)]  # a nonsense cap still makes progress


def test_after_a_failure_every_other_item_runs_again_in_order() -> None:
    assert again(4, 0) == [1, 2, 3]
    assert again(4, 2) == [0, 1, 3]
    assert again(1, 0) == []


def test_auto_groups_only_on_a_shared_database() -> None:
    assert [wanted("auto", shared) for shared in (False, True)] == [False, True]
    assert [wanted("on", shared) for shared in (False, True)] == [True, True]
    assert [wanted("off", shared) for shared in (False, True)] == [False, False]
    with pytest.raises(ValueError, match="not one of"):
        wanted("sometimes", True)


# the service, on each backend


class Commits:
    """Counts the store's commits: outermost transactions that ended without an error; with
    `fail`, the next commit raises instead (as a COMMIT the database refused)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        self.fail = False
        self._depth = 0
        begin = store._begin

        @contextlib.contextmanager
        def counted() -> Iterator[None]:
            outermost = self._depth == 0
            self._depth += 1
            try:
                with begin():
                    yield
                    if outermost and self.fail:
                        self.fail = False
                        raise RuntimeError("commit refused")
            finally:
                self._depth -= 1
            if outermost:
                self.count += 1

        store._begin = counted


def _run(
    backend: Backend, body: Callable[[Coordinator, Commits], Awaitable[None]], **kw: Any
) -> None:
    store = backend.open()
    root: Path = backend.path.parent
    settings = Settings(data_dir=root, lease_timeout=30.0, group_commit="on", **kw)
    coord = Coordinator(store, LocalBlobs(root / "blobs"), settings)

    # not started: no expiry loop writing on its own while commits are counted
    asyncio.run(asyncio.wait_for(body(coord, Commits(store)), 10.0))


async def _running(coord: Coordinator, workers: int) -> list[tuple[str, str, str]]:
    """(worker, task, lease) for one task leased to each of `workers` new workers."""
    coord.submit(JobCreate([TaskSpec(argv=["true"]) for _ in range(workers * 2)]), "alice")
    out = []
    for i in range(workers):
        w = coord.register(WorkerRegister(f"w{i}", 1)).id
        (a,) = (await coord.lease(w, LeaseRequest(max=1))).assignments
        out.append((w, a.task_id, a.lease_id))
    return out


def _report(coord: Coordinator, worker: str, task: str, lease: str) -> Awaitable[Any]:
    body = {task: TaskResult(lease_id=lease, exit_code=0)}
    return coord.commits.run(lambda: coord.results(worker, body))


def test_results_of_several_workers_share_one_commit(backend: Backend) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        running = await _running(coord, 4)
        commits.count = 0
        replies = await asyncio.gather(*(_report(coord, *r) for r in running))
        assert commits.count == 1
        assert all(not r.stale and not r.refused for r in replies)
        assert {coord.store.get_task(t).status for _, t, _ in running} == {"succeeded"}

    _run(backend, body)


def test_lease_calls_carrying_results_share_one_commit_and_take_distinct_tasks(
    backend: Backend,
) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        running = await _running(coord, 3)
        commits.count = 0
        asks = [
            (w, LeaseRequest(max=1, results={t: TaskResult(lease_id=x, exit_code=0)}))
            for w, t, x in running
        ]
        grants = await asyncio.gather(*(coord.lease(w, ask) for w, ask in asks))
        assert commits.count == 1
        new = [a.task_id for g in grants for a in g.assignments]
        assert len(new) == len(set(new)) == 3
        assert not {t for _, t, _ in running} & set(new)
        assert {coord.store.get_task(t).status for t in new} == {"running"}

    _run(backend, body)


def test_a_stale_result_in_a_group_changes_nothing_and_the_others_count(
    backend: Backend,
) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        (w1, t1, x1), (w2, t2, x2) = await _running(coord, 2)
        coord.stops.kill([t2])  # w2's lease is stale now
        commits.count = 0
        good, stale = await asyncio.gather(_report(coord, w1, t1, x1), _report(coord, w2, t2, x2))
        assert commits.count == 1
        assert (good.stale, stale.stale) == ([], [t2])
        assert coord.store.get_task(t1).status == "succeeded"
        assert coord.store.get_task(t2).status == "killed"
        with pytest.raises(ApiError) as refused:  # the single-result route: 409, nothing else
            await coord.commits.run(lambda: coord.result(t2, TaskResult(lease_id=x2, exit_code=0)))
        assert refused.value.code == "stale_lease"
        assert coord.store.get_task(t2).status == "killed"

    _run(backend, body)


def test_a_failing_request_fails_alone_and_undoes_what_it_wrote(backend: Backend) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        (w1, t1, x1), (w2, t2, x2), (w3, t3, x3) = await _running(coord, 3)

        def breaks() -> None:
            coord.results(w2, {t2: TaskResult(lease_id=x2, exit_code=0)})  # written, then it fails
            raise RuntimeError("broken request")

        commits.count = 0
        outcomes = await asyncio.gather(
            _report(coord, w1, t1, x1),
            coord.commits.run(breaks),
            _report(coord, w3, t3, x3),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], RuntimeError)
        assert not isinstance(outcomes[0], BaseException) and not outcomes[0].stale
        assert not isinstance(outcomes[2], BaseException) and not outcomes[2].stale
        assert commits.count == 1  # the others, again, without it
        status = [coord.store.get_task(t).status for t in (t1, t2, t3)]
        assert status == ["succeeded", "running", "succeeded"]

    _run(backend, body)


def test_a_refused_commit_fails_every_request_of_the_group_and_records_none(
    backend: Backend,
) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        running = await _running(coord, 3)
        commits.fail = True
        outcomes = await asyncio.gather(
            *(_report(coord, *r) for r in running), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert {coord.store.get_task(t).status for _, t, _ in running} == {"running"}
        # the workers send them again: recorded now
        replies = await asyncio.gather(*(_report(coord, *r) for r in running))
        assert all(not r.stale for r in replies)

    _run(backend, body)


def test_a_group_holds_at_most_max_items(backend: Backend) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        coord.commits.policy = GroupPolicy(max_items=2)
        running = await _running(coord, 5)
        commits.count = 0
        await asyncio.gather(*(_report(coord, *r) for r in running))
        assert commits.count == 3

    _run(backend, body)


def test_a_request_cancelled_while_queued_is_not_run(backend: Backend) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        (w1, t1, x1), (w2, t2, x2) = await _running(coord, 2)
        first = asyncio.ensure_future(_report(coord, w1, t1, x1))
        second = asyncio.ensure_future(_report(coord, w2, t2, x2))
        await asyncio.sleep(0)  # both queued
        first.cancel()
        await second
        assert coord.store.get_task(t1).status == "running"
        assert coord.store.get_task(t2).status == "succeeded"

    _run(backend, body)


def test_with_grouping_off_each_request_commits_on_its_own(backend: Backend) -> None:
    async def body(coord: Coordinator, commits: Commits) -> None:
        coord.commits.policy = GroupPolicy(enabled=False)
        running = await _running(coord, 3)
        commits.count = 0
        await asyncio.gather(*(_report(coord, *r) for r in running))
        assert commits.count == 3

    _run(backend, body)

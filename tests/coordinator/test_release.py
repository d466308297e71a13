"""Desktop mode on the coordinator: a worker gives a task back (fenced by its lease, not
counted as an attempt), and reports `idle-wait` or `suspended` in its heartbeats."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest
from test_api import NO_SUCH, Api, echo, run_api
from test_store_contract import GIVEN_BACK, submit

from corral.coordinator.scheduler import pending_reason
from corral.coordinator.store import Store
from corral.protocol import Worker


def test_store_release_requeues_without_counting_the_attempt(store: Store) -> None:
    (task_id,) = submit(store, "j1", 1)
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (leased,) = store.lease("w1", 1, 2.0, 12.0, 10)
    assert store.get_task(task_id).attempts == 1

    assert not store.release(task_id, "not-the-lease", 3.0, GIVEN_BACK)
    assert store.get_task(task_id).status == "running"

    assert store.release(task_id, leased.lease_id, 3.0, GIVEN_BACK)
    task = store.get_task(task_id)
    assert (task.status, task.attempts, task.worker_id) == ("queued", 0, None)
    assert "given back" in (task.error or "")
    assert store.get_worker("w1").slots_used == 0
    assert [e.status for e in store.events("j1", 0, 10)][-2:] == ["running", "queued"]
    assert not store.release(task_id, leased.lease_id, 4.0, GIVEN_BACK)  # once only

    (again,) = store.lease("w1", 1, 5.0, 15.0, 10)
    assert again.attempt == 1 and again.lease_id != leased.lease_id


def test_store_marks_silent_idle_workers_lost(store: Store) -> None:
    for name in ("a", "b"):
        store.register_worker(name, name, 1, {}, 1.0)
    store.touch_worker("a", 1.0, "suspended", None)
    store.touch_worker("b", 1.0, "idle-wait", None)
    assert sorted(store.mark_lost_workers(5.0)) == ["a", "b"]


@pytest.fixture
def serve(tmp_path: Path) -> Callable[..., None]:
    """serve(body, **settings): run `body(api)` against a fresh coordinator."""
    return functools.partial(run_api, tmp_path)


def test_release_endpoint_is_fenced_and_requeues(serve: Callable[..., None]) -> None:
    async def body(api: Api) -> None:
        await api.submit(echo())
        worker = await api.register()
        (grant,) = await api.lease(worker)
        task_id, lease_id = grant["task_id"], grant["lease_id"]

        r = await api.http.post(f"/tasks/{task_id}/release", json={"lease_id": NO_SUCH})
        assert (r.status_code, r.json()["error"]) == (409, "stale_lease")
        assert (await api.task(task_id))["status"] == "running"

        r = await api.http.post(f"/tasks/{task_id}/release", json={"lease_id": lease_id})
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["attempts"]) == ("queued", 0)
        # the old lease is dead: its result and its heartbeat are refused
        assert (await api.result(task_id, lease_id)).status_code == 409
        assert await api.heartbeat(worker, [lease_id]) == [lease_id]
        (again,) = await api.lease(worker)
        assert (again["task_id"], again["attempt"]) == (task_id, 1)

    serve(body)


@pytest.mark.parametrize("status", ["idle-wait", "suspended", "online"])
def test_heartbeat_status_is_the_workers_status(serve: Callable[..., None], status: str) -> None:
    async def body(api: Api) -> None:
        worker = await api.register()
        r = await api.http.post(f"/workers/{worker}/heartbeat", json={"status": status})
        assert r.status_code == 200, r.text
        (w,) = (await api.http.get("/workers")).json()
        assert w["status"] == status
        r = await api.http.post(f"/workers/{worker}/heartbeat", json={"status": "lost"})
        assert r.status_code == 422 or r.status_code == 400, r.text

    serve(body)


def test_pending_reason_counts_workers_waiting_for_an_idle_machine() -> None:
    desk = Worker("w1", "desk", 1, 0, "suspended", {}, 0.0, 0.0)
    assert pending_reason({}, [desk], 0) == (
        "no worker is connected (1 waiting for their machine to be idle)"
    )

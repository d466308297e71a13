"""What the autoscaler asks of the store, on both backends: the ready queue by job, jobs' mean
run times, a launch token's expiry, and the one lead among coordinators."""

from __future__ import annotations

import time

import pytest
from test_store_contract import Backend, lease_one, ok, submit

from corral.coordinator.store import NotFound, Store, TokenRecord


def test_ready_tasks_by_class_and_job_and_mean_run_times(store: Store) -> None:
    submit(store, "j1", 3, now=1.0)
    submit(store, "j2", 2, now=2.0, requires={"os": "linux"})
    first = submit(store, "j3", 1, now=3.0)
    submit(store, "j4", 1, now=4.0, after=first)  # held on its dependency: not ready
    store.register_worker("w1", "box", 4, {}, 1.0)
    leased = lease_one(store, "w1", now=10.0)  # j1's first task, running: not queued
    assert leased.job_id == "j1"
    assert store.finish(leased.task_id, leased.lease_id, ok(), 14.0)
    rows = sorted((job, n) for _, job, n in store.ready_by_job())
    assert rows == [("j1", 2), ("j2", 2), ("j3", 1)]
    classes = {key for key, job, _ in store.ready_by_job() if job == "j2"}
    assert classes == {'{"os":"linux"}'}
    assert store.mean_run_seconds(["j1", "j2", "nope"]) == {"j1": 4.0}
    assert store.mean_run_seconds([]) == {}


def test_a_tokens_expiry_can_be_changed(store: Store) -> None:
    store.add_token(TokenRecord("tok_1", "launch", "worker", "autoscaler", "ab" * 32, 1.0, 61.0))
    store.set_token_expiry("tok_1", None)
    found = store.token_by_hash("ab" * 32)
    assert found is not None and found.expires is None
    with pytest.raises(NotFound):
        store.set_token_expiry("tok_nope", 5.0)


def test_one_coordinator_leads_until_it_goes(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    assert first.lead("autoscaler") and first.lead("autoscaler")  # taken, then kept
    if backend.kind == "sqlite":  # one coordinator per SQLite file: it always leads
        return
    assert not second.lead("autoscaler")
    assert second.lead("something else")
    first.close()  # its session ends, and the server frees its lock a moment later
    deadline = time.monotonic() + 10
    while not second.lead("autoscaler"):
        assert time.monotonic() < deadline, "the lead was never freed"
        time.sleep(0.05)
    assert second.lead("autoscaler")

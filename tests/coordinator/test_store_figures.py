"""The store's figures for GET /metrics (_figures.py), on both backends."""

from __future__ import annotations

from test_store_contract import lease_one, submit

from corral.coordinator.store import Store


def test_figures_count_live_tasks_workers_and_slots(store: Store) -> None:
    submit(store, "j1", 3, owner="alice")
    submit(store, "j2", 2, owner="bob", requires={"os": "linux"})
    store.register_worker("w1", "box", 4, {}, 1.0)
    store.register_worker("w2", "other", 2, {}, 1.0)
    store.set_worker_status("w2", "gone")
    lease_one(store, "w1")
    queued = {(owner, n) for _, owner, n in store.live_task_counts("queued")}
    assert queued == {("alice", 2), ("bob", 2)}
    assert [(o, n) for _, o, n in store.live_task_counts("running")] == [("alice", 1)]
    assert len({cls for cls, _, _ in store.live_task_counts("queued")}) == 2  # two classes
    assert store.worker_counts() == {"online": 1, "gone": 1}
    assert store.slot_counts() == (1, 4)
    assert store.blob_bytes() == 0

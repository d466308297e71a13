"""The Store contract for checkpoints (issue 14), on every backend."""

from __future__ import annotations

from test_store_contract import ok, spec

from corral.coordinator.store import Leased, NewTask, Store
from corral.protocol import OutputFile

SHA = "a" * 64


def running(store: Store) -> Leased:
    """Task t0 leased by worker a at 10, its lease running to 40."""
    store.create_job("j", "job", "alice", 1.0, [NewTask("t0", 0, spec("p"))])
    store.register_worker("a", "a", 1, {}, 1.0)
    (leased,) = store.lease("a", 1, 10.0, 40.0, 100)
    return leased


def files(size: int) -> dict[str, OutputFile]:
    return {"state": OutputFile(SHA, size, 0o600), "sub/more": OutputFile("b" * 64, 1)}


def test_a_checkpoint_is_recorded_under_a_live_lease_and_listed(store: Store) -> None:
    leased = running(store)
    assert store.save_checkpoint("t0", leased.lease_id, files(10), 20.0) == 1
    assert store.save_checkpoint("t0", leased.lease_id, files(20), 21.0) == 2
    (first, second) = store.checkpoints(["t0", "nope"])["t0"]
    assert (first.n, first.attempt, first.created, first.size, first.files) == (1, 1, 20.0, 11, 2)
    assert (second.n, second.size, second.bad) == (2, 21, False)
    restored = store.checkpoint_files("t0", 2)
    assert restored is not None and restored.files == files(20)
    assert store.checkpoint_files("t0", 9) is None


def test_a_save_under_a_dead_lease_records_nothing(store: Store) -> None:
    leased = running(store)
    assert store.save_checkpoint("t0", "other-lease", files(1), 20.0) is None
    assert store.save_checkpoint("t0", leased.lease_id, files(1), 41.0) is None  # expired
    assert store.finish("t0", leased.lease_id, ok(), 30.0)
    assert store.save_checkpoint("t0", leased.lease_id, files(1), 31.0) is None  # finished
    assert store.checkpoints(["t0"]) == {}


def test_the_last_two_good_checkpoints_are_kept(store: Store) -> None:
    leased = running(store)
    for i in range(4):
        store.save_checkpoint("t0", leased.lease_id, files(i), 20.0 + i)
    assert [c.n for c in store.checkpoints(["t0"])["t0"]] == [3, 4]
    store.discredit_checkpoint("t0", 4)
    listed = store.checkpoints(["t0"])["t0"]
    assert [(c.n, c.bad) for c in listed] == [(3, False), (4, True)]
    store.save_checkpoint("t0", leased.lease_id, files(9), 30.0)
    assert [(c.n, c.bad) for c in store.checkpoints(["t0"])["t0"]] == [(3, False), (5, False)]


def test_checkpoints_outlive_the_attempt_that_saved_them(store: Store) -> None:
    leased = running(store)
    store.save_checkpoint("t0", leased.lease_id, files(1), 20.0)
    assert [s.task_id for s in store.expire(50.0)] == ["t0"]  # the worker was lost
    (again,) = store.lease("a", 1, 60.0, 90.0, 100)
    assert again.attempt == 2
    assert store.save_checkpoint("t0", again.lease_id, files(2), 61.0) == 2
    assert [c.attempt for c in store.checkpoints(["t0"])["t0"]] == [1, 2]

"""The Store contract for short ids and worker restarts (issue 15), on every backend."""

from __future__ import annotations

from corral.coordinator.store import NewTask, Store
from corral.protocol import IdMatch, TaskSpec

JOB_A = "3dce" + "0" * 28
JOB_B = "3dcf" + "1" * 28
TASK_A = "3dce" + "a" * 28
TASK_B = "9abc" + "b" * 28


def named_spec(name: str) -> TaskSpec:
    return TaskSpec(argv=["echo"], name=name)


def two_jobs(store: Store) -> None:
    named = [NewTask(TASK_A, 0, named_spec("build")), NewTask(TASK_B, 1, named_spec("x"))]
    store.create_job(JOB_A, "first", "alice", 1.0, named)
    store.create_job(JOB_B, "second", "bob", 2.0, [NewTask("f" * 32, 0, named_spec("x"))])


def ids(found: list[IdMatch]) -> list[tuple[str, str]]:
    return [(m.kind, m.id) for m in found]


def test_ids_by_prefix(store: Store) -> None:
    two_jobs(store)
    assert ids(store.find_ids("3dce", None, None, 10)) == [("job", JOB_A), ("task", TASK_A)]
    assert ids(store.find_ids("3dc", None, None, 10)) == [
        ("job", JOB_A),
        ("job", JOB_B),
        ("task", TASK_A),
    ]
    assert store.find_ids(TASK_B, None, None, 10) == [IdMatch("task", TASK_B, JOB_A, "x")]
    assert store.find_ids("3dcea", None, None, 10)[0].job_id == JOB_A
    assert store.find_ids("0123", None, None, 10) == []
    # at most `limit` of each kind
    assert ids(store.find_ids("3", None, None, 1)) == [("job", JOB_A), ("task", TASK_A)]


def test_ids_of_one_owner(store: Store) -> None:
    two_jobs(store)
    assert ids(store.find_ids("3dc", None, "bob", 10)) == [("job", JOB_B)]
    assert store.find_ids("9abc", None, "bob", 10) == []  # alice's task


def test_a_task_by_name_within_a_job(store: Store) -> None:
    two_jobs(store)
    assert ids(store.find_ids("3dce", "build", None, 10)) == [("task", TASK_A)]
    assert ids(store.find_ids("3dc", "x", None, 10)) == [("task", TASK_B), ("task", "f" * 32)]
    assert store.find_ids("3dcf", "build", None, 10) == []
    assert store.find_ids("3dce", "x", "bob", 10) == []


def test_a_restarted_worker_replaces_its_old_row(store: Store) -> None:
    store.register_worker("old", "box", 1, {}, 1.0)
    store.register_worker("twin", "box", 1, {}, 1.5)  # online: another process, kept
    store.set_worker_status("old", "lost")
    store.register_worker("other", "pc", 1, {}, 1.0)
    store.set_worker_status("other", "gone")
    store.register_worker("new", "box", 1, {}, 2.0)
    assert sorted(w.id for w in store.list_workers()) == ["new", "other", "twin"]

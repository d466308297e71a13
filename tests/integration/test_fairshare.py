"""Fair share and priorities through real processes (issue 16): a real coordinator, real
workers, owners with their own tokens submitting short tasks (`true`), judged by the start and
finish times the coordinator recorded."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from corral.client import Client
from corral.protocol import Task, TaskSpec

from .conftest import Farm, run_cli, wait_for

TRUE = TaskSpec(argv=["true"])
WORKER_ARGS = ("--no-sandbox",)  # the order is the coordinator's; the sandbox only slows it


def owner_client(f: Farm, admin: Client, name: str, share: float | None = None) -> Client:
    """A client with a new submit token of its own (closed when the test ends)."""
    made = admin.create_token(name, "submit", share=share)
    client = Client(f.url, made.secret)
    f._clients.append(client)
    return client


def started(tasks: list[Task]) -> list[float]:
    return sorted(t.started for t in tasks if t.started is not None)


@pytest.mark.timeout(120)
def test_bob_s_few_tasks_overtake_alice_s_sweep(farm: Callable[..., Farm]) -> None:
    f = farm(workers=2, slots=2, args=WORKER_ARGS)
    admin = f.client()
    alice, bob = owner_client(f, admin, "alice"), owner_client(f, admin, "bob")
    sweep = alice.submit_job([TRUE] * 500, "sweep")

    def some_done() -> bool:
        return admin.job(sweep.id).counts.get("succeeded", 0) >= 40

    wait_for(some_done, 30.0, 0.05, what="alice's first tasks to finish")
    few = bob.submit_job([TRUE] * 20, "few")
    f.wait_job(admin, few.id, timeout=60.0)
    f.wait_job(admin, sweep.id, timeout=90.0)
    mine, theirs = admin.tasks(few.id), admin.tasks(sweep.id)
    assert all(t.status == "succeeded" for t in mine + theirs)
    first_bob = started(mine)[0]
    # the next few leases: what 4 slots hold, plus what the workers had fetched ahead
    overtaken = [s for s in started(theirs) if few.created <= s < first_bob]
    assert len(overtaken) <= 12, overtaken
    # bob is done while most of alice's sweep is still to run
    last_bob = max(t.finished or 0.0 for t in mine)
    after = [t for t in theirs if (t.started or 0.0) > last_bob]
    assert len(after) >= 250, (len(after), last_bob)


@pytest.mark.timeout(120)
def test_weights_two_to_one_split_the_slots_two_to_one(farm: Callable[..., Farm]) -> None:
    f = farm(workers=0)
    admin = f.client()
    carol = owner_client(f, admin, "carol", share=2.0)
    dave = owner_client(f, admin, "dave")
    jobs = {"carol": carol.submit_job([TRUE] * 300), "dave": dave.submit_job([TRUE] * 300)}
    for _ in range(2):  # both owners queued before the first slot frees
        f.start_worker(2, args=WORKER_ARGS)
    for job in jobs.values():
        f.wait_job(admin, job.id, timeout=90.0)
    tasks = {who: admin.tasks(job.id) for who, job in jobs.items()}
    # the window in which both still had queued work: until either's last task started
    end = min(started(mine)[-1] for mine in tasks.values())
    # what is shared is slot-seconds: each task's slot is held from its lease (`started`)
    # to its result (`finished`), both on the coordinator's clock
    held = {
        who: sum((t.finished or 0.0) - (t.started or 0.0) for t in mine if (t.started or 0) < end)
        for who, mine in tasks.items()
    }
    ratio = held["carol"] / held["dave"]
    assert 1.5 <= ratio <= 2.7, held  # 2:1, give or take a quarter


@pytest.mark.timeout(60)
def test_a_later_job_of_higher_priority_starts_before_the_rest_of_an_earlier_one(
    farm: Callable[..., Farm],
) -> None:
    f = farm(workers=1, slots=1, args=WORKER_ARGS)
    admin = f.client()
    alice = owner_client(f, admin, "alice")
    early = alice.submit_job([TaskSpec(argv=["sleep", "0.05"])] * 60, "early")
    wait_for(lambda: admin.job(early.id).counts.get("succeeded", 0) >= 3, 20.0, 0.05)
    as_alice = {**f.env, "CORRAL_URL": f.url, "CORRAL_TOKEN": alice.token or ""}
    rc, _out, err = run_cli(("submit", "--priority", "5", "--", "true"), as_alice, f.root)
    assert rc == 0, err
    f.wait_job(admin, early.id, timeout=40.0)
    late = [j for j in admin.jobs() if j.id != early.id][0]
    (urgent,) = admin.tasks(late.id)
    before = [t for t in admin.tasks(early.id) if (t.started or 0) > late.created]
    overtaken = [t for t in before if (t.started or 0) < (urgent.started or 0)]
    assert late.priority == 5
    assert len(overtaken) <= 3, overtaken  # the one running and what was fetched ahead
    assert len(before) - len(overtaken) >= 30


@pytest.mark.timeout(60)
def test_bad_priority_and_share_are_one_line_errors(farm: Callable[..., Farm]) -> None:
    f = farm()
    admin = f.client()
    tokens = admin.tokens()
    for args, flag in [
        (("submit", "--priority", "abc", "--", "true"), "--priority 'abc'"),
        (("submit", "--priority", "1.5", "--", "true"), "--priority '1.5'"),
        (("token", "create", "--role", "submit", "--name", "x", "--share", "-1"), "--share '-1'"),
        (("token", "create", "--role", "submit", "--name", "x", "--max-slots", "z"), "--max-"),
    ]:
        rc, out, err = f.cli(*args)
        assert rc != 0 and out == "", (args, out, err)
        assert len(err.strip().splitlines()) == 1 and flag in err, (args, err)
    assert admin.jobs() == [] and admin.tokens() == tokens  # nothing half-made


@pytest.mark.timeout(60)
def test_why_says_whose_turn_it_is(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1, slots=1, args=WORKER_ARGS)
    admin = f.client()
    alice, bob = owner_client(f, admin, "alice"), owner_client(f, admin, "bob")
    sleepy = TaskSpec(argv=["sleep", "3"])
    mine = alice.submit_job([sleepy] * 2)
    f.wait_task(admin, mine.task_ids[0], {"running"})
    bob.submit_job([sleepy])
    rc, out, err = f.cli("why", mine.task_ids[1])
    assert rc == 0, err
    assert "alice has used 100% of the farm in the last hour (share 1)" in out, out
    assert "bob's tasks go first; all 1 matching slots are busy" in out, out

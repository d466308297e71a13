"""Issue 3 over real processes: requirements and `why`, slots, retries, drain, the worker
cache, and many workers racing for the same tasks."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.protocol import TaskSpec

from .conftest import Farm, run_cli, wait_for


def sh(script: str, **kw: object) -> TaskSpec:
    return TaskSpec(argv=["sh", "-c", script], **kw)  # type: ignore[arg-type]


# Program names no machine has: the test must not depend on what Debian packages happen to be
# installed (Debian's `povray` and `blender` are real packages).
RENDERER = "corral-test-renderer"
ABSENT = "corral-test-absent-program"


def fake_program(root: Path, name: str) -> dict[str, str]:
    """An env whose PATH has `name` on it (for a worker), as a tiny shell script."""
    bin_dir = root / f"bin-{name}"
    bin_dir.mkdir(parents=True, exist_ok=True)
    prog = bin_dir / name
    prog.write_text("#!/bin/sh\necho fake\n")
    prog.chmod(0o755)
    import os

    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def submit_cli(f: Farm, *args: str) -> str:
    """`corral submit ARGS`; returns the one task's id."""
    rc, out, err = f.cli("submit", *args)
    assert rc == 0, err
    (task,) = f.client().tasks(out.strip())
    return task.id


@pytest.mark.timeout(90)
def test_requirements_place_tasks_and_why_explains_waiting_ones(
    farm: Callable[..., Farm], tmp_path: Path
) -> None:
    f = farm()
    plain = f.start_worker(args=("--label", "site=lab", "--expose-env", "GREETING=hello"))
    render = f.start_worker(slots=2, env=fake_program(tmp_path, RENDERER))
    client = f.client()

    # a program only one worker has: probed on demand, then placed there
    drawn = submit_cli(f, "--requires", f"programs={RENDERER}", "--", "sh", "-c", "echo drawn")
    assert f.wait_task(client, drawn, {"succeeded"}).worker_id == render.id
    caps = {w.id: w.capabilities for w in client.workers()}
    assert RENDERER in caps[render.id]["programs"]

    # the plain worker answers the same probe with its next heartbeat, which on a loaded
    # machine may come after the task already ran on the other one
    def missing_on_plain() -> bool:
        (w,) = (w for w in client.workers() if w.id == plain.id)
        return RENDERER in w.capabilities.get("programs_missing", [])

    wait_for(missing_on_plain, 10, 0.1, "the plain worker's probe answer")

    # a label and an exposed variable: only the first worker, which passes GREETING on
    job = client.submit_job(
        [
            sh("echo $GREETING", requires={"label.site": "lab", "env.GREETING": "*"}),
            sh("true", requires={"python": ">=3.8,<4"}),
        ]
    )
    greet, py = (t.id for t in client.tasks(job.id))
    assert f.wait_task(client, greet, {"succeeded"}).worker_id == plain.id
    assert client.log(greet)[0] == b"hello\n"
    assert f.wait_task(client, py, {"succeeded"}).status == "succeeded"

    # unsatisfiable: the reason names the program and how many workers were asked
    (absent,) = (
        t.id
        for t in client.tasks(client.submit_job([sh("true", requires={"programs": ABSENT})]).id)
    )
    want = f"no connected worker has program {ABSENT} (2 workers checked)"
    wait_for(lambda: client.task(absent).pending_reason == want, 10, 0.1, "why: absent")
    assert f.cli("why", absent)[1].strip() == want
    rc, out, _ = f.cli("show", "--json", absent)
    assert rc == 0 and json.loads(out)["pending_reason"] == want

    # capacity-bound: a 2-slot task fills the only worker with 2 slots
    (big,) = client.tasks(client.submit_job([sh("sleep 6", requires={"cpus": "2"})]).id)
    f.wait_task(client, big.id, {"running"})
    assert {w.id: w.slots_used for w in client.workers()}[render.id] == 2
    (second,) = client.tasks(client.submit_job([sh("true", requires={"cpus": "2"})]).id)
    reason = client.task(second.id).pending_reason
    assert reason == "all 2 matching slots are busy (1 matching worker)"
    assert f.wait_task(client, second.id, {"succeeded"}, timeout=30).worker_id == render.id


@pytest.mark.timeout(60)
def test_failures_are_retried_with_backoff_only_when_asked(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1)
    client = f.client()
    flaky = submit_cli(f, "--retries", "3", "--", "sh", "-c", "test $CORRAL_ATTEMPT -ge 3")
    job = client.submit_job([sh("exit 4", retries=1), sh("exit 5")])
    hopeless, once = (t.id for t in client.tasks(job.id))

    done = f.wait_task(client, flaky, {"succeeded", "failed"}, timeout=30)
    assert (done.status, done.attempts, done.exit_code) == ("succeeded", 3, 0)
    events = [e for e in client.events(done.job_id) if e.task_id == flaky]
    assert [e.status for e in events] == [
        "running", "queued", "running", "queued", "running", "succeeded",
    ]  # fmt: skip
    # backoff: 1 s before the first retry, 2 s before the second
    assert events[2].time - events[1].time >= 0.9
    assert events[4].time - events[3].time >= 1.9

    gave_up = f.wait_task(client, hopeless, {"failed"}, timeout=30)
    assert (gave_up.attempts, gave_up.error) == (2, "exit code 4; gave up after 2 attempts")
    plain = f.wait_task(client, once, {"failed"}, timeout=30)
    assert (plain.attempts, plain.exit_code) == (1, 5)


@pytest.mark.timeout(90)
def test_drain_finishes_running_work_then_leaves(farm: Callable[..., Farm]) -> None:
    # leases outlive a heartbeat stalled by a loaded machine: this test is about draining,
    # and an expired lease would requeue the drained worker's task to the second one
    f = farm(lease_timeout=10.0)
    first = f.start_worker()
    client = f.client()
    job = client.submit_job([sh("sleep 4; echo $CORRAL_TASK_ID") for _ in range(4)])
    running = wait_for(
        lambda: [t for t in client.tasks(job.id) if t.status == "running"], 10, 0.05, "a task"
    )
    assert running[0].worker_id == first.id
    assert client.drain_worker(first.id).status == "draining"
    second = f.start_worker()

    rc, out, err = f.cli("drain", first.name, "--wait", "30")
    assert rc == 0, err
    assert out.split() == [first.id, first.name, "gone"]
    assert first.proc.wait(10) == 0  # it left on its own
    tasks = {t.id: t for t in f.client().tasks(job.id)}
    # the task it was running finished there; it took no other
    assert tasks[running[0].id].status == "succeeded", (
        [(e.status, e.time) for e in client.events(job.id) if e.task_id == running[0].id],
        first.stderr()[-3000:],
    )
    assert tasks[running[0].id].worker_id == first.id
    assert f.wait_job(client, job.id, timeout=30).status == "succeeded"
    by_worker = [t.worker_id for t in client.tasks(job.id)]
    assert by_worker.count(first.id) == 1 and by_worker.count(second.id) == 3

    # SIGTERM drains too; `corral worker --drain` is another way to ask
    rc, out, err = f.cli("worker", "--server", f.url, "--drain", second.name)
    assert rc == 0, err
    assert out.split() == [second.id, second.name, "draining"]
    assert second.proc.wait(15) == 0
    assert {w.id: w.status for w in client.workers()}[second.id] == "gone"


@pytest.mark.timeout(60)
def test_cache_keeps_its_limit_counts_hits_and_refuses_a_corrupted_blob(
    farm: Callable[..., Farm], tmp_path: Path
) -> None:
    f = farm()
    w = f.start_worker(args=("--cache-size", "48K"))
    client = f.client()
    files = []
    for i in range(4):  # over what a lease carries inline (written straight, never cached)
        path = tmp_path / f"in{i}.bin"
        path.write_bytes(bytes([i]) * 16384)
        files.append(path)
    specs = [TaskSpec(argv=["cat", p.name], inputs=client.upload([p])) for p in [*files, files[3]]]
    job = client.submit_job(specs)
    assert f.wait_job(client, job.id, timeout=30).status == "succeeded"

    held = [p for p in w.cache_dir.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in held) <= 3 * 16384
    wait_for(lambda: client.workers()[0].capabilities["cache"]["hits"] >= 1, 10, 0.1, "a hit")
    cache = [x for x in client.workers() if x.id == w.id][0].capabilities["cache"]
    assert (cache["misses"], cache["bytes_fetched"], cache["max_bytes"]) == (4, 65536, 49152)
    assert cache["hits"] >= 1 and cache["bytes_held"] <= 49152
    env = {**f.env, "CORRAL_URL": f.url, "CORRAL_TOKEN": f.token, "COLUMNS": "250"}
    rc, out, _ = run_cli(("workers",), env, f.root)
    assert rc == 0 and f"{cache['hits']} hit 4 miss 64.0 KB in" in out

    # the coordinator's copy goes bad: the worker must not run the task on wrong bytes
    bad = tmp_path / "precious.txt"
    bad.write_bytes(b"the real data\n")
    refs = client.upload([bad])
    blob = f.data / "blobs" / refs["precious.txt"].sha256[:2] / refs["precious.txt"].sha256
    blob.chmod(0o644)
    blob.write_bytes(b"THE FAKE DATA\n")
    job = client.submit_job([TaskSpec(argv=["sh", "-c", "cat precious.txt"], inputs=refs)])
    (task,) = client.tasks(job.id)
    failed = f.wait_task(client, task.id, {"failed", "succeeded"})
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.startswith("staging inputs: ")
    assert "hashes to" in failed.error
    assert failed.stdout is None and client.log(task.id)[0] == b""


@pytest.mark.timeout(90)
def test_many_workers_racing_run_each_task_exactly_once(farm: Callable[..., Farm]) -> None:
    f = farm()
    for _ in range(4):
        f.start_worker(slots=2, verbose=False, args=("--no-sandbox",))
    # a file every task can append to: a root worker runs tasks as slot uids, which cannot
    # enter pytest's private tmp_path (and `set -e` fails a task whose append is refused)
    shared_dir = Path(tempfile.mkdtemp(prefix="corral-race-"))
    try:
        shared_dir.chmod(0o777)
        shared = shared_dir / "ran.txt"
        shared.touch(mode=0o666)
        shared.chmod(0o666)
        client = f.client()
        job = client.submit_job(
            [sh(f'set -e; echo "$CORRAL_TASK_ID" >> {shared}; sleep 0.0{i % 5}') for i in range(40)]
        )
        assert f.wait_job(client, job.id, timeout=60).status == "succeeded"
        lines = shared.read_text().split()
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)
    tasks = client.tasks(job.id)
    assert len(lines) == len(set(lines)) == 40
    assert set(lines) == {t.id for t in tasks}
    assert all(t.attempts == 1 for t in tasks)
    assert len({t.worker_id for t in tasks}) > 1  # the work really was shared
    assert all(w.slots_used == 0 for w in client.workers())

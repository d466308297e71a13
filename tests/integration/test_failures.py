"""Things going wrong on purpose: kills, a coordinator restart, a worker dying mid-task."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil
import pytest

from corral.protocol import TaskSpec

from .conftest import Farm, is_gone, wait_for


def sh(script: str, **kw: object) -> TaskSpec:
    return TaskSpec(argv=["sh", "-c", script], **kw)  # type: ignore[arg-type]


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.timeout(60)
def test_cli_kill_stops_the_whole_process_tree(farm: Callable[..., Farm]) -> None:
    # no sandbox: the test reads the task's pids, which a PID namespace would renumber
    f = farm(workers=1, args=("--no-sandbox",))
    client = f.client()
    job = client.submit_job([sh("echo $$; sleep 300 & echo $!; wait")])
    (task,) = client.tasks(job.id)

    # live stdout carries the shell's pid and its child's
    out = wait_for(
        lambda: (data := client.log(task.id)[0]).count(b"\n") >= 2 and data, 10, 0.1, "two pids"
    )
    shell_pid, sleep_pid = (int(x) for x in out.split())
    f.adopt(shell_pid, sleep_pid)  # gone at teardown even if the kill below fails
    assert psutil.Process(sleep_pid).cmdline() == ["sleep", "300"]
    assert not is_gone(shell_pid)

    rc, stdout, stderr = f.cli("kill", task.id)

    assert rc == 0, stderr
    assert stdout.strip() == f"{task.id[:12]} killed"
    assert client.task(task.id).status == "killed"
    assert client.job(job.id).status == "killed"
    wait_for(lambda: is_gone(shell_pid) and is_gone(sleep_pid), 5, what="the task's processes")
    # the worker's slot is free again: a new task runs at once, not after 300 s
    after = client.submit_job([sh("echo after")])
    assert f.wait_job(client, after.id, timeout=10).status == "succeeded"
    assert client.task(task.id).status == "killed"  # a late report did not overwrite the kill


def _json(value: object) -> bytes:
    return msgspec.json.encode(value)


@pytest.mark.timeout(90)
def test_coordinator_restart_keeps_state_and_running_tasks(
    farm: Callable[..., Farm], tmp_path: Path
) -> None:
    f = farm(workers=1, slots=2)
    client = f.client()
    old = client.submit_job(
        [sh(f"echo out {i}; echo err {i} >&2; mkdir -p d; printf {i} > d/r{i}.txt") for i in (1, 2)]
    )
    assert f.wait_job(client, old.id).status == "succeeded"
    job_before, tasks_before = _json(client.job(old.id)), _json(client.tasks(old.id))
    client.fetch(old.id, to=tmp_path / "before")
    before = files_under(tmp_path / "before")
    assert len(before) == 6

    # two tasks running across the restart: one ends while the coordinator is down,
    # one goes on after it is back
    live = client.submit_job(
        [sh("sleep 1.5; echo short > short.txt"), sh("sleep 8; echo long > long.txt")]
    )
    short, long_ = client.tasks(live.id)
    for t in (short, long_):
        f.wait_task(client, t.id, {"running"}, timeout=10)
    worker_before = client.task(long_.id).worker_id

    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert f.stop_server(signal.SIGTERM) in (0, -signal.SIGTERM)
    time.sleep(2.0)  # the short task finishes while nobody listens
    f.start_server()
    client = f.client()

    assert _json(client.job(old.id)) == job_before
    assert _json(client.tasks(old.id)) == tasks_before
    client.fetch(old.id, to=tmp_path / "after")
    assert files_under(tmp_path / "after") == before
    for t in client.tasks(old.id):
        assert client.log(t.id, "stderr")[0] == f"err {t.seq + 1}\n".encode()

    done = f.wait_job(client, live.id, timeout=30)
    assert done.status == "succeeded", client.tasks(live.id)
    short_after, long_after = client.tasks(live.id)
    # re-attached (attempt 1 on the same worker) or re-queued and run again; either finishes
    assert long_after.attempts in (1, 2)
    if long_after.attempts == 1:
        assert long_after.worker_id == worker_before
    written = {p.name: p for p in client.fetch(live.id, to=tmp_path / "live")}
    assert (written[short.id] / "short.txt").read_text() == "short\n"
    assert (written[long_.id] / "long.txt").read_text() == "long\n"


@pytest.mark.timeout(60)
def test_killed_worker_task_is_rerun_on_the_other(farm: Callable[..., Farm]) -> None:
    f = farm(workers=2, slots=1)
    client = f.client()
    job = client.submit_job([sh("sleep 2; echo attempt $CORRAL_ATTEMPT > a.txt", max_attempts=3)])
    (task,) = client.tasks(job.id)
    running = f.wait_task(client, task.id, {"running"}, timeout=10)
    first = next(w for w in f.workers if w.id == running.worker_id)
    other = next(w for w in f.workers if w is not first)
    time.sleep(0.3)  # well into the task

    f.kill_worker(first)

    done = f.wait_job(client, job.id, timeout=30)
    assert done.status == "succeeded"
    final = client.task(task.id)
    assert (final.status, final.attempts, final.exit_code) == ("succeeded", 2, 0)
    assert final.worker_id == other.id != first.id
    assert client.log(task.id)[0] == b""

    # the silent worker is marked lost by the same expiry pass (or, under load, the next one)
    def statuses() -> dict[str, str]:
        return {w.id: w.status for w in client.workers()}

    wait_for(lambda: statuses()[first.id] == "lost", 10, what="the killed worker to be lost")
    assert statuses()[other.id] == "online"

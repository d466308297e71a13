"""Speculative execution (issue 12) on a real farm: a straggler's backup wins, the slow first
attempt is killed, and only the fast attempt's result is recorded."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from corral.protocol import FINAL_STATUSES

from .conftest import Farm, is_gone, wait_for

# Slow only on its first attempt: that one takes the marker (mkdir is atomic) and sleeps; the
# backup finds the marker taken and is done at once. The marker sits outside both task
# directories, which is why these workers run without the sandbox.
SLOW_ONCE = (
    'if mkdir "$SHARED/marker" 2>/dev/null; then echo $$ > "$SHARED/slow.pid"; sleep 60;'
    " echo slow > out.txt; else echo fast > out.txt; fi"
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory both attempts reach: not under pytest's tmp (0700), since a root worker
    runs tasks as other users; open to all of them."""
    with tempfile.TemporaryDirectory(prefix="corral-spec-") as where:
        Path(where).chmod(0o1777)
        yield Path(where)


@pytest.mark.timeout(90)
def test_a_stragglers_backup_wins_and_the_slow_attempt_is_killed(
    farm: Callable[..., Farm], shared: Path
) -> None:
    f = farm(
        workers=2,
        slots=1,
        args=("--no-sandbox",),
        server_args=("--speculative-min-seconds", "1"),
    )
    slow = {"argv": ["sh", "-c", SLOW_ONCE], "name": "phase", "env": {"SHARED": str(shared)}}
    fast = {"argv": ["sh", "-c", "sleep 0.2; echo fast > out.txt"], "name": "phase"}
    started = time.monotonic()
    r = httpx.post(
        f"{f.url}/api/v1/jobs",
        json={"tasks": [slow] + [fast] * 5, "speculative": True},
        headers={"authorization": f"Bearer {f.token}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    job_id, slow_id = r.json()["id"], r.json()["task_ids"][0]
    assert r.json()["speculative"] is True
    client = f.client()

    done = f.wait_job(client, job_id, timeout=30)

    assert done.status == "succeeded", done
    assert time.monotonic() - started < 30  # the first attempt alone would take 60 s
    task = client.task(slow_id)
    assert task.exit_code == 0 and task.attempts == 1
    slow_pid = int(wait_for(lambda: (shared / "slow.pid").read_text().strip(), 5, what="pid"))
    f.adopt(slow_pid)
    (first,) = [w for w in f.workers if w.id != task.worker_id]  # it ran the slow attempt
    assert task.worker_id in {w.id for w in f.workers}
    (out,) = task.manifest.values()
    assert list(task.manifest) == ["out.txt"]
    assert client.read_blob(out.sha256) == b"fast\n"  # the backup's output, not the slow one's
    finals = [e for e in client.events(job_id) if e.task_id == slow_id]
    assert [e.status for e in finals if e.status in FINAL_STATUSES] == ["succeeded"]
    # the slow attempt's worker is told its lease is stale and kills it
    wait_for(lambda: is_gone(slow_pid), 15, what="the slow attempt to be killed")
    assert "cancelled by the coordinator" in first.stderr()
    assert client.task(slow_id).manifest == task.manifest  # its late news changed nothing

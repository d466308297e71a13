"""Chaos: two coordinators on one PostgreSQL database, each failed in turn under load.

Workers and a submitting client are given both URLs. Coordinator A fails mid-load and comes
back; then B fails. Every acknowledged submission must exist and finish, each task recorded
once (one final event, one row), and the farm must recover within a bound: a job submitted
after the failure has a task succeed. The numbers are printed (run with -s) for the note.

Two ways to fail, one scenario (`_chaos`):
- on loopback, kill -9 the coordinator process (restarted on the same port afterwards);
- with every coordinator, worker and the client on its own network-namespace host, cut the
  coordinator's link (`ip link set eth0 down` inside its namespace, brought back afterwards):
  it keeps running and keeps its database connection, but nobody reaches it, and a cut link
  answers nothing (no reset), so only timeouts tell. The coordinators reach PostgreSQL through
  its Unix socket, which a network namespace does not hide.

Bounded: 200 tasks, two faults, each test < 2 minutes.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from corral.client import Client
from corral.protocol import TaskSpec

from .conftest import PYTHON, free_port, stop_process, wait_for
from .test_netns import IN_CI, IP, IS_ROOT, Bridge, ip, stop_tree

PG_DSN = os.environ.get("CORRAL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# the same server through its Unix socket, for coordinators inside network namespaces
PG_SOCKET_DIR = os.environ.get("CORRAL_TEST_POSTGRES_SOCKET", "/var/run/postgresql")
JOBS, PER_JOB = 40, 5  # 200 tasks
RECOVER_BOUND_S = 20.0
CLIENT_TIMEOUT = 5.0


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh PostgreSQL database of its own (its name), dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"corral_mc_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL at {PG_DSN} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {PG_DSN} is unreachable: {exc}")
    yield name
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _tcp_dsn(name: str) -> str:
    return PG_DSN.rsplit("/", 1)[0] + "/" + name


@dataclass
class Coordinator:
    """One `corral server` process on its own data directory, optionally in a namespace."""

    root: Path
    dsn: str
    env: dict[str, str]
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    ns: str | None = None  # its network-namespace host, if any
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.starts += 1
        argv = [PYTHON, "-m", "corral", "server", "--host", self.host, "--port", str(self.port)]
        argv += ["--data", str(self.root), "--lease-timeout", "3"]
        argv += ["--store", self.dsn] if self.dsn else []  # else CORRAL_STORE, if set
        if self.ns is not None:
            argv = [str(IP), "netns", "exec", self.ns, *argv, "--insecure"]
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

        wait_for(healthy, 30.0, what=f"coordinator {self.root.name}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5.0)

    def link(self, state: str) -> None:
        assert self.ns is not None
        ip("-n", self.ns, "link", "set", "eth0", state)

    @property
    def token(self) -> str:
        return (self.root / "admin.token").read_text().strip()


class Submitter(threading.Thread):
    """Submits JOBS jobs through both URLs, up to `allowed` so far, noting each acknowledged
    one (in order) and each failure."""

    def __init__(self, urls: str, token: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(urls, token, timeout=CLIENT_TIMEOUT)
        self.acked: dict[str, list[str]] = {}  # job id -> task names, in acknowledged order
        self.refused = 0
        self.errors: list[str] = []  # (the last few, for a failure's message)
        self.allowed = JOBS // 2  # the test lets the rest go after the first failure

    def run(self) -> None:
        n = 0
        while n < JOBS:
            if n >= self.allowed:
                time.sleep(0.05)
                continue
            names = [f"j{n}-t{i}" for i in range(PER_JOB)]
            tasks = [TaskSpec(argv=["echo", x], name=x, max_attempts=5) for x in names]
            try:
                job = self.client.submit_job(tasks, name=f"j{n}")
            except Exception as exc:  # unacknowledged: the client may retry it, as a new job
                self.refused += 1
                self.errors = [*self.errors[-4:], f"{time.monotonic():.1f} {exc!r}"]
                time.sleep(0.2)
                continue
            self.acked[job.id] = names
            n += 1
            time.sleep(0.1)


def _recovery(sub: Submitter, watcher: Client, failed_at: float) -> float:
    """Seconds from a failure until a job acknowledged after it had a task succeed."""
    first_after = len(sub.acked)

    def recovered() -> bool:
        later = list(sub.acked)[first_after:]
        if not later:
            return False
        try:
            return any(t.status == "succeeded" for t in watcher.tasks(later[0]))
        except httpx.HTTPError:  # the watcher's coordinator is the one that failed
            return False

    what = f"the farm to recover (acked {first_after}; since then {sub.errors})"
    wait_for(recovered, RECOVER_BOUND_S, 0.1, what=what)
    return time.monotonic() - failed_at


def _duplicates(dsn: str) -> tuple[int, int]:
    """Tasks with more than one final event, and with more than one row (never)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        twice = conn.execute(
            "SELECT COUNT(*) FROM (SELECT task_id FROM events WHERE status IN"
            " ('succeeded', 'failed', 'killed') GROUP BY task_id HAVING COUNT(*) > 1) d"
        ).fetchone()
        ids = conn.execute("SELECT COUNT(*) - COUNT(DISTINCT id) FROM tasks").fetchone()
    assert twice is not None and ids is not None
    return int(twice[0]), int(ids[0])


@dataclass
class Faults:
    """How this test fails a coordinator and brings it back."""

    what: str
    fail: Callable[[Coordinator], None]
    restore: Callable[[Coordinator], None]


def _chaos(a: Coordinator, b: Coordinator, faults: Faults, database: str) -> None:
    """Fail A mid-load, restore it, fail B: nothing acknowledged lost, nothing twice."""
    urls = f"{a.url},{b.url}"
    sub = Submitter(urls, a.token)
    watcher = Client(f"{b.url},{a.url}", a.token, timeout=CLIENT_TIMEOUT)
    try:
        sub.start()
        wait_for(lambda: len(sub.acked) >= 8, 30.0, what="the first submissions")
        failed = time.monotonic()
        faults.fail(a)
        first = _recovery(sub, watcher, failed)
        faults.restore(a)  # clients and workers may return to it
        sub.allowed = JOBS
        wait_for(lambda: len(sub.acked) >= 24, 60.0, what="submissions after A's return")
        failed = time.monotonic()
        faults.fail(b)
        second = _recovery(sub, watcher, failed)
        sub.join(60.0)
        assert not sub.is_alive()
        faults.restore(b)

        def all_final() -> bool:
            return all(watcher.job(j).status in ("succeeded", "failed") for j in sub.acked)

        wait_for(all_final, 60.0, 0.5, what="every acknowledged job to finish")
        lost = 0
        for job_id, names in sub.acked.items():
            done = {t.name for t in watcher.tasks(job_id) if t.status == "succeeded"}
            lost += len(set(names) - done)
        twice, same_id = _duplicates(_tcp_dsn(database))
        print(
            f"\nmulticoord chaos ({faults.what}): failures injected 2; jobs acknowledged"
            f" {len(sub.acked)}, tasks checked {JOBS * PER_JOB}, submissions refused during"
            f" failover {sub.refused}; lost {lost}, duplicated {twice + same_id};"
            f" recovered in {first:.2f} s and {second:.2f} s"
        )
        assert (lost, twice, same_id) == (0, 0, 0)
        assert len(sub.acked) == JOBS
        assert max(first, second) < RECOVER_BOUND_S
    finally:
        sub.allowed = 0  # a failed test: stop submitting
        sub.client.close()
        watcher.close()


def _two_on_loopback(
    tmp_path: Path, database: str, env: dict[str, str]
) -> tuple[Coordinator, Coordinator]:
    """Coordinators A and B on loopback, on one database, both started."""
    a = Coordinator(tmp_path / "a", _tcp_dsn(database), env)
    b = Coordinator(tmp_path / "b", _tcp_dsn(database), env)
    a.start()
    try:
        b.start()
    except BaseException:
        stop_process(a.proc)  # type: ignore[arg-type]
        raise
    return a, b


def _worker_argv(urls: str, work_dir: Path, name: str) -> list[str]:
    argv = [PYTHON, "-m", "corral", "worker", "--server", urls, "--slots", "2"]
    return argv + ["--work-dir", str(work_dir), "--name", name, "-v", "--allow-all"]


@pytest.mark.timeout(150)
def test_two_coordinators_each_killed_lose_and_duplicate_nothing(
    tmp_path: Path, isolated: dict[str, str], database: str
) -> None:
    a, b = _two_on_loopback(tmp_path, database, isolated)
    assert a.token == b.token  # the admin token is the database's, not the data directory's
    workers: list[subprocess.Popen[bytes]] = []
    try:
        env = {**isolated, "CORRAL_TOKEN": a.token}
        for i in range(3):
            with (tmp_path / f"w{i}.log").open("ab") as log:
                argv = _worker_argv(f"{a.url},{b.url}", tmp_path / f"w{i}", f"w{i}")
                workers.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log))

        def kill(c: Coordinator) -> None:
            c.kill()

        def restart(c: Coordinator) -> None:
            if c.proc is not None and c.proc.poll() is not None:
                c.start()

        _chaos(a, b, Faults("kill -9 of each coordinator", kill, restart), database)
    finally:
        for w in workers:
            stop_process(w)
        for c in (a, b):
            if c.proc is not None:
                stop_process(c.proc)


@pytest.mark.skipif(not IS_ROOT, reason="network namespaces need root")
@pytest.mark.skipif(IP is None and not IN_CI, reason="iproute2 `ip` is not installed")
@pytest.mark.timeout(150)
def test_two_coordinators_each_cut_off_lose_and_duplicate_nothing(
    tmp_path: Path, isolated: dict[str, str], database: str
) -> None:
    if not Path(PG_SOCKET_DIR, ".s.PGSQL.5432").exists():
        message = f"no PostgreSQL socket in {PG_SOCKET_DIR} (CORRAL_TEST_POSTGRES_SOCKET)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    dsn = f"postgresql://postgres@/{database}?host={PG_SOCKET_DIR}"
    hosts = Bridge(f"crm-{secrets.token_hex(2)}")
    workers: list[subprocess.Popen[bytes]] = []
    coords: list[Coordinator] = []
    try:
        # a namespace of its own holds the bridge: cutting a coordinator's link cuts only it
        names = ["a", "b", "w0", "w1", "w2"]
        addrs = hosts.build("s", {n: i for i, n in enumerate(names, start=1)})
        for n in ("a", "b"):
            c = Coordinator(tmp_path / n, dsn, isolated, addrs[n], 8470, hosts.ns(n))
            coords.append(c)
            c.start()
        a, b = coords
        env = {**isolated, "CORRAL_TOKEN": a.token}
        for i in range(3):
            ns = hosts.ns(f"w{i}")
            argv = _worker_argv(f"{a.url},{b.url}", tmp_path / f"w{i}", f"w{i}")
            with (tmp_path / f"w{i}.log").open("ab") as log:
                workers.append(
                    subprocess.Popen(
                        [str(IP), "netns", "exec", ns, *argv], env=env, stdout=log, stderr=log
                    )
                )

        def cut(c: Coordinator) -> None:
            c.link("down")

        def mend(c: Coordinator) -> None:
            c.link("up")

        _chaos(a, b, Faults("link of each coordinator cut", cut, mend), database)
    finally:
        for w in workers:
            stop_tree(w)
        for c in coords:
            if c.proc is not None:
                stop_tree(c.proc)
        hosts.close()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "corral", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.timeout(120)
def test_work_kills_and_drains_made_on_one_coordinator_reach_a_worker_on_the_other(
    tmp_path: Path, isolated: dict[str, str], database: str
) -> None:
    a, b = _two_on_loopback(tmp_path, database, isolated)
    env = {**isolated, "CORRAL_TOKEN": a.token}
    on_a = {**env, "CORRAL_URL": a.url}
    with (tmp_path / "w.log").open("ab") as log:  # this worker knows only B
        argv = _worker_argv(b.url, tmp_path / "w", "w")
        worker = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    client = Client(a.url, a.token, timeout=CLIENT_TIMEOUT)
    try:
        wait_for(lambda: any(w.status == "online" for w in client.workers()), 30.0, what="w")
        # a submit on A wakes the lease request the worker holds on B
        quick = client.submit_job([TaskSpec(argv=["echo", "hi"])], name="quick")
        wait_for(lambda: client.job(quick.id).status == "succeeded", 20.0, what="quick job")
        # a kill made on A reaches the worker through the heartbeat B holds
        slow = client.submit_job([TaskSpec(argv=["sleep", "60"])], name="slow")
        task = client.tasks(slow.id)[0]
        wait_for(lambda: client.task(task.id).status == "running", 20.0, what="running")
        done = _cli(on_a, "kill", task.id)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: client.task(task.id).status == "killed", 10.0, what="the kill")
        # and so does a drain: the worker leaves
        w = next(w for w in client.workers() if w.status == "online")
        done = _cli(on_a, "drain", w.id, "--wait", "30")
        assert done.returncode == 0, done.stderr
        assert worker.wait(20.0) == 0
    finally:
        client.close()
        stop_process(worker)
        for c in (a, b):
            if c.proc is not None:
                stop_process(c.proc)


@pytest.mark.timeout(60)
def test_server_store_from_the_command_line(
    tmp_path: Path, isolated: dict[str, str], database: str
) -> None:
    # CORRAL_STORE works as --store does: the schema is made, with its version
    c = Coordinator(tmp_path / "c", "", {**isolated, "CORRAL_STORE": _tcp_dsn(database)})
    c.start()
    stop_process(c.proc)  # type: ignore[arg-type]
    import psycopg

    with psycopg.connect(_tcp_dsn(database), autocommit=True) as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None and row[0] >= 1
        conn.execute("UPDATE schema_version SET version = version + 1")
    port = str(free_port())
    base = ["server", "--port", port, "--data", str(tmp_path / "d")]
    # a schema newer than this coordinator knows: refused, in one line, nothing started
    done = _cli({**isolated, "CORRAL_STORE": _tcp_dsn(database)}, *base)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "newer" in lines[0], done.stderr
    # a database that is not there: one line saying which
    done = _cli(isolated, *base, "--store", _tcp_dsn(f"{database}_absent"))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the store" in lines[0], done.stderr
    assert not (tmp_path / "d" / "admin.token").exists()

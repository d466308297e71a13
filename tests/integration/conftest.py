"""Fixtures for integration tests: real coordinator and worker processes over loopback HTTP.

Everything here is bounded in time, and teardown always stops every process a test started,
their descendants included (SIGTERM, then SIGKILL after a grace period).

`start_worker(user=NAME)` starts a worker as an unprivileged account (the `test_user` fixture
makes one): the worker process becomes that user before exec, through the same code a root
worker uses for its tasks (taskuser.py), so it reaches this Python and its work directory even
when they sit under a directory only root may search (a pyenv in /root, pytest's 0700 tmp).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest

from corral._net import is_loopback
from corral.client import Client
from corral.protocol import FINAL_STATUSES, Job, Task
from corral.worker.limits import locate
from corral.worker.sandbox import default_exposed, probe
from corral.worker.taskuser import Identity, become, reach, reach_for

T = TypeVar("T")

PYTHON = sys.executable
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL in teardown


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll until `predicate()` is truthy and return its value; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> int:
    """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code. Reaps the process."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(grace)


def descendants(pid: int) -> list[psutil.Process]:
    """Every live descendant of a process (empty if it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_leftovers(procs: list[psutil.Process], grace: float = STOP_GRACE) -> None:
    """SIGTERM what is still running among `procs`, then SIGKILL the rest."""
    alive = []
    for p in procs:
        try:
            p.terminate()
            alive.append(p)
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(alive, timeout=grace)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=grace)


def is_gone(pid: int) -> bool:
    """True when no process has this pid, or only a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def isolated_env(root: Path) -> dict[str, str]:
    """XDG directories under `root`; no CORRAL_* variables leak in from the outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        path = root / "xdg" / name.split("_")[1].lower()
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class WorkerProc:
    """One worker subprocess."""

    name: str
    work_dir: Path
    stderr_path: Path
    proc: subprocess.Popen[bytes]
    id: str = ""

    @property
    def cache_dir(self) -> Path:
        return self.work_dir / "cache"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@dataclass
class Farm:
    """A coordinator and its workers, all real subprocesses of this test."""

    root: Path
    env: dict[str, str]
    lease_timeout: float
    port: int = field(default_factory=free_port)
    server: subprocess.Popen[bytes] | None = None
    token: str = ""
    workers: list[WorkerProc] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    orphans: list[psutil.Process] = field(default_factory=list)
    _clients: list[Client] = field(default_factory=list)
    _server_starts: int = 0
    server_args: tuple[str, ...] = ()  # more options for `corral server`
    host: str = "127.0.0.1"  # where the coordinator listens (a namespace host's peer, say)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _spawn(
        self,
        argv: list[str],
        log: Path,
        env: dict[str, str],
        preexec: Callable[[], None] | None = None,
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=preexec,
            )
        self.procs.append(proc)
        return proc

    # the coordinator
    def start_server(self, timeout: float = 15.0) -> None:
        """Start (or restart) the coordinator on this farm's port and data directory."""
        assert self.server is None or self.server.poll() is not None, "server already running"
        self._server_starts += 1
        log = self.root / "logs" / f"server{self._server_starts}.log"
        argv = [PYTHON, "-m", "corral", "server", "--host", self.host]
        argv += ["--port", str(self.port), "--data", str(self.data)]
        argv += ["--lease-timeout", str(self.lease_timeout), *self.server_args]
        self.server = self._spawn(argv, log, self.env)

        def healthy() -> bool:
            if self.server is not None and self.server.poll() is not None:
                raise AssertionError(f"server exited early:\n{log.read_text()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout, what="the coordinator's /healthz")
        self.token = (self.data / "admin.token").read_text().strip()

    def stop_server(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Stop the coordinator and wait for it to exit; returns its exit code."""
        assert self.server is not None
        self.server.send_signal(sig)
        return self.server.wait(timeout)

    # workers
    def start_worker(
        self,
        slots: int = 1,
        verbose: bool = True,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        user: str | None = None,
        cgroup: DelegatedCgroup | None = None,
    ) -> WorkerProc:
        """Start a worker (extra `args` to `corral worker`), as the account `user` if given,
        inside the delegated `cgroup` if given; wait until it is online."""
        name = f"w{len(self.workers) + 1}"
        work_dir = self.root / name
        log = self.root / "logs" / f"{name}.log"
        argv = [PYTHON, "-m", "corral", "worker", "--server", self.url, "--slots", str(slots)]
        argv += ["--work-dir", str(work_dir), "--name", name] + (["-v"] if verbose else [])
        argv += list(args)
        preexec = as_user(user, work_dir) if user else None
        if cgroup is not None:
            preexec = cgroup.joining(preexec)
        env = {**self.env, **(env or {}), "CORRAL_TOKEN": self.token}
        proc = self._spawn(argv, log, env, preexec)
        worker = WorkerProc(name, work_dir, log, proc)
        self.workers.append(worker)
        with self.client() as client:

            def registered() -> str | None:
                if proc.poll() is not None:
                    raise AssertionError(f"worker {name} exited early:\n{worker.stderr()}")
                mine = [w for w in client.workers() if w.name == name and w.status == "online"]
                return max(mine, key=lambda w: w.registered).id if mine else None

            worker.id = wait_for(registered, 15.0, what=f"worker {name} to register")
        return worker

    def kill_worker(self, worker: WorkerProc) -> None:
        """kill -9 a worker; its task processes run on, and are killed at teardown."""
        self.orphans += descendants(worker.proc.pid)
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(5.0)

    def adopt(self, *pids: int) -> None:
        """Make sure these processes (say, a task's) are gone by the end of the test."""
        for pid in pids:
            try:
                self.orphans.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass

    # clients
    def client(self) -> Client:
        """A Python client with the admin token; closed at teardown if not before."""
        client = Client(self.url, self.token)
        self._clients.append(client)
        return client

    def cli(
        self, *args: str, stdin: str | None = None, timeout: float = 30.0
    ) -> tuple[int, str, str]:
        """Run `python -m corral ARGS` against this farm; returns (rc, stdout, stderr)."""
        env = {**self.env, "CORRAL_URL": self.url, "CORRAL_TOKEN": self.token}
        return run_cli(args, env, self.root, stdin=stdin, timeout=timeout)

    def wait_job(self, client: Client, job_id: str, timeout: float = 20.0) -> Job:
        """Wait until a job reaches a final status."""

        def final() -> Job | None:
            job = client.job(job_id)
            return job if job.status in FINAL_STATUSES else None

        return wait_for(final, timeout, 0.1, what=f"job {job_id} to finish")

    def wait_task(
        self, client: Client, task_id: str, statuses: set[str], timeout: float = 20.0
    ) -> Task:
        """Wait until a task is in one of `statuses`."""

        def reached() -> Task | None:
            task = client.task(task_id)
            return task if task.status in statuses else None

        return wait_for(reached, timeout, 0.05, what=f"task {task_id} to be {statuses}")

    # teardown
    def close(self) -> None:
        """Stop everything: workers first (they drain), then the coordinator, then leftovers."""
        for client in self._clients:
            client.close()
        workers = [w.proc for w in reversed(self.workers)]
        stop_all(workers + [p for p in self.procs if p not in workers])
        kill_leftovers(self.orphans)


def as_user(user: str, work_dir: Path) -> Callable[[], None]:
    """A preexec that makes a child the unprivileged `user`, owning `work_dir`."""
    entry = pwd.getpwnam(user)
    identity = Identity(entry.pw_uid, entry.pw_gid)
    work_dir.mkdir(parents=True, exist_ok=True)
    os.chown(work_dir, identity.uid, identity.gid)
    plan = reach_for([*default_exposed(), work_dir], identity)

    def preexec() -> None:
        reach(plan)
        become(identity)

    return preexec


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """Stop processes in the order given, then any descendant they left behind."""
    leftovers: list[psutil.Process] = []
    for proc in procs:
        if proc.poll() is None:
            leftovers += descendants(proc.pid)
    for proc in procs:
        try:
            stop_process(proc)
        except subprocess.TimeoutExpired:
            pass  # SIGKILLed and still not reaped: nothing more to do
    kill_leftovers(leftovers)


def up_url(up: subprocess.Popen[bytes], log: Path, timeout: float = 20.0) -> str:
    """The URL a `corral up` writing to `log` announces, once it does."""

    def announced() -> str | None:
        if up.poll() is not None:
            raise AssertionError(f"corral up exited with {up.returncode}:\n{log.read_text()}")
        found = re.search(r"corral is up at (http://127\.0\.0\.1:\d+)", log.read_text())
        return found.group(1) if found else None

    return wait_for(announced, timeout, 0.1, "corral up to print its URL")


def run_cli(
    args: tuple[str, ...] | list[str],
    env: dict[str, str],
    cwd: Path,
    stdin: str | None = None,
    timeout: float = 30.0,
) -> tuple[int, str, str]:
    """`python -m corral ARGS` as a subprocess; returns (rc, stdout, stderr)."""
    done = subprocess.run(
        [PYTHON, "-m", "corral", *args],
        env=env,
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """XDG dirs under tmp_path for this test process; returns the env for subprocesses."""
    env = isolated_env(tmp_path)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "PYTHONUNBUFFERED"):
        monkeypatch.setenv(name, env[name])
    for name in [k for k in os.environ if k.startswith("CORRAL_")]:
        monkeypatch.delenv(name)
    return env


@pytest.fixture
def farm(tmp_path: Path, isolated: dict[str, str]) -> Iterator[Callable[..., Farm]]:
    """Factory: `farm(workers=2, slots=1)` starts a coordinator and workers, stopped at teardown
    (`server_args`: more options for `corral server`; `host`: where it listens, plain HTTP
    without announcing itself when that is not loopback; other keywords go to `start_worker`)."""
    farms: list[Farm] = []

    def make(
        workers: int = 0,
        slots: int = 1,
        lease_timeout: float = 3.0,
        server_args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        **kw: Any,
    ) -> Farm:
        f = Farm(tmp_path / f"farm{len(farms)}", isolated, lease_timeout, host=host)
        # a test's own namespace link: plain HTTP is fine there, and no beacon leaves the host
        f.server_args = server_args + (() if is_loopback(host) else ("--insecure", "--no-announce"))
        farms.append(f)
        f.start_server()
        for _ in range(workers):
            f.start_worker(slots, **kw)
        return f

    try:
        yield make
    finally:
        for f in farms:
            f.close()


TEST_USER = "corral-test"


@pytest.fixture(scope="module")
def needs_bwrap(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip where bubblewrap is missing or unusable; under CI, fail instead."""
    if probe(tmp_path_factory.mktemp("probe")) is None:
        if os.environ.get("CI"):
            pytest.fail("bubblewrap is missing or unusable; CI must install it")
        pytest.skip("bubblewrap is missing or unusable here")


@pytest.fixture(scope="session")
def test_user() -> str:
    """An unprivileged account to run a worker as (made once, with no home); skips when this
    test process is not root and so cannot start a process as another user."""
    if os.geteuid() != 0:
        pytest.skip("starting a worker as another user needs root")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return TEST_USER


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A list to register ad-hoc subprocesses in; all are stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        stop_all(started)


# what limits.py uses: per v1 hierarchy, or in the one v2 tree
V1_CONTROLLERS = ("memory", "pids", "cpuacct")
V2_CONTROLLERS = ("memory", "pids")


@dataclass
class DelegatedCgroup:
    """Cgroup directories made for one test and handed to an unprivileged account by the
    kernel's delegation rules: in v2 one directory, chowned with its cgroup.procs,
    cgroup.threads and cgroup.subtree_control; in v1 one per hierarchy (memory, pids,
    cpuacct), chowned with its cgroup.procs and tasks. The account may then make child
    cgroups and move its own processes between them, but not change the limits of the
    delegated directories themselves."""

    version: int = 0
    dirs: list[Path] = field(default_factory=list)

    def joining(self, then: Callable[[], None] | None = None) -> Callable[[], None]:
        """A preexec that moves the child into these cgroups (while it is still root, before
        it forks anything), then runs `then` (say, `as_user`'s)."""
        procs = [d / "cgroup.procs" for d in self.dirs]

        def preexec() -> None:
            for path in procs:
                with path.open("w") as f:
                    f.write(str(os.getpid()))
            if then is not None:
                then()

        return preexec

    def pids(self) -> set[int]:
        """Every process anywhere under the directories."""
        found: set[int] = set()
        for top in self.dirs:
            for where, _, _ in os.walk(top):
                with contextlib.suppress(OSError, ValueError):
                    found |= {int(p) for p in (Path(where) / "cgroup.procs").read_text().split()}
        return found

    def close(self, timeout: float = 10.0) -> None:
        """SIGKILL whatever is left under the directories (only what the test started there),
        then remove them, innermost first."""
        deadline = time.monotonic() + timeout
        while True:
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for top in self.dirs:
                for where, _, _ in os.walk(top, topdown=False):
                    with contextlib.suppress(OSError):
                        os.rmdir(where)
            if not any(d.exists() for d in self.dirs) or time.monotonic() > deadline:
                return
            time.sleep(0.05)


def _delegate(made: DelegatedCgroup, name: str, uid: int, gid: int) -> bool:
    """Make and chown the directories of `made` (v2 if it offers memory and pids, else v1)
    under this process's own cgroups; False when neither can be delegated here."""
    v1, v2 = locate(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text())
    if v2 is not None:
        # v2 hands controllers only to children of a cgroup without processes: the top one
        top = v2
        while (top.parent / "cgroup.procs").exists():
            top = top.parent
        handed = (top / "cgroup.subtree_control").read_text().split()
        if set(V2_CONTROLLERS) <= set(handed):
            made.version = 2
            made.dirs.append(top / name)
            (top / name).mkdir()
            for file in ("", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
                os.chown(top / name / file, uid, gid)
            return True
    if not {"memory", "pids"} <= set(v1):
        return False
    made.version = 1
    for controller in V1_CONTROLLERS:
        if controller in v1:
            made.dirs.append(v1[controller] / name)
            (v1[controller] / name).mkdir()
            for file in ("", "cgroup.procs", "tasks"):
                os.chown(v1[controller] / name / file, uid, gid)
    return True


@contextlib.contextmanager
def delegated_cgroup(user: str) -> Iterator[DelegatedCgroup | None]:
    """Cgroups delegated to `user` (None when this machine or this process cannot make them),
    emptied and removed on exit. Needs root."""
    entry = pwd.getpwnam(user)
    made = DelegatedCgroup()
    try:
        try:
            ok = _delegate(made, f"corral-test-{uuid.uuid4().hex[:12]}", entry.pw_uid, entry.pw_gid)
        except OSError:
            ok = False
        yield made if ok else None
    finally:
        made.close()

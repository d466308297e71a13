"""Escape attempts, item 7: a task that tries to outgrow its limits, on a real worker.

Each task forks past `processes`, allocates past `memory` across several processes, or runs
past `wall_time` or `cpu_time`, some of them leaving a daemon behind (a new session, out of
the process tree). Each must end as `limit_exceeded: <which>` with no process of it left
(every process of the task carries a marker in its command line), while a well-behaved task
runs beside it on the same worker and succeeds, and the worker carries on. Where the worker
gives tasks cgroups, their peak memory and CPU seconds are recorded and shown by
`corral show` and `corral ps`.

Each runs on four kinds of worker, one module-wide farm each (the tests share it; each checks
its own tasks, and that the worker carries on):

    root-worker             started as root: tasks as slot uids, in cgroups the worker makes
    root-worker-no-sandbox  the same without bwrap (only the cgroup finds a task's daemons);
                            only for the fork bomb and wall_time
    user-worker-cgroup      started as an unprivileged account inside cgroups delegated to it
                            (conftest's `delegated_cgroup`): the same whole-tree guarantees,
                            `limits: cgroup`
    user-worker-rlimit      the same account with no cgroup of its own: `limits: rlimit`;
                            processes through RLIMIT_NPROC in the sandbox's user namespace,
                            wall_time and cpu_time per process still hold, but a tree's memory
                            and a tree's CPU time cannot be limited: those cases skip, saying so

The limits are per worker mechanism (`limits: cgroup|rlimit` in `corral workers --json`): a
root worker without a cgroup skips the whole-tree cases, but fails under CI; a delegated
account that does not get `limits: cgroup` fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import cloudpickle
import psutil
import pytest

from corral.client import Client
from corral.protocol import Task, TaskSpec

from .conftest import (
    PYTHON,
    Farm,
    WorkerProc,
    delegated_cgroup,
    isolated_env,
    kill_leftovers,
    run_cli,
    wait_for,
)

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _spin_then_grow

pytestmark = pytest.mark.timeout(120)
MB = 1 << 20


def marked(code: str, marker: str, **kw: object) -> TaskSpec:
    """A Python task whose every process (forks keep argv) names `marker`."""
    return TaskSpec(argv=[PYTHON, "-c", textwrap.dedent(code), marker], **kw)  # type: ignore[arg-type]


def with_marker(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def none_left(f: Farm, marker: str) -> None:
    """No process of the task remains (cleanup runs as the result goes out: a short wait)."""
    left: list[psutil.Process] = []

    def gone() -> bool:
        left[:] = with_marker(marker)
        return not left

    try:
        wait_for(gone, 5.0, 0.1, what=f"the processes of task {marker} to be gone")
    finally:
        kill_leftovers(left)  # whatever the verdict: the farm outlives this test


EVERY = ["root-worker", "user-worker-cgroup", "user-worker-rlimit"]
NO_SANDBOX = "root-worker-no-sandbox"


@dataclass
class Setup:
    farm: Farm
    worker: WorkerProc
    client: Client
    kind: str
    cgroup: bool  # `limits: cgroup`: the task's whole tree is limited and measured

    def needs_cgroup(self, what: str) -> None:
        """Skip a whole-tree case on a worker without a cgroup (a root one fails in CI)."""
        if self.cgroup:
            return
        if os.environ.get("CI") and self.kind.startswith("root-"):
            pytest.fail("a root worker in CI must limit the task's tree with a cgroup")
        pytest.skip(f"{what} needs a cgroup: this worker ({self.kind}) limits per process")


@pytest.fixture(scope="module")
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    """One farm per kind of worker (see the module docstring), with one two-slot worker."""
    kind: str = request.param
    user = None
    if os.geteuid() != 0:
        # a non-root test run starts its workers as itself, with whatever cgroup it has
        if kind != "user-worker-rlimit":
            pytest.skip(f"a {kind} needs a root test run")
    elif kind.startswith("user-"):
        user = request.getfixturevalue("test_user")
    root = tmp_path_factory.mktemp(kind)
    f = Farm(root, isolated_env(root), lease_timeout=3.0)
    with contextlib.ExitStack() as stack:
        cgroup = None
        if kind == "user-worker-cgroup":
            assert user is not None
            cgroup = stack.enter_context(delegated_cgroup(user))  # removed after the farm stops
            if cgroup is None:
                if os.environ.get("CI"):
                    pytest.fail("CI must be able to delegate a cgroup to the worker's account")
                pytest.skip("no cgroup with memory and pids can be delegated here")
        stack.callback(f.close)
        f.start_server()
        args = ("--no-sandbox",) if kind == NO_SANDBOX else ()
        worker = f.start_worker(slots=2, args=args, user=user, cgroup=cgroup)
        client = f.client()
        if user is not None:
            (info,) = [w for w in client.workers() if w.id == worker.id]
            caps = info.capabilities
            want = ("cgroup", "cgroup") if cgroup is not None else ("rlimit", "userns")
            assert (caps["task_user"], caps["limits"], caps["processes_limit"]) == ("self", *want)
            assert f"limits: {want[0]}" in worker.stderr()
        yield Setup(f, worker, client, kind, capability(client, worker, "limits") == "cgroup")


def capability(client: Client, worker: WorkerProc, key: str) -> object:
    (info,) = [w for w in client.workers() if w.id == worker.id]
    return info.capabilities.get(key)


def hostile(
    f: Farm, worker: WorkerProc, client: Client, code: str, limits: dict[str, float]
) -> tuple[Task, float]:
    """Run a hostile task beside a polite one; check the polite one, the worker, and that
    nothing of the hostile one is left. Returns the hostile task and how long it took."""
    marker = f"corral-escape-{uuid.uuid4().hex}"
    polite = marked(
        "import time; time.sleep(1.5); open('ok.txt', 'w').write('fine')",
        f"corral-polite-{uuid.uuid4().hex}",
        outputs=["ok.txt"],
    )
    started = time.monotonic()
    job = client.submit_job([marked(code, marker, limits=limits), polite])
    f.wait_job(client, job.id, 90)
    took = time.monotonic() - started
    task, neighbour = client.tasks(job.id)
    assert (neighbour.status, neighbour.error, list(neighbour.manifest)) == (
        "succeeded",
        None,
        ["ok.txt"],
    )
    none_left(f, marker)
    assert worker.proc.poll() is None, worker.stderr()
    return task, took


def stderr(client: Client, task: Task) -> str:
    return client.read_blob(task.stderr).decode(errors="replace") if task.stderr else ""


# each forked child forks twice more into a session of its own: out of the process tree
DAEMONS = """
import os, sys, time
def daemon():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(300)
        os._exit(0)
"""


@pytest.mark.parametrize("setup", [*EVERY, NO_SANDBOX], indirect=True)
def test_a_fork_bomb_stops_at_the_processes_limit(setup: Setup) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    if capability(client, worker, "processes_limit") == "none":
        pytest.skip("this worker cannot enforce a processes limit (root without a pids cgroup)")
    # bounded at 64 * 3 processes in all, so the machine survives a limit that does not hold.
    # A refused fork ends it at once (a limit that held: else wall_time, after 60 s). In a
    # cgroup pids.events says which limit refused it, so the bomb exits silently; without
    # one the worker can only guess from stderr, so there it says why, as a shell would.
    refused = "sys.exit(1)" if setup.cgroup else "sys.exit('fork: ' + os.strerror(exc.errno))"
    code = (
        DAEMONS
        + f"""
for _ in range(64):
    try:
        daemon()
    except OSError:
        pass
    try:
        if os.fork() == 0:
            time.sleep(300)
            os._exit(0)
    except OSError as exc:
        {refused}
time.sleep(300)
"""
    )
    task, took = hostile(f, worker, client, code, {"processes": 16, "wall_time": 60})
    assert (task.status, task.error) == ("failed", "limit_exceeded: processes"), stderr(
        client, task
    )
    assert took < 30


@pytest.mark.parametrize("setup", EVERY, indirect=True)
def test_memory_past_the_limit_across_processes(setup: Setup) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    # RLIMIT_AS is per process (and counts address space): no tree's memory is limited
    setup.needs_cgroup("limiting a tree's memory")
    # four processes of 48 MB each under 128 MB: none alone is over, nor is its address space
    code = """
import os, sys, time
kids = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = bytearray(48 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in kids]
sys.exit(1 if any(codes) else 0)
"""
    task, _ = hostile(f, worker, client, code, {"memory": 128 * MB, "wall_time": 60})
    assert (task.status, task.error) == ("failed", "limit_exceeded: memory"), stderr(client, task)
    assert task.peak_memory is not None and 64 * MB < task.peak_memory <= 129 * MB
    assert task.cpu_seconds is not None and task.cpu_seconds < 30


@pytest.mark.parametrize("setup", [*EVERY, NO_SANDBOX], indirect=True)
@pytest.mark.parametrize("fresh", [False, True], ids=["pooled", "fresh"])
def test_wall_time_takes_the_daemons_too(setup: Setup, fresh: bool) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    code = DAEMONS + "daemon()\ndaemon()\ntime.sleep(300)\n"
    # wall_time alone: a pooled function runner may host the command; a cpu_time limit
    # (which no runner honours per call) makes it a fresh process in a cgroup of its own
    limits = {"wall_time": 2.0, "cpu_time": 100.0} if fresh else {"wall_time": 2.0}
    task, took = hostile(f, worker, client, code, limits)
    assert (task.status, task.error) == ("failed", "limit_exceeded: wall_time")
    assert took < 30
    if fresh and setup.cgroup:
        assert task.peak_memory is not None and 0 < task.peak_memory < 512 * MB
        assert task.cpu_seconds is not None and task.cpu_seconds < 5  # it slept


@pytest.mark.parametrize("setup", EVERY, indirect=True)
def test_cpu_time_of_a_spinning_tree(setup: Setup) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    # the task and two children spin: each is stopped at one CPU second
    code = """
import os
for _ in range(2):
    if os.fork() == 0:
        break
while True:
    pass
"""
    task, took = hostile(f, worker, client, code, {"cpu_time": 1, "wall_time": 60})
    assert (task.status, task.error) == ("failed", "limit_exceeded: cpu_time"), stderr(client, task)
    assert took < 45
    if setup.cgroup:
        # the whole tree's CPU time: the task's own second and at least part of its children's
        assert task.cpu_seconds is not None and 1.0 <= task.cpu_seconds < 10


@pytest.mark.parametrize("setup", EVERY, indirect=True)
def test_cpu_time_of_a_tree_whose_processes_each_stay_under_it(setup: Setup) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    # RLIMIT_CPU is per process: a tree of processes each under it escapes it
    setup.needs_cgroup("limiting a tree's CPU time")
    # three processes of 1.2 CPU seconds each, under a limit of 1.5 for the task
    code = """
import os, time
for _ in range(2):
    if os.fork() == 0:
        break
t = time.process_time()
while time.process_time() - t < 1.2:
    pass
time.sleep(300)
"""
    task, took = hostile(f, worker, client, code, {"cpu_time": 1.5, "wall_time": 60})
    assert (task.status, task.error) == ("failed", "limit_exceeded: cpu_time"), stderr(client, task)
    assert took < 45
    assert task.cpu_seconds is not None and 1.5 <= task.cpu_seconds < 3.7


@pytest.mark.parametrize("setup", EVERY, indirect=True)
def test_what_a_task_used_is_shown(setup: Setup) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    rc, out, err = f.cli("workers", "--json")
    assert rc == 0, err
    (shown,) = [w for w in json.loads(out) if w["id"] == worker.id]
    mechanism = shown["capabilities"]["limits"]
    assert mechanism in ("cgroup", "rlimit")
    wide = {**f.env, "CORRAL_URL": f.url, "CORRAL_TOKEN": f.token, "COLUMNS": "300"}
    rc, out, err = run_cli(["workers"], wide, f.root)
    assert rc == 0 and mechanism in out, (out, err)
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    # a limit no pooled runner honours: a fresh process, measured (pooled calls are not)
    job = client.submit_job([TaskSpec(argv=[PYTHON, "-c", spin], limits={"cpu_time": 30})])
    f.wait_job(client, job.id, 30)
    (task,) = client.tasks(job.id)
    assert task.status == "succeeded", stderr(client, task)
    rc, out, err = f.cli("show", task.id, "--json")
    assert rc == 0, err
    data = json.loads(out)
    rc, text, err = f.cli("show", task.id)
    assert rc == 0, err
    lines = dict(line.split(None, 1) for line in text.splitlines() if len(line.split()) > 1)
    if mechanism == "rlimit":
        assert (data["peak_memory"], data["cpu_seconds"]) == (None, None)
        return
    assert 0 < data["peak_memory"] < 1 << 30
    assert 0.25 <= data["cpu_seconds"] < 10
    assert lines["cpu_seconds"].endswith("s") and lines["peak_memory"][-2] in "KMG"
    rc, out, err = run_cli(["ps", job.id], wide, f.root)
    assert rc == 0 and "peak mem" in out and lines["peak_memory"] in out, (out, err)


@pytest.mark.parametrize("setup", EVERY, indirect=True)
def test_a_pooled_call_is_measured_too(setup: Setup) -> None:
    """A task with no limits runs in its slot's long-lived runner (fnpool.py), a command as
    the runner's child and a function in the runner itself: both report their CPU time, a
    function its peak memory too."""
    f, client = setup.farm, setup.client
    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    grow = "b = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    job = client.submit_job(
        [TaskSpec(argv=[PYTHON, "-c", spin]), TaskSpec(argv=[PYTHON, "-c", grow])]
    )
    f.wait_job(client, job.id, 30)
    spun, grew = client.tasks(job.id)
    assert spun.status == grew.status == "succeeded", stderr(client, spun)
    assert spun.cpu_seconds is not None and 0.25 <= spun.cpu_seconds < 10
    assert grew.cpu_seconds is not None  # a hosted command's peak is not known (pyrunner.py)
    fut = client.submit(_spin_then_grow)
    assert fut.result(timeout=30) == 1 and fut.task_id is not None
    called = client.task(fut.task_id)
    assert called.cpu_seconds is not None and 0.25 <= called.cpu_seconds < 10
    assert called.peak_memory is not None and 32 << 20 <= called.peak_memory < 1 << 30


def _spin_then_grow() -> int:
    import time

    t = time.process_time()
    while time.process_time() - t < 0.3:
        pass
    b = bytearray(32 << 20)
    for i in range(0, len(b), 4096):
        b[i] = 1
    return int(b[0])

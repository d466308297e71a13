"""Idle-aware desktop mode over real processes: `corral worker --when-idle`.

The worker runs in its own PID namespace (`unshare --pid --mount-proc`), so "other processes"
are only those the test starts in there: the load generator (a bounded busy loop entered with
`nsenter`). Load from anything else on this machine (other test runs) cannot reach the
worker's measurement, so the test is not at the mercy of a busy CI host. Needs root (or a
user namespace) and util-linux; skipped otherwise, except under CI as root, where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from corral.client import Client
from corral.protocol import TaskSpec

from .conftest import PYTHON, Farm, descendants, kill_leftovers, stop_all, wait_for

UNSHARE, NSENTER = shutil.which("unshare"), shutil.which("nsenter")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
IN_CI = bool(os.environ.get("CI"))
MARK = "corral-desk-task"


def sleeper(seconds: int) -> list[str]:
    """A task that runs about `seconds` when not stopped, findable by MARK in its argv."""
    return [
        "python3",
        "-c",
        f"import time\nfor _ in range({seconds * 10}): time.sleep(0.1)  # {MARK}",
    ]


def counter(seconds: int) -> list[str]:
    """Like `sleeper`, counting tenths of a second; on SIGTERM it writes its count into its
    checkpoint directory (its only save), and each run prints the count it started from."""
    code = (
        "import os, signal, sys, time\n"
        "p = os.path.join(os.environ['CORRAL_CHECKPOINT_DIR'], 'i')\n"
        "i = int(open(p).read()) if os.path.exists(p) else 0\n"
        "print('from', i, flush=True)\n"
        "def term(*_):\n    open(p, 'w').write(str(i))\n    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        f"while i < {seconds * 10}:\n    time.sleep(0.1)\n    i += 1  # {MARK}\n"
    )
    return ["python3", "-c", code]


# the owner's load: two busy processes (still plenty on a crowded host), never more than 30 s
LOAD = "import os, time\nos.fork()\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"

pytestmark = pytest.mark.timeout(110)


def _namespace_problem() -> str | None:
    if not IS_ROOT:
        return "PID namespaces for the idle test need root"
    if UNSHARE is None or NSENTER is None:
        return "util-linux unshare/nsenter are not installed"
    return None


@pytest.fixture
def namespaces_or_skip() -> None:
    problem = _namespace_problem()
    if problem is None:
        return
    if IN_CI and IS_ROOT:
        pytest.fail(f"{problem} (CI is set and we are root: this test must not be skipped)")
    pytest.skip(problem)


@dataclass
class Desk:
    """A --when-idle worker alone in a PID namespace, and the owner's load in there."""

    farm: Farm
    procs: list[subprocess.Popen[bytes]]
    unshare: subprocess.Popen[bytes]
    log: Path
    load: subprocess.Popen[bytes] | None = None

    @property
    def worker_pid(self) -> int:
        """The worker's pid (as seen from here): the child unshare forked."""
        kids = wait_for(lambda: psutil.Process(self.unshare.pid).children(), 10, what="worker")
        return kids[0].pid

    def status(self, client: Client) -> str:
        found = [w for w in client.workers() if w.name == "desk"]
        return max(found, key=lambda w: w.registered).status if found else ""

    def task_process(self) -> psutil.Process | None:
        for p in descendants(self.unshare.pid):
            try:
                if any(MARK in part for part in p.cmdline()):
                    return p
            except psutil.Error:
                pass
        return None

    def start_load(self) -> None:
        assert NSENTER is not None
        argv = [NSENTER, "-t", str(self.worker_pid), "-p", "-m", PYTHON, "-c", LOAD]
        self.load = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        self.procs.append(self.load)

    def stop_load(self) -> None:
        assert self.load is not None
        for p in descendants(self.load.pid):  # nsenter forks the busy loop into the namespace
            p.kill()
        self.load.wait(10)


@pytest.fixture
def desk(
    farm: Callable[..., Farm], procs: list[subprocess.Popen[bytes]], namespaces_or_skip: None
) -> Iterator[Callable[..., Desk]]:
    """desk(grace): a coordinator, and a --when-idle worker in its own PID namespace."""
    made: list[Desk] = []

    def make(grace: float) -> Desk:
        f = farm()
        assert UNSHARE is not None
        # one busy core is 100/ncpu % of the machine; 3 % of one core already counts (in
        # the namespace nothing else runs, so idle reads 0)
        threshold = 3.0 / (os.cpu_count() or 1)
        log = f.root / "logs" / "desk.log"
        argv = [UNSHARE, "--pid", "--fork", "--mount-proc", "--kill-child"]
        argv += [PYTHON, "-m", "corral", "worker", "--server", f.url, "--name", "desk", "-v"]
        argv += ["--work-dir", str(f.root / "desk"), "--when-idle"]
        argv += ["--idle-threshold", f"{threshold:.2f}", "--idle-grace", str(grace)]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env={**f.env, "CORRAL_TOKEN": f.token},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        d = Desk(f, procs, proc, log)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            leftovers = descendants(d.unshare.pid)
            if d.unshare.poll() is None:
                os.kill(d.worker_pid, signal.SIGTERM)
            stop_all([d.unshare])
            kill_leftovers(leftovers)


def _fail(desk: Desk, what: str) -> str:
    return f"{what}\n--- worker log ---\n{desk.log.read_text(errors='replace')}"


def test_when_idle_suspends_and_resumes_a_task_with_the_owners_load(
    desk: Callable[..., Desk],
) -> None:
    d = desk(grace=60)
    with d.farm.client() as client:
        wait_for(lambda: d.status(client) == "online", 30, 0.2, what="the worker to go online")
        job = client.submit_job([TaskSpec(sleeper(6), limits={"wall_time": 9})])
        (task,) = client.tasks(job.id)
        d.farm.wait_task(client, task.id, {"running"}, 20)
        proc = wait_for(d.task_process, 10, what="the task process")

        d.start_load()
        wait_for(lambda: proc.status() == psutil.STATUS_STOPPED, 20, 0.1, what="SIGSTOP")
        wait_for(lambda: d.status(client) == "suspended", 15, 0.2, what="status suspended")
        time.sleep(6)  # suspended time does not count against the 9 s wall-time limit
        assert proc.status() == psutil.STATUS_STOPPED, _fail(d, "resumed while busy")
        assert client.task(task.id).status == "running"

        d.stop_load()
        wait_for(lambda: d.status(client) == "online", 20, 0.2, what="status online again")
        done = d.farm.wait_task(client, task.id, {"succeeded", "failed", "killed"}, 30)
        assert done.status == "succeeded", _fail(d, f"task ended {done.status}: {done.error}")
        assert done.attempts == 1
        assert done.finished is not None and done.started is not None
        assert done.finished - done.started > 9, "the task was never really suspended"


def test_when_idle_gives_tasks_back_when_busy_past_the_grace(desk: Callable[..., Desk]) -> None:
    """Busy past the grace: the stopped task is evicted (resumed, SIGTERM, its checkpoint
    saved) and given back; once the owner leaves, it resumes from that checkpoint."""
    d = desk(grace=1)
    with d.farm.client() as client:
        wait_for(lambda: d.status(client) == "online", 30, 0.2, what="the worker to go online")
        job = client.submit_job([TaskSpec(counter(10))])
        (task,) = client.tasks(job.id)
        d.farm.wait_task(client, task.id, {"running"}, 20)
        first = wait_for(d.task_process, 10, what="the task process")
        time.sleep(1)  # it counts a little first

        d.start_load()
        given = d.farm.wait_task(client, task.id, {"queued"}, 30)
        assert given.attempts == 0, given
        assert "the desktop's owner came back; checkpoint saved" in (given.error or ""), given
        assert len(client.checkpoints(task.id)) == 1  # what its SIGTERM handler wrote
        wait_for(lambda: not first.is_running(), 10, what="the given-back process to die")
        wait_for(lambda: d.status(client) == "idle-wait", 15, 0.2, what="status idle-wait")
        time.sleep(2)
        assert client.task(task.id).status == "queued", "leased again while the owner is busy"

        d.stop_load()
        done = d.farm.wait_task(client, task.id, {"succeeded", "failed", "killed"}, 40)
        assert done.status == "succeeded", _fail(d, f"task ended {done.status}: {done.error}")
        assert done.attempts == 1  # giving back did not use up an attempt
        started = int(client.log(task.id)[0].split()[1])
        assert started > 0, _fail(d, "it started from scratch, not from its checkpoint")

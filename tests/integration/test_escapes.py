"""The escape-attempt suite: a hostile task tries each way out, on a root worker (tasks as slot
uids) and on a worker started as an unprivileged account (tasks as that account).

Each task reports every attempt as `ESCAPED what` or `blocked what`; every attempt must be
blocked, and afterwards the worker is still online, other tasks are unharmed and a normal task
succeeds. Nothing here sends a packet off this machine: the outside address is a TEST-NET one
reached by a UDP connect, which only looks up a route. Limits (7) and the allowlist (8) have
their own suites. Needs bwrap: skips without it, but fails under CI.
"""

from __future__ import annotations

import os
import socket
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from corral.client import Client
from corral.protocol import Task, TaskSpec
from corral.worker.sandbox import default_exposed

from .conftest import PYTHON, Farm, WorkerProc, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("needs_bwrap")]

# the body every hostile task shares: try(what, fn) prints ESCAPED when fn does not raise
PRELUDE = """
import ctypes, os, signal, socket, subprocess
def attempt(what, fn):
    try:
        got = fn()
        print("ESCAPED", what, repr(got)[:100], flush=True)
    except Exception as exc:
        print("blocked", what, type(exc).__name__, flush=True)
WAYS = {}  # directory -> names it may show: the way to a bound path (the Python, the task)
def read(path):
    if not os.path.isdir(path):
        return open(path, "rb").read(1)
    names = os.listdir(path)
    if set(names) <= set(WAYS.get(path, ())):
        raise OSError("only the way to a bound path: " + repr(names))
    return names
def run(*argv):
    done = subprocess.run(argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise OSError(done.returncode, done.stderr.decode(errors="replace")[-200:])
"""


@dataclass
class Setup:
    farm: Farm
    worker: WorkerProc
    client: Client
    root: bool  # a root worker (tasks as slot uids), else one run as an unprivileged user


@pytest.fixture(params=["root-worker", "user-worker"])
def setup(request: pytest.FixtureRequest, farm: Callable[..., Farm]) -> Iterator[Setup]:
    """A farm with one two-slot worker, started as root or as an unprivileged account."""
    if request.param == "root-worker" and os.geteuid() != 0:
        pytest.skip("a root worker needs a root test run")
    root = request.param == "root-worker"
    # a non-root test run starts its workers as itself: already the unprivileged case
    user = request.getfixturevalue("test_user") if not root and os.geteuid() == 0 else None
    f = farm()
    worker = f.start_worker(slots=2, user=user)
    client = f.client()
    (info,) = [w for w in client.workers() if w.id == worker.id]
    caps = info.capabilities
    assert (caps["sandbox"], caps["network"]) == ("bwrap", "no")
    assert caps["task_user"] == ("slot-uids" if root else "self")
    if os.environ.get("CI"):
        assert caps["seccomp"] == "yes"  # elsewhere the namespaces alone must hold all below
    yield Setup(f, worker, client, root)
    # the worker and its user are unharmed: still online, still running tasks
    assert worker.proc.poll() is None
    still_works(f, client)


def ways() -> dict[str, list[str]]:
    """Each directory above a path the sandbox binds (this Python, corral, a task's dir
    under a work dir), with the names on the way: all a task may see in it."""
    out: dict[str, set[str]] = {}
    for path in default_exposed():
        for parent, child in zip(path.parents, [path, *path.parents], strict=False):
            out.setdefault(str(parent), set()).add(child.name)
    return {k: sorted(v) for k, v in out.items()}


def hostile(code: str, **kw: object) -> TaskSpec:
    body = PRELUDE + f"WAYS.update({ways()!r})\n" + textwrap.dedent(code)
    return TaskSpec(argv=[PYTHON, "-c", body], **kw)  # type: ignore[arg-type]


def run_one(f: Farm, client: Client, spec: TaskSpec, timeout: float = 40.0) -> Task:
    job = client.submit_job([spec])
    f.wait_job(client, job.id, timeout)
    (task,) = client.tasks(job.id)
    return task


def attempts(client: Client, task: Task, expected: int) -> str:
    """The task's report, checked: it ran, tried `expected` things and escaped none."""
    out = client.read_blob(task.stdout).decode() if task.stdout else ""
    err = client.read_blob(task.stderr).decode() if task.stderr else ""
    assert task.status == "succeeded", err
    assert "ESCAPED" not in out, out
    assert out.count("blocked") == expected, out
    return out


def still_works(f: Farm, client: Client) -> None:
    spec = TaskSpec(argv=[PYTHON, "-c", "open('ok.txt', 'w').write('fine')"], outputs=["ok.txt"])
    task = run_one(f, client, spec)
    assert (task.status, task.error, list(task.manifest)) == ("succeeded", None, ["ok.txt"])


def victim(f: Farm, client: Client, seconds: float = 6.0) -> tuple[str, Path, psutil.Process]:
    """Another task, running: its job id, its secret file and its process."""
    marker = f"victim-{uuid.uuid4().hex}"
    code = (
        f"import time; open('secret.txt', 'w').write('s3cret'); time.sleep({seconds}); "
        f"open('done.txt', 'w').write(open('secret.txt').read())  # {marker}"
    )
    job = client.submit_job([TaskSpec(argv=[PYTHON, "-c", code], outputs=["done.txt"])])
    (task,) = client.tasks(job.id)

    def found() -> tuple[Path, psutil.Process] | None:
        attempts = f.workers[0].work_dir.glob(f"tasks/{task.id}.*")
        secrets = [
            d / "work" / "secret.txt" for d in attempts if (d / "work" / "secret.txt").exists()
        ]
        procs = [
            p
            for p in psutil.process_iter(["cmdline"])
            if p.info["cmdline"]
            and p.info["cmdline"][0] == PYTHON
            and any(marker in part for part in p.info["cmdline"])
        ]
        return (secrets[0], procs[0]) if secrets and procs else None

    secret, proc = wait_for(found, 20, what="the victim task to start")
    return job.id, secret, proc


def victim_unharmed(s: Setup, job_id: str) -> None:
    job = s.farm.wait_job(s.client, job_id, 30)
    (task,) = s.client.tasks(job_id)
    assert (job.status, task.error) == ("succeeded", None)
    assert s.client.read_blob(task.manifest["done.txt"].sha256) == b"s3cret"


def test_1_secrets_of_the_host_worker_and_coordinator_are_unreadable(
    setup: Setup, isolated: dict[str, str]
) -> None:
    f, worker = setup.farm, setup.worker
    config = Path(isolated["XDG_CONFIG_HOME"]) / "corral" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('{"token": "x"}')
    homes = [str(p) for p in Path("/home").iterdir()] if Path("/home").is_dir() else []
    targets = [
        "/etc/shadow",
        "/etc/gshadow",
        "/etc/sudoers",
        "/etc/ssh",
        "/etc/ssl/private",
        "/root",
        "/home",
        *homes,
        "/var",
        "/srv",
        "/mnt",
        "/media",
        "/run",
        str(worker.work_dir),
        str(worker.cache_dir),
        str(config),
        str(config.parent),
        str(f.data),
        str(f.data / "admin.token"),
        f"/proc/{worker.proc.pid}/environ",  # holds CORRAL_TOKEN
    ]
    code = f"""
        WAYS[{str(worker.work_dir)!r}] = ["fn", "tasks"]  # the way to its own directory
        for path in {targets!r}:
            attempt("read " + path, lambda: read(path))
        print("system", len(open("/etc/passwd").read()) > 0, os.path.isdir("/usr/bin"))
    """
    task = run_one(f, setup.client, hostile(code))
    out = attempts(setup.client, task, len(targets))
    assert "system True True" in out  # what programs need is still there


def test_2_another_running_task_is_out_of_reach(setup: Setup) -> None:
    f, client = setup.farm, setup.client
    job_id, secret, proc = victim(f, client)
    pid = proc.pid
    code = f"""
        libc = ctypes.CDLL(None, use_errno=True)
        def ptrace():
            if libc.ptrace(16, {pid}, None, None) != 0:  # PTRACE_ATTACH
                raise OSError(ctypes.get_errno(), "ptrace")
        attempt("read its dir", lambda: read({str(secret.parent)!r}))
        attempt("read its secret", lambda: read({str(secret)!r}))
        attempt("write its dir", lambda: open({str(secret)!r}, "w").write("pwned"))
        attempt("signal it", lambda: os.kill({pid}, signal.SIGKILL))
        attempt("ptrace it", ptrace)
        attempt("read its memory", lambda: read("/proc/{pid}/mem"))
        attempt("read its environ", lambda: read("/proc/{pid}/environ"))
    """
    task = run_one(f, client, hostile(code))
    attempts(client, task, 7)
    victim_unharmed(setup, job_id)


def test_3_writes_land_only_in_the_task_dir_and_a_private_tmp(setup: Setup) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    marker = f"corral-pwned-{uuid.uuid4().hex}"
    targets = [
        f"/{marker}",
        f"/etc/{marker}",
        f"/usr/local/{marker}",
        f"/opt/{marker}",
        f"/var/tmp/{marker}",
        f"/dev/{marker}",
        str(worker.work_dir / marker),
        str(worker.cache_dir / marker),
        str(f.data / marker),
        str(f.root / marker),
    ]
    # under /tmp (pytest's directories are), a write lands in the task's private /tmp
    private = [p for p in targets if Path(p).is_relative_to("/tmp")]
    code = f"""
        for path in {targets!r}:
            if path in {private!r}:
                open(path if os.path.isdir(os.path.dirname(path)) else "/tmp/x", "w")
                continue
            attempt("write " + path, lambda: open(path, "w").write("x"))
        open("/tmp/{marker}", "w").write("private")
        open("/dev/shm/{marker}", "w").write("private")
        open("inside.txt", "w").write("ok")
    """
    try:
        task = run_one(f, client, hostile(code, outputs=["inside.txt"]))
        attempts(client, task, len(targets) - len(private))
        assert list(task.manifest) == ["inside.txt"]
        written = [*targets, f"/tmp/{marker}", f"/dev/shm/{marker}"]
        assert not any(Path(p).exists() for p in written)  # none reached the host
    finally:
        for path in [*targets, f"/tmp/{marker}", f"/dev/shm/{marker}"]:
            Path(path).unlink(missing_ok=True)


def test_4_no_network_without_network_yes(setup: Setup) -> None:
    f, client = setup.farm, setup.client
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = f"""
            def tcp(port):
                socket.create_connection(("127.0.0.1", port), timeout=3).close()
            def outside():
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect(("192.0.2.1", 9))  # a route lookup; no packet is sent
            def routes():
                if open("/proc/net/route").read().count("\\n") > 1:
                    raise AssertionError("a route")
                raise OSError("no route")
            def interfaces():
                names = [l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]]
                if names != ["lo"]:
                    raise AssertionError(names)
                raise OSError("only lo")
            attempt("reach the coordinator", lambda: tcp({f.port}))
            attempt("reach another loopback port", lambda: tcp({port}))
            attempt("reach an outside address", outside)
            attempt("find a route", routes)
            attempt("find an interface", interfaces)
        """
        task = run_one(f, client, hostile(code, requires={"network": "no"}))
        attempts(client, task, 5)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the listener


def test_5_the_worker_and_host_processes_are_invisible_and_unsignalable(setup: Setup) -> None:
    f, worker, client = setup.farm, setup.worker, setup.client
    job_id, _, _ = victim(f, client)
    host = [worker.proc.pid, os.getpid()]
    assert f.server is not None
    host.append(f.server.pid)
    code = f"""
        def listing():
            pids = [p for p in os.listdir("/proc") if p.isdigit()]
            if len(pids) > 3:  # bwrap's init, this task, perhaps a helper
                raise AssertionError(pids)
            raise OSError("only its own")
        attempt("list host processes", listing)
        for pid in {host!r}:
            attempt(f"signal {{pid}}", lambda: os.kill(pid, signal.SIGKILL))
            attempt(f"read {{pid}}", lambda: read(f"/proc/{{pid}}/cmdline"))
    """
    task = run_one(f, client, hostile(code))
    attempts(client, task, 1 + 2 * len(host))
    # everything it may signal, at once: only its own sandbox's processes (it may die too)
    run_one(f, client, hostile("os.kill(-1, signal.SIGKILL)"))
    assert worker.proc.poll() is None and f.server.poll() is None
    victim_unharmed(setup, job_id)


def test_6_no_way_to_more_privileges(setup: Setup) -> None:
    f, client = setup.farm, setup.client
    code = """
        libc = ctypes.CDLL(None, use_errno=True)
        def call(result, what):
            if result != 0:
                raise OSError(ctypes.get_errno(), what)
        def status(field, value):
            line = [l for l in open("/proc/self/status") if l.startswith(field)][0]
            if line.split()[1] != value:
                raise AssertionError(line)
            raise PermissionError(line.strip())
        attempt("setuid 0", lambda: os.setuid(0))
        attempt("su root through setuid su", lambda: run("su", "root", "-c", "id -u"))
        attempt("no_new_privs is off", lambda: status("NoNewPrivs:", "1"))
        attempt("capabilities held", lambda: status("CapEff:", "0000000000000000"))
        attempt("mount tmpfs", lambda: call(libc.mount(b"n", b"/tmp", b"tmpfs", 0, None), "mount"))
        attempt("mount(8)", lambda: run("mount", "-t", "tmpfs", "none", "/tmp"))
        attempt("unshare a user namespace", lambda: call(libc.unshare(0x10000000), "unshare"))
        attempt("unshare(1) -U", lambda: run("unshare", "-U", "true"))
        module = b"\\0" * 64
        attempt("load a module", lambda: call(libc.init_module(module, 64, b""), "init_module"))
        attempt("delete a module", lambda: call(libc.delete_module(b"loop", 0), "delete_module"))
    """
    task = run_one(f, client, hostile(code))
    attempts(client, task, 10)
    # and the uid it ran as was never root, nor the worker's own on a root worker
    uid_code = "import os; print(os.getuid(), os.geteuid())"
    who = run_one(f, client, TaskSpec(argv=[PYTHON, "-c", uid_code]))
    uids = {int(u) for u in client.read_blob(who.stdout).decode().split()} if who.stdout else set()
    assert uids and 0 not in uids
    if setup.root:
        assert all(60000 <= u <= 60999 for u in uids)  # a slot uid


def test_two_tasks_of_a_root_worker_run_as_different_uids(setup: Setup) -> None:
    if not setup.root:
        pytest.skip("a non-root worker runs every task as itself")
    f, client = setup.farm, setup.client
    code = "import os, time; print(os.stat('.').st_uid, os.getuid()); time.sleep(2)"
    job = client.submit_job([TaskSpec(argv=[PYTHON, "-c", code]) for _ in range(2)])
    f.wait_job(client, job.id, 30)
    seen = [client.read_blob(t.stdout).decode().split() for t in client.tasks(job.id) if t.stdout]
    assert len(seen) == 2 and all(dir_uid == uid for dir_uid, uid in seen)  # its own dir
    assert seen[0][1] != seen[1][1]  # ran at once, on two slots: two uids

"""Hostile tasks against a real worker running them under bubblewrap.

Each task tries one thing a task must not do; the attempt fails, and a normal task then
succeeds on the same worker. The tests need bwrap: they skip without it, but fail under CI.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.client import Client
from corral.protocol import Task, TaskSpec

from .conftest import PYTHON, Farm, WorkerProc, wait_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("needs_bwrap")]


def py(code: str, **kw: object) -> TaskSpec:
    return TaskSpec(argv=[PYTHON, "-c", textwrap.dedent(code)], **kw)  # type: ignore[arg-type]


def run_one(f: Farm, client: Client, spec: TaskSpec, timeout: float = 30.0) -> Task:
    job = client.submit_job([spec])
    f.wait_job(client, job.id, timeout)
    (task,) = client.tasks(job.id)
    return task


def stdout(client: Client, task: Task) -> str:
    return client.read_blob(task.stdout).decode() if task.stdout else ""


def stderr(client: Client, task: Task) -> str:
    return client.read_blob(task.stderr).decode() if task.stderr else ""


def still_works(f: Farm, client: Client) -> None:
    """A normal task succeeds on the same worker afterwards."""
    task = run_one(f, client, py("open('ok.txt', 'w').write('fine')", outputs=["ok.txt"]))
    assert (task.status, task.error, list(task.manifest)) == ("succeeded", None, ["ok.txt"])


@pytest.fixture
def sandboxed(farm: Callable[..., Farm]) -> Iterator[tuple[Farm, WorkerProc, Client]]:
    f = farm()
    worker = f.start_worker(slots=2)
    client = f.client()
    (info,) = [w for w in client.workers() if w.id == worker.id]
    assert info.capabilities["sandbox"] == "bwrap"
    assert info.capabilities["network"] == "no"
    yield f, worker, client


def test_reading_outside_the_task_dir_fails(
    sandboxed: tuple[Farm, WorkerProc, Client], isolated: dict[str, str]
) -> None:
    f, worker, client = sandboxed
    config = Path(isolated["XDG_CONFIG_HOME"]) / "corral" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"url": f.url, "token": f.token}))
    # another task, still running, with a secret in its directory
    other = client.submit_job(
        [py("open('secret.txt', 'w').write('s3cret'); import time; time.sleep(60)")]
    )
    (other_task,) = client.tasks(other.id)
    secret = worker.work_dir / "tasks" / f"{other_task.id}.1" / "work" / "secret.txt"
    wait_for(secret.exists, 10, what="the other task's secret")
    targets = [
        str(f.data / "admin.token"),
        str(config),
        f"/proc/{worker.proc.pid}/environ",  # holds CORRAL_TOKEN
        str(secret),
        str(worker.cache_dir),
    ]
    task = run_one(
        f,
        client,
        py(f"""
            import os
            for path in {targets!r}:
                try:
                    found = os.listdir(path) if os.path.isdir(path) else open(path).read()
                    print("ESCAPED", path, repr(found)[:80])
                except OSError as exc:
                    print("blocked", path, exc.strerror)
            print("system", open("/etc/os-release").read() != "")
        """),
    )
    out = stdout(client, task)
    assert task.status == "succeeded", stderr(client, task)
    assert "ESCAPED" not in out
    assert out.count("blocked") == len(targets)
    assert "system True" in out  # the system itself stays readable
    client.kill(other.id)
    still_works(f, client)


def test_writing_outside_the_task_dir_fails(sandboxed: tuple[Farm, WorkerProc, Client]) -> None:
    f, worker, client = sandboxed
    marker = f"corral-pwned-{uuid.uuid4().hex}"
    targets = [worker.work_dir / marker, f.data / marker, f.root / marker]
    system = Path("/usr/local") / marker
    try:
        task = run_one(
            f,
            client,
            py(f"""
                for path in {[str(p) for p in [*targets, system]]!r}:
                    try:
                        open(path, "w").write("x")
                        print("wrote", path)
                    except OSError as exc:
                        print("blocked", path, exc.strerror)
                open("inside.txt", "w").write("ok")
            """),
        )
        out = stdout(client, task)
        assert task.status == "succeeded", stderr(client, task)
        assert f"blocked {system} Read-only file system" in out
        # writes to the worker's directories either fail or land in a private tmpfs
        assert not any(p.exists() for p in [*targets, system])
        assert list(task.manifest) == ["inside.txt"]
    finally:
        for path in [*targets, system]:
            path.unlink(missing_ok=True)
    still_works(f, client)


def test_no_network_unless_asked_for_and_allowed(farm: Callable[..., Farm]) -> None:
    f = farm()
    f.start_worker(args=("--label", "net=off"))
    f.start_worker(args=("--label", "net=on", "--allow-network"))
    client = f.client()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
                print("connected")
            except OSError as exc:
                print("blocked", exc)
        """
        denied = run_one(f, client, py(code, requires={"label.net": "off", "network": "no"}))
        assert stdout(client, denied).startswith("blocked"), stdout(client, denied)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the listener
        allowed = run_one(f, client, py(code, requires={"label.net": "on", "network": "yes"}))
        assert stdout(client, allowed).strip() == "connected"
        conn, _ = listener.accept()
        conn.close()
    # a task asking for the network never lands on the worker that would refuse it
    job = client.submit_job([py(code, requires={"label.net": "off", "network": "yes"})])
    time.sleep(1.0)
    assert client.job(job.id).status == "queued"
    client.kill(job.id)


def test_a_task_sees_only_its_own_processes(sandboxed: tuple[Farm, WorkerProc, Client]) -> None:
    f, worker, client = sandboxed
    task = run_one(
        f,
        client,
        py("""
            import json, os
            procs = {}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    procs[pid] = open(f"/proc/{pid}/cmdline").read().replace("\\0", " ")
                except OSError:
                    pass
            print(json.dumps(procs))
        """),
    )
    assert task.status == "succeeded", stderr(client, task)
    procs = json.loads(stdout(client, task))
    assert len(procs) <= 3, procs  # bwrap's init, the task, maybe a helper
    assert not any(" -m corral " in cmd for cmd in procs.values()), procs  # no worker, server
    still_works(f, client)


def test_a_fork_bomb_is_stopped_by_the_processes_limit(
    sandboxed: tuple[Farm, WorkerProc, Client],
) -> None:
    f, worker, client = sandboxed
    (info,) = [w for w in client.workers() if w.id == worker.id]
    if info.capabilities["processes_limit"] == "none":
        pytest.skip("this worker cannot enforce a processes limit (root without a pids cgroup)")
    # the task forks until it cannot, and each child forks twice more; bounded at 192
    # processes in all, so the machine survives even a limit that does not hold
    bomb = py(
        """
        import os, time
        for _ in range(64):
            if os.fork() == 0:
                for _ in range(2):
                    try:
                        os.fork()
                    except OSError:
                        pass
                time.sleep(30)
                os._exit(0)
        time.sleep(30)
        """,
        limits={"processes": 16, "wall_time": 20},
    )
    started = time.monotonic()
    task = run_one(f, client, bomb)
    assert (task.status, task.error) == ("failed", "limit_exceeded: processes")
    assert time.monotonic() - started < 20
    still_works(f, client)


def test_memory_cpu_file_size_output_and_wall_time_limits(
    sandboxed: tuple[Farm, WorkerProc, Client],
) -> None:
    f, _, client = sandboxed
    cases = {
        "memory": py("x = bytearray(1 << 30)", limits={"memory": 256 << 20}),
        "cpu_time": py("while True: pass", limits={"cpu_time": 1, "wall_time": 30}),
        "file_size": py("open('big', 'wb').write(b'x' * (4 << 20))", limits={"file_size": 1 << 20}),
        "output_size": py(
            "for n in 'ab': open(n, 'wb').write(b'x' * 600_000)", limits={"output_size": 1 << 20}
        ),
        "wall_time": py("import time; time.sleep(60)", limits={"wall_time": 1}),
    }
    started = time.monotonic()
    job = client.submit_job(list(cases.values()))
    f.wait_job(client, job.id, 40)
    for which, task in zip(cases, client.tasks(job.id), strict=True):
        error = (task.error or "").partition(" (")[0]  # output_size says the sizes after it
        assert (task.status, error) == ("failed", f"limit_exceeded: {which}"), (
            which,
            stderr(client, task),
        )
    out = client.tasks(job.id)[3]
    assert out.manifest == {}  # output_size: nothing comes back, but the sizes are told
    assert out.error == (
        "limit_exceeded: output_size (1.1 MB in 2 files of 1.0 MB; largest: a 586 KB, b 586 KB)"
    )
    assert time.monotonic() - started < 30
    # the same limits leave a well-behaved task alone
    polite = py(
        "open('small', 'wb').write(b'x' * 1000)",
        limits={"memory": 256 << 20, "cpu_time": 5, "file_size": 1 << 20, "output_size": 1 << 20},
    )
    done = run_one(f, client, polite)
    assert (done.status, done.error, list(done.manifest)) == ("succeeded", None, ["small"])
    still_works(f, client)


def test_without_a_sandbox_the_worker_warns_and_says_none(farm: Callable[..., Farm]) -> None:
    f = farm()
    weak = f.start_worker(args=("--no-sandbox",))
    client = f.client()
    (info,) = [w for w in client.workers() if w.id == weak.id]
    assert (info.capabilities["sandbox"], info.capabilities["network"]) == ("none", "yes")
    assert "WARNING: tasks run WITHOUT a sandbox" in weak.stderr()
    job = client.submit_job([py("print(1)", requires={"sandbox": "bwrap"})])
    time.sleep(1.0)
    assert client.job(job.id).status == "queued"  # never given to the unsandboxed worker
    strong = f.start_worker()
    assert f.wait_job(client, job.id).status == "succeeded"
    assert client.tasks(job.id)[0].worker_id == strong.id

"""Escape attempts, item 8 and the network defaults: real coordinator and workers over HTTP.

- A worker that enforces the list and allows python and sh runs allowed scripts only: an
  unlisted script through an allowed interpreter, inline code, a shell line or an environment
  that loads other code are refused before anything starts, and the worker and its other
  tasks carry on.
- A task's CORRAL_TOKEN works while its lease lives (across extensions) and is refused (401)
  once the task finished or was killed.
- A worker joining a coordinator that is not on loopback refuses to start without a sandbox,
  before any connection; with --no-sandbox every `corral workers` line says so.

The first two run on a root worker (tasks as slot uids) and on a worker started as an
unprivileged account (tasks as that account), as test_escapes.py's do. The third is about the
worker's start-up decision, made from the coordinator's address and whether bwrap is usable,
before the worker's user plays any part: it runs once.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from corral.client import Client, sha256_file
from corral.protocol import Task, TaskSpec

from .conftest import PYTHON, Farm, run_cli, wait_for

pytestmark = pytest.mark.timeout(120)

NETWORK = {"network": "yes"}


@pytest.fixture(params=["root-worker", "user-worker"])
def worker_user(request: pytest.FixtureRequest) -> str | None:
    """Who the worker runs as: root (None), or an unprivileged account (`test_user`); a
    non-root test run starts its workers as itself, already the unprivileged case."""
    if request.param == "root-worker":
        if os.geteuid() != 0:
            pytest.skip("a root worker needs a root test run")
        return None
    return request.getfixturevalue("test_user") if os.geteuid() == 0 else None


def started(f: Farm, worker_user: str | None, *args: str) -> None:
    """A two-slot worker as `worker_user`, checked to run tasks as slot uids or as itself."""
    worker = f.start_worker(slots=2, args=args, user=worker_user)
    (info,) = [w for w in f.client().workers() if w.id == worker.id]
    root = worker_user is None and os.geteuid() == 0
    assert info.capabilities["task_user"] == ("slot-uids" if root else "self")


def run_one(f: Farm, client: Client, spec: TaskSpec) -> Task:
    job = client.submit_job([spec])
    f.wait_job(client, job.id, 30)
    (task,) = client.tasks(job.id)
    return task


def out(client: Client, task: Task) -> bytes:
    return client.read_blob(task.stdout or "") if task.stdout else b""


def test_an_allowed_interpreter_runs_only_allowed_scripts(
    farm: Callable[..., Farm], tmp_path: Path, worker_user: str | None
) -> None:
    f = farm()
    started(f, worker_user, "--enforce-allowlist")
    client = f.client()
    marker = tmp_path / "escaped"  # what a refused task would leave, had it run
    files = {
        "job.py": "print('job ran')\n",
        "evil.py": f"open({str(marker)!r}, 'w').write('x')\nprint('evil ran')\n",
        "job.sh": "echo sh job ran\n",
        "evil.sh": f"echo x > {marker}\n",
        "slow.py": "import time\ntime.sleep(3)\nprint('slow done')\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    refs = client.upload([tmp_path / name for name in files])
    for program in (PYTHON, "/bin/sh", *(str(tmp_path / n) for n in ("job.py", "job.sh"))):
        rc, _, err = f.cli("allow", "add", program)
        assert rc == 0, err
    rc, _, err = f.cli("allow", "add", str(tmp_path / "slow.py"))
    assert rc == 0, err

    def task(argv: list[str], **kw: object) -> TaskSpec:
        return TaskSpec(argv=argv, inputs=refs, **kw)  # type: ignore[arg-type]

    # a long allowed task runs beside the refusals, unharmed
    slow = client.submit_job([task([PYTHON, "slow.py"])])
    assert (ok := run_one(f, client, task([PYTHON, "job.py"]))).status == "succeeded", ok.error
    assert out(client, ok) == b"job ran\n"
    assert out(client, run_one(f, client, task(["sh", "job.sh"]))) == b"sh job ran\n"

    evil_sha = sha256_file(tmp_path / "evil.py")
    refused = {
        "script": run_one(f, client, task([PYTHON, "evil.py"])),
        "after -X": run_one(f, client, task([PYTHON, "-X", "job.py", "evil.py"])),
        "sh script": run_one(f, client, task(["sh", "evil.sh"])),
        "-c": run_one(f, client, task([PYTHON, "-c", "print('inline')"])),
        "-m": run_one(f, client, task([PYTHON, "-m", "evil"])),
        "sh -c": run_one(f, client, task(["sh", "-c", f"echo x > {marker}"])),
        "shell": run_one(f, client, task([f"echo x > {marker}"], shell=True)),
        "env": run_one(f, client, task([PYTHON, "job.py"], env={"PYTHONPATH": "."})),
        "PATH": run_one(f, client, task([PYTHON, "job.py"], env={"PATH": ".:/usr/bin"})),
    }
    for what, t in refused.items():
        assert (t.status, t.exit_code, t.stdout) == ("failed", None, None), what
        assert t.error is not None and t.error.startswith("not_allowed: "), (what, t.error)
    assert refused["script"].error == f"not_allowed: script evil.py sha256:{evil_sha}"
    assert refused["after -X"].error == refused["script"].error
    assert "script evil.sh" in (refused["sh script"].error or "")
    for what in ("-c", "-m", "sh -c", "shell"):
        assert "inline code" in (refused[what].error or ""), what
        assert "--allow-inline" in (refused[what].error or ""), what
    assert "PYTHONPATH" in (refused["env"].error or "")
    assert "PATH names '.'" in (refused["PATH"].error or "")
    assert not marker.exists()

    # the interpreter's entry says --allow-inline: now inline code and shell lines run
    rc, stdout, err = f.cli("allow", "add", "--allow-inline", PYTHON, "/bin/sh")
    assert rc == 0 and "inline code allowed" in stdout, err
    assert out(client, run_one(f, client, task([PYTHON, "-c", "print(6 * 7)"]))) == b"42\n"
    assert out(client, run_one(f, client, task(["echo", "hi"], shell=True))) == b"hi\n"
    rc, _, err = f.cli("allow", "add", PYTHON)  # added again without it: taken back
    assert rc == 0, err
    again = run_one(f, client, task([PYTHON, "-c", "print(1)"]))
    assert "inline code" in (again.error or "")

    # the worker and the other task carry on
    f.wait_job(client, slow.id, 30)
    (slow_task,) = client.tasks(slow.id)
    assert (slow_task.status, out(client, slow_task)) == ("succeeded", b"slow done\n")
    (info,) = client.workers()
    assert info.status == "online" and f.workers[0].proc.poll() is None


TOKEN_TASK = """
import os, sys, time, httpx
url, token = os.environ["CORRAL_URL"], os.environ["CORRAL_TOKEN"]
job = os.environ["CORRAL_JOB_ID"]
def status():
    auth = {"authorization": f"Bearer {token}"}
    return httpx.get(f"{url}/api/v1/jobs/{job}", headers=auth).status_code
first = status()
time.sleep(float(sys.argv[1]))  # longer than the lease: heartbeats extend it
open("token.txt", "w").write(token)
print(first, status(), token, flush=True)
time.sleep(float(sys.argv[2]))
"""


def denied(f: Farm, token: str, job_id: str) -> int:
    headers = {"authorization": f"Bearer {token}"}
    return httpx.get(f"{f.url}/api/v1/jobs/{job_id}", headers=headers).status_code


def test_a_tasks_token_ends_with_its_lease(
    farm: Callable[..., Farm], tmp_path: Path, worker_user: str | None
) -> None:
    f = farm(lease_timeout=2.0)
    started(f, worker_user, "--allow-network")  # a sandboxed task calls back over it
    client = f.client()
    script = tmp_path / "tok.py"
    script.write_text(TOKEN_TASK)
    refs = client.upload([script])

    # finished: the token it saved no longer opens its job
    job = client.submit_job(
        [
            TaskSpec(
                argv=[PYTHON, "tok.py", "2.5", "0"],
                inputs=refs,
                outputs=["token.txt"],
                requires=NETWORK,
            )
        ]
    )
    f.wait_job(client, job.id, 30)
    (done,) = client.tasks(job.id)
    assert done.status == "succeeded", done.error
    first, during, token = out(client, done).decode().split()
    assert (first, during) == ("200", "200")  # it worked, and still did after extensions
    assert client.read_blob(done.manifest["token.txt"].sha256).decode() == token
    assert denied(f, token, job.id) == 401

    # killed: its token stops with it, while the job's other task keeps its own
    job = client.submit_job(
        [TaskSpec(argv=[PYTHON, "tok.py", "0", "60"], inputs=refs, requires=NETWORK)] * 2
    )
    tasks = client.tasks(job.id)
    tokens = {}
    for t in tasks:
        f.wait_task(client, t.id, {"running"}, 30)
        line = wait_for(lambda t=t: client.log(t.id)[0], 30, 0.1, "the task's token")
        tokens[t.id] = line.decode().split()[2]
    victim, other = tasks
    client.kill(victim.id)
    f.wait_task(client, victim.id, {"killed"}, 15)
    assert denied(f, tokens[victim.id], job.id) == 401
    assert denied(f, tokens[other.id], job.id) == 200
    client.kill(job.id)


def test_a_worker_off_loopback_without_a_sandbox_refuses_to_start(
    farm: Callable[..., Farm], tmp_path: Path
) -> None:
    f = farm()
    no_bwrap = tmp_path / "bin"  # a PATH where bwrap is not
    no_bwrap.mkdir()
    env = {**f.env, "PATH": str(no_bwrap), "CORRAL_TOKEN": f.token}
    # TEST-NET-1 (RFC 5737) is never routed: a worker that tried to connect would hang
    argv = [PYTHON, "-m", "corral", "worker", "--server", "http://192.0.2.1:8470"]
    argv += ["--work-dir", str(tmp_path / "w")]
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "without a sandbox" in lines[0] and "bwrap is not installed" in lines[0]
    assert "install bubblewrap" in lines[0] and "--no-sandbox" in lines[0]
    assert time.monotonic() - started < 20

    # on loopback the same machine keeps today's warning and starts; `corral workers` says so
    f.start_worker(env={"PATH": str(no_bwrap)})
    assert "WARNING: tasks run WITHOUT a sandbox" in f.workers[0].stderr()
    f.start_worker(args=("--no-sandbox",))
    wide = {**f.env, "CORRAL_URL": f.url, "CORRAL_TOKEN": f.token, "COLUMNS": "200"}
    rc, listing, err = run_cli(["workers"], wide, tmp_path)  # wide: one line per worker
    assert rc == 0, err
    rows = [line for line in listing.splitlines() if " w1 " in line or " w2 " in line]
    assert len(rows) == 2 and all("NO SANDBOX" in row for row in rows), listing

"""`corral up` then the everyday CLI with no --server: submit --each-line, wait, fetch."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from corral.client import Client
from corral.protocol import TaskSpec

from .conftest import PYTHON, run_cli, up_url, wait_for


@pytest.mark.timeout(90)
def test_up_then_submit_wait_fetch_and_stop(
    tmp_path: Path, isolated: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "up.log"
    argv = [PYTHON, "-m", "corral", "up", "--workers", "2", "--port", "0"]
    argv += ["--data", str(tmp_path / "data")]
    with log.open("wb") as out:
        up = subprocess.Popen(
            argv, env=isolated, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    procs.append(up)

    url = up_url(up, log)
    config = Path(isolated["XDG_CONFIG_HOME"]) / "corral" / "config.json"
    assert json.loads(config.read_text())["url"] == url
    with Client() as client:  # found through the config `up` wrote, like the CLI below
        assert client.url == url
        wait_for(
            lambda: sum(w.status == "online" for w in client.workers()) == 2, 20, 0.1, "workers"
        )
    workers = psutil.Process(up.pid).children()  # forked: they show `up`'s command line
    assert len(workers) == 2

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = run_cli(
        ["submit", "--each-line", "--", "sh", "-c", "echo {} > {}.txt"],
        isolated,
        cwd,
        stdin="a\nb\nc\n",
    )
    assert rc == 0, err
    job_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), out

    rc, out, err = run_cli(["wait", job_id], isolated, cwd, timeout=30)
    assert rc == 0, err
    lines = out.splitlines()
    with Client() as client:
        task_ids = [t.id for t in client.tasks(job_id)]
    assert len(task_ids) == 3
    assert sorted(lines[:-1]) == sorted(f"{t[:12]} succeeded" for t in task_ids)
    assert lines[-1] == f"job {job_id[:12]} succeeded: 3 succeeded"

    dest = tmp_path / "results"
    rc, out, err = run_cli(["fetch", job_id, "--to", str(dest)], isolated, cwd)
    assert rc == 0, err
    assert out.strip() == f"fetched 3 task(s) into {dest}"
    returned = {p.relative_to(dest).parts[1]: p.read_text() for p in dest.glob("*/*.txt")}
    assert returned == {"a.txt": "a\n", "b.txt": "b\n", "c.txt": "c\n"}
    assert {p.name for p in dest.iterdir()} == set(task_ids)

    up.send_signal(signal.SIGTERM)
    assert up.wait(10) == 0, log.read_text()
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert alive == [], f"workers left behind: {alive}"


@pytest.mark.timeout(60)
def test_first_result_from_a_fresh_data_dir(
    tmp_path: Path, isolated: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    """What B7 times: from spawning `corral up` on an empty data dir to one task's result."""
    data = tmp_path / "data"
    log = tmp_path / "up.log"
    argv = [PYTHON, "-m", "corral", "up", "--workers", "2", "--port", "0", "--data", str(data)]
    with log.open("wb") as out:
        up = subprocess.Popen(argv, env=isolated, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    procs.append(up)

    def announced() -> str | None:
        found = re.search(r"corral is up at (http://127\.0\.0\.1:\d+)", log.read_text())
        return found.group(1) if found else None

    url = wait_for(announced, 20, 0.02, "corral up to print its URL")
    with Client(url, (data / "admin.token").read_text().strip()) as client:
        job = client.submit_job([TaskSpec(argv=["sh", "-c", "echo first"])])
        for _ in client.events(job.id):
            pass
        assert client.job(job.id).status == "succeeded"
        (task,) = client.tasks(job.id)
        assert client.log(task.id)[0] == b"first\n"
        wait_for(lambda: len(client.workers()) == 2, 20, 0.05, "the second worker")
    up.send_signal(signal.SIGTERM)
    assert up.wait(10) == 0, log.read_text()


@pytest.mark.timeout(60)
def test_workers_leave_when_the_coordinator_cannot_start(
    tmp_path: Path, isolated: dict[str, str]
) -> None:
    data = tmp_path / "data"
    (data / "corral.db").mkdir(parents=True)  # SQLite cannot open a directory
    argv = [PYTHON, "-m", "corral", "up", "--workers", "2", "--port", "0", "--data", str(data)]
    up = subprocess.Popen(argv, env=isolated, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    children: list[psutil.Process] = []
    with contextlib.suppress(psutil.NoSuchProcess):
        children = psutil.Process(up.pid).children()
    _, err = up.communicate(timeout=30)
    assert up.returncode != 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"workers left behind: {alive}\n{err.decode()}"

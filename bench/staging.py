"""B6 staging (a 1 GB input to a worker; one executable sent to 100 tasks) and B7 `corral up`
to the first result."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from corral.client import Client
from corral.protocol import FINAL_STATUSES, TaskSpec

from .farm import PYTHON, Farm, free_port, isolated_env, stop


def _write_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as f:
        for _ in range(size >> 20):
            f.write(block)


def loopback_copy(path: Path) -> float:
    """MB/s of a plain copy of `path` over a loopback TCP socket into a file (sendfile)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def send() -> None:
        conn, _ = server.accept()
        with conn, path.open("rb") as f:
            conn.sendfile(f)

    thread = threading.Thread(target=send)
    thread.start()
    dest = path.with_suffix(".copy")
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s, dest.open("wb") as out:
        while data := s.recv(1 << 20):
            out.write(data)
    elapsed = time.perf_counter() - t0
    thread.join()
    server.close()
    dest.unlink()
    return path.stat().st_size / elapsed / 1e6


def _timed_task(client: Client, spec: TaskSpec, timeout: float = 300.0) -> float:
    t0 = time.perf_counter()
    job = client.submit_job([spec])
    for _ in client.events(job.id):
        pass
    status = client.job(job.id).status
    assert status == "succeeded", f"task {status}"
    assert time.perf_counter() - t0 < timeout
    return time.perf_counter() - t0


def big_input(size_mb: int) -> dict[str, Any]:
    """Worker MB/s for one big input: (task with it) minus (the same task without it)."""
    with Farm(workers=1) as farm, Client(farm.url, farm.token, timeout=600.0) as client:
        farm.wait_workers()
        big = farm.root / "big.bin"
        _write_file(big, size_mb << 20)
        t0 = time.perf_counter()
        refs = client.upload([big])
        upload_s = time.perf_counter() - t0
        bare = min(_timed_task(client, TaskSpec(argv=["/bin/true"])) for _ in range(3))
        staged = _timed_task(client, TaskSpec(argv=["/bin/true"], inputs=refs))
        size = big.stat().st_size
        return {
            "bytes": size,
            "upload_mb_s": size / upload_s / 1e6,
            "worker_mb_s": size / max(staged - bare, 1e-6) / 1e6,
            "task_s": staged,
            "loopback_copy_mb_s": loopback_copy(big),
        }


def repeated_executable(tasks: int) -> dict[str, Any]:
    """Bytes each worker fetched for one executable shipped with `tasks` tasks."""
    with Farm(workers=2, verbose_workers=True) as farm, Client(farm.url, farm.token) as client:
        farm.wait_workers()
        tool = farm.root / "tool.sh"
        tool.write_text("#!/bin/sh\n" + "# padding\n" * 100_000 + "exit 0\n")
        tool.chmod(0o755)
        refs = client.upload([tool])
        sha = refs["tool.sh"].sha256
        job = client.submit_job([TaskSpec(argv=["tool.sh"], inputs=refs)] * tasks)
        for _ in client.events(job.id):
            pass
        assert client.job(job.id).status == "succeeded"
        size = tool.stat().st_size
        fetches = [log.read_text().count(f"fetched blob {sha}") for log in farm.worker_logs]
        return {
            "tasks": tasks,
            "executable_bytes": size,
            "fetches_per_worker": fetches,
            "bytes_per_worker": [n * size for n in fetches],
            "repeat_bytes_per_worker": [max(n - 1, 0) * size for n in fetches],
        }


def b6_staging(size_mb: int, tasks: int) -> dict[str, Any]:
    """Both halves of B6."""
    return {"big": big_input(size_mb), "repeat": repeated_executable(tasks)}


def b7_up(timeout: float = 60.0) -> dict[str, Any]:
    """Seconds from starting `corral up` to the first task's result, from a fresh data dir."""
    root = Path(tempfile.mkdtemp(prefix="corral-bench-b7-"))
    env = isolated_env(root)
    port = free_port()
    argv = [PYTHON, "-m", "corral", "up", "--workers", "2", "--port", str(port)]
    argv += ["--data", str(root / "data")]
    t0 = time.perf_counter()
    log = (root / "up.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
    try:
        token = _token(root / "data" / "admin.token", t0 + timeout)
        with Client(f"http://127.0.0.1:{port}", token) as client:
            job = _submit_retrying(client, t0 + timeout)
            while client.job(job.id).status not in FINAL_STATUSES:
                if time.perf_counter() > t0 + timeout:
                    raise TimeoutError("no result from corral up")
                time.sleep(0.005)
        return {"seconds": time.perf_counter() - t0}
    finally:
        stop(proc, grace=10.0)
        shutil.rmtree(root, ignore_errors=True)


def _token(path: Path, deadline: float) -> str:
    while not (path.exists() and path.read_text().strip()):
        if time.perf_counter() > deadline:
            raise TimeoutError("corral up wrote no admin token")
        time.sleep(0.005)
    return path.read_text().strip()


def _submit_retrying(client: Client, deadline: float) -> Any:
    from corral.client import Unreachable

    while True:
        try:
            return client.submit_job([TaskSpec(argv=["/bin/true"])])
        except (Unreachable, httpx.HTTPError):
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.005)

"""A throwaway Corral farm for benchmarks: a coordinator and N workers as real processes on
loopback, in a temporary directory that is removed (with every process) on exit."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from .cpu import CpuMeter

PYTHON = sys.executable


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolated_env(root: Path) -> dict[str, str]:
    """XDG directories under `root`, no CORRAL_* variables from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        path = root / "xdg" / name.split("_")[1].lower()
        path.mkdir(parents=True, exist_ok=True)
        env[name] = str(path)
    return env


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_healthy(url: str, timeout: float = 20.0) -> None:
    """Poll /healthz until the coordinator answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"coordinator at {url} did not start in {timeout} s")
        time.sleep(0.02)


class Farm:
    """`with Farm(workers=2) as farm:` gives farm.url, farm.token and farm.client()."""

    def __init__(
        self,
        workers: int = 2,
        slots: int = 1,
        verbose_workers: bool = False,
        sandbox: bool = True,
        worker_prefix: tuple[str, ...] = (PYTHON, "-m", "corral"),
        channel: str | None = None,
    ) -> None:
        self.n_workers = workers
        # the workers' --channel: as given, else this process's CORRAL_CHANNEL (bench/run
        # --channel sets it), else the default; isolated_env keeps CORRAL_* out of theirs
        self.channel = channel or os.environ.get("CORRAL_CHANNEL", "auto")
        self.sandbox = sandbox
        self.worker_prefix = list(worker_prefix)  # e.g. under a profiler (profile_worker.py)
        self.slots = slots
        self.verbose = verbose_workers
        self.root = Path(tempfile.mkdtemp(prefix="corral-bench-"))
        self.env = isolated_env(self.root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "bench-token"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.worker_logs: list[Path] = []

    def __enter__(self) -> Farm:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the coordinator, wait for it, then start the workers."""
        data = self.root / "data"
        argv = [PYTHON, "-m", "corral", "server", "--port", str(self.port), "--data", str(data)]
        env = {**self.env, "CORRAL_TOKEN": self.token}
        log = (self.root / "server.log").open("wb")
        self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log))
        wait_healthy(self.url)
        for i in range(self.n_workers):
            self.start_worker(i)

    def start_worker(self, i: int) -> None:
        """One more worker process."""
        argv = [
            *self.worker_prefix,
            "worker",
            "--server",
            self.url,
            "--slots",
            str(self.slots),
            "--work-dir",
            str(self.root / f"w{i}"),
            "--name",
            f"bench-w{i}",
            "--channel",
            self.channel,
        ]
        if self.verbose:
            argv.append("-v")
        if not self.sandbox:
            argv.append("--no-sandbox")
        env = {**self.env, "CORRAL_TOKEN": self.token}
        path = self.root / f"w{i}.log"
        self.worker_logs.append(path)
        log = path.open("wb")
        self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log))

    def meter(self) -> CpuMeter:
        """A CPU meter over this farm's coordinator and workers (cpu.py), started."""
        return CpuMeter(self.procs[0].pid, [p.pid for p in self.procs[1:]]).start()

    def client(self) -> object:
        """A corral Client for this farm."""
        from corral.client import Client

        return Client(self.url, self.token, timeout=120.0)

    def wait_workers(self, timeout: float = 20.0) -> None:
        """Wait until every worker has registered."""
        from corral.client import Client

        with Client(self.url, self.token) as c:
            deadline = time.monotonic() + timeout
            while sum(w.status == "online" for w in c.workers()) < self.n_workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not register")
                time.sleep(0.02)

    def close(self) -> None:
        """Stop workers first (they drain), then the coordinator; remove the directory."""
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)

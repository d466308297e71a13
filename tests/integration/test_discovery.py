"""`corral worker --discover` finds a coordinator by its UDP beacon, over real processes.

On loopback (no privileges needed): a coordinator with `--announce` beacons to
127.255.255.255 and a worker picks it up; without `--announce` a loopback coordinator
stays quiet. On a namespace LAN (root and iproute2): two network namespaces joined by a veth
pair, the coordinator in one listening on its LAN address (so it announces by default), a
worker in the other with no URL. Only 10.232.N.0/24 is used, inside the namespaces, which
the test creates and deletes itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.client import Client
from corral.protocol import TaskSpec

from .conftest import PYTHON, free_port, run_cli, stop_all, wait_for

IP = shutil.which("ip")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
IN_CI = bool(os.environ.get("CI"))

pytestmark = pytest.mark.timeout(100)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def spawn(
    argv: list[str], env: dict[str, str], log: Path, procs: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    procs.append(proc)
    return proc


def corral(*args: str) -> list[str]:
    return [PYTHON, "-m", "corral", *args]


def test_worker_discovers_an_announcing_coordinator_on_loopback(
    tmp_path: Path, isolated: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    port, beacon_port = free_port(), free_udp_port()
    url, data = f"http://127.0.0.1:{port}", tmp_path / "data"
    # listen before the coordinator starts, to see exactly what goes on the wire
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ear:
        ear.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ear.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        ear.bind(("", beacon_port))
        ear.settimeout(20)
        argv = corral("server", "--port", str(port), "--data", str(data), "--announce")
        spawn(argv + ["--announce-port", str(beacon_port)], isolated, tmp_path / "s.log", procs)
        raw, sender = ear.recvfrom(4096)
    token = (data / "admin.token").read_text().strip()
    assert json.loads(raw)["url"] == url and sender[0] == "127.0.0.1"
    assert token.encode() not in raw  # the token is never broadcast

    log = tmp_path / "w.log"
    argv = corral("worker", "--discover", "--discover-port", str(beacon_port), "-v")
    argv += ["--discover-timeout", "20", "--work-dir", str(tmp_path / "w"), "--name", "disc"]
    worker = spawn(argv, {**isolated, "CORRAL_TOKEN": token}, log, procs)
    with Client(url, token) as client:

        def online() -> bool:
            assert worker.poll() is None, log.read_text()
            return any(w.name == "disc" and w.status == "online" for w in client.workers())

        wait_for(online, 30, 0.1, what="the discovering worker to register")
        job = client.submit_job([TaskSpec(["echo", "found you"])])
        (task,) = client.tasks(job.id)
        done = wait_for(
            lambda: (t := client.task(task.id)).status in ("succeeded", "failed") and t, 30, 0.1
        )
        assert done.status == "succeeded", done.error
    assert "found coordinator" in log.read_text() and url in log.read_text()


def test_loopback_coordinator_does_not_announce_by_default(
    tmp_path: Path, isolated: dict[str, str], procs: list[subprocess.Popen[bytes]]
) -> None:
    port, beacon_port = free_port(), free_udp_port()
    argv = corral("server", "--port", str(port), "--data", str(tmp_path / "data"))
    spawn(argv + ["--announce-port", str(beacon_port)], isolated, tmp_path / "s.log", procs)
    wait_for(lambda: _healthy(f"http://127.0.0.1:{port}"), 20, 0.1, what="the coordinator")
    args = ("worker", "--discover", "--discover-port", str(beacon_port), "--discover-timeout", "2")
    rc, _, err = run_cli(args, {**isolated, "CORRAL_TOKEN": "x"}, tmp_path)
    assert rc == 1 and "no coordinator announced itself" in err, err


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


# a LAN of two network namespaces


def ip(*args: str) -> str:
    assert IP is not None
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=15)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@pytest.fixture
def lan() -> Iterator[tuple[str, str, str]]:
    """Two namespaces on one veth link: (coordinator ns, worker ns, 10.232.N prefix)."""
    problem = None if IS_ROOT else "network namespaces need root"
    problem = problem or (None if IP else "iproute2 `ip` is not installed")
    if problem:
        if IN_CI and IS_ROOT:
            pytest.fail(f"{problem} (CI is set and we are root: this test must not be skipped)")
        pytest.skip(problem)
    used = ip("-4", "addr") + ip("-4", "route", "show", "table", "all")
    n = next(n for n in random.sample(range(1, 255), 254) if f"10.232.{n}." not in used)
    tag = secrets.token_hex(2)
    coord_ns, worker_ns = f"crd-{tag}-c", f"crd-{tag}-w"
    made: list[str] = []
    try:
        for ns in (coord_ns, worker_ns):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", f"dc{tag}", "netns", coord_ns, "type", "veth", "peer", "name",
           f"dw{tag}", "netns", worker_ns)  # fmt: skip
        for ns, dev, host in ((coord_ns, f"dc{tag}", 1), (worker_ns, f"dw{tag}", 2)):
            ip("-n", ns, "addr", "add", f"10.232.{n}.{host}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        yield coord_ns, worker_ns, f"10.232.{n}"
    finally:
        for ns in made:
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", ns)


def test_worker_discovers_the_coordinator_on_a_namespace_lan(
    tmp_path: Path,
    isolated: dict[str, str],
    procs: list[subprocess.Popen[bytes]],
    lan: tuple[str, str, str],
) -> None:
    coord_ns, worker_ns, prefix = lan
    url, data = f"http://{prefix}.1:8470", tmp_path / "data"
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    try:
        argv = ["ip", "netns", "exec", coord_ns, *corral("server", "--host", f"{prefix}.1")]
        argv += ["--data", str(data), "--insecure", "--lease-timeout", "3"]
        spawn(argv, isolated, server_log, procs)  # announces: it listens beyond loopback
        wait_for(lambda: "announcing" in server_log.read_text(), 20, 0.1, what="announcing")
        token = (data / "admin.token").read_text().strip()

        argv = [
            "ip",
            "netns",
            "exec",
            worker_ns,
            *corral("worker", "--discover", "--allow-all", "-v"),
        ]
        argv += ["--discover-timeout", "30", "--work-dir", str(tmp_path / "w"), "--name", "lan"]
        worker = spawn(argv, {**isolated, "CORRAL_TOKEN": token}, worker_log, procs)
        wait_for(lambda: "found coordinator" in worker_log.read_text(), 30, 0.1, what="beacon")
        assert worker.poll() is None and url in worker_log.read_text()

        def cli(*args: str) -> tuple[int, str, str]:
            env = {**isolated, "CORRAL_URL": url, "CORRAL_TOKEN": token}
            argv = ["ip", "netns", "exec", coord_ns, sys.executable, "-m", "corral", *args]
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            return done.returncode, done.stdout, done.stderr

        rc, out, err = cli("submit", "--", "echo", "hello from the LAN")
        assert rc == 0, err
        rc, out, err = cli("wait", out.strip())
        assert rc == 0, f"{out}{err}\n{worker_log.read_text()}"
        rc, out, err = cli("workers", "--json")
        assert rc == 0 and any(w["name"] == "lan" for w in json.loads(out)), out
    finally:
        stop_all(list(reversed(procs)))

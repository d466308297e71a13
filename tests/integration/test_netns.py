"""Corral across separate network hosts: one Linux network namespace per host.

Layout (names and the /24 are random per test, so runs never collide)::

    root ns (this test, the client) --veth-- +--------------------------+
                                              | crl-XXXX-c: br0 .1       |
    crl-XXXX-a: eth0 .11 (worker host-1) --veth--  coordinator :8470    |
    crl-XXXX-b: eth0 .12 (worker host-2) --veth--                       |
    crl-XXXX-d: eth0 .13 (worker host-3) --veth-- +--------------------+

The coordinator listens on its bridge address only, so every worker talks to it over a real
(virtual) link that a test can cut with `ip link set eth0 down` inside the worker's namespace.
Only addresses in 10.231.N.0/24 are used, and the only route added outside the namespaces is
that /24 on the root side of one veth, removed with the namespaces.

The hosts differ: host-i carries the label `site=<a|b|c>`, and only host-2 has the program
`corral-only-here` on its PATH (its worker looks for programs when tasks ask for them). The
farm has three worker hosts unless a test asks for fewer, and a test may keep some hosts'
workers back to start them mid-job.

Needs root and iproute2; skipped otherwise, unless CI is set and we are root (then a missing
`ip` or a failing `ip netns add` is an error, not a skip).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import msgspec
import psutil
import pytest

from corral.client import Client
from corral.protocol import FINAL_STATUSES, OutputFile, Task, TaskResult, TaskSpec

from .conftest import wait_for

T = TypeVar("T")

PYTHON = sys.executable
PYTHON_SHA256 = hashlib.sha256(Path(PYTHON).read_bytes()).hexdigest()
# tasks need their host's network to name it (see SOURCE_IP); the sandbox gives it on request
NETWORK = {"network": "yes"}
PORT = 8470
LEASE_TIMEOUT = 3.0
STOP_GRACE = 4.0
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
IP = shutil.which("ip")
IN_CI = bool(os.environ.get("CI"))
# host-i is in namespace <prefix>-<NS_TAGS[i-1]> and labelled site=<SITES[i-1]>
# ("c" names the coordinator's namespace, so hosts skip that letter)
NS_TAGS = "abd"
SITES = "abc"
PROGRAM = "corral-only-here"
PROGRAM_HOST = 2  # the only host with PROGRAM on its PATH

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="network namespaces need root"),
    pytest.mark.skipif(IP is None and not IN_CI, reason="iproute2 `ip` is not installed"),
    pytest.mark.timeout(90),
]


# helpers


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ARGS` (bounded); raise with its stderr when `check` and it fails."""
    assert IP is not None, "iproute2 `ip` is not installed"
    done = subprocess.run(
        [IP, *args], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def stop_tree(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM a process, SIGKILL it after `grace`, then kill whatever it left behind."""
    try:
        leftovers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        leftovers = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(grace)
    for child in leftovers:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(leftovers, timeout=grace)


def free_subnet() -> int:
    """A random N such that 10.231.N.0/24 appears nowhere in the root namespace."""
    used = ip("-4", "addr").stdout + ip("-4", "route", "show", "table", "all").stdout
    for _ in range(50):
        n = random.randint(1, 254)
        if f"10.231.{n}." not in used:
            return n
    raise RuntimeError("no free 10.231.N.0/24")


@dataclass
class Bridge:
    """Namespace hosts on one bridge, which a namespace of its own holds (a host too when it
    has an address), and a veth from the root namespace: the test's own end, at .254."""

    prefix: str
    subnet: int = 0
    namespaces: list[str] = field(default_factory=list)

    def addr(self, last: int) -> str:
        return f"10.231.{self.subnet}.{last}"

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def root_veth(self) -> str:
        return f"{self.prefix}-r"

    def build(
        self, switch: str, hosts: Mapping[str, int], switch_addr: int | None = None
    ) -> dict[str, str]:
        """Namespace PREFIX-SWITCH holding br0 (at .SWITCH_ADDR if given) and one namespace
        PREFIX-NAME a host, its eth0 on br0 at .N; host name -> address."""
        self.subnet = free_subnet()
        bridge = self.ns(switch)
        for ns in (bridge, *map(self.ns, hosts)):
            ip("netns", "add", ns)
            self.namespaces.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", bridge, "link", "add", "br0", "type", "bridge")
        if switch_addr is not None:
            ip("-n", bridge, "addr", "add", f"{self.addr(switch_addr)}/24", "dev", "br0")
        ip("-n", bridge, "link", "set", "br0", "up")
        for name, last in hosts.items():
            ns, peer = self.ns(name), f"to-{name}"
            ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer)
            ip("-n", ns, "link", "set", peer, "netns", bridge)
            ip("-n", bridge, "link", "set", peer, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.addr(last)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        # the test process (root namespace) reaches the bridge through one more veth
        root = self.root_veth
        ip("link", "add", root, "type", "veth", "peer", "name", "to-root", "netns", bridge)
        ip("-n", bridge, "link", "set", "to-root", "master", "br0", "up")
        ip("addr", "add", f"{self.addr(254)}/24", "dev", root)
        ip("link", "set", root, "up")
        return {name: self.addr(last) for name, last in hosts.items()}

    def close(self) -> None:
        """Remove the namespaces, and the root's veth if it outlived the bridge's."""
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        self.namespaces.clear()
        if ip("link", "show", self.root_veth, check=False).returncode == 0:
            ip("link", "del", self.root_veth, check=False)


# the farm


@dataclass
class Host:
    """A worker host: its namespace, address, what sets it apart, and its worker process."""

    name: str
    ns: str
    addr: str
    work_dir: Path
    log: Path
    labels: dict[str, str] = field(default_factory=dict)
    path_dir: Path | None = None  # put first on the worker's PATH (programs only it has)
    proc: subprocess.Popen[bytes] | None = None
    id: str = ""

    def link(self, state: str) -> None:
        """Bring this host's only link up or down (from inside its namespace)."""
        ip("-n", self.ns, "link", "set", "eth0", state)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def python(self, code: str, stdin: bytes = b"", timeout: float = 20.0) -> str:
        """Run Python code on this host (in its namespace); its stdout. Fails on exit != 0."""
        done = subprocess.run(
            [str(IP), "netns", "exec", self.ns, PYTHON, "-c", code],
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout.decode()


@dataclass
class NetFarm:
    """N worker namespaces and the coordinator's, on one bridge; a worker on each host."""

    root: Path
    n_hosts: int = 3
    net: Bridge = field(default_factory=lambda: Bridge(f"crl-{secrets.token_hex(2)}"))
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    hosts: list[Host] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    token: str = ""
    client: Client | None = None

    @property
    def coord_ns(self) -> str:
        return self.net.ns("c")

    def addr(self, last: int) -> str:
        return self.net.addr(last)

    @property
    def url(self) -> str:
        return f"http://{self.addr(1)}:{PORT}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    # network
    def build_network(self) -> None:
        assert 1 <= self.n_hosts <= len(NS_TAGS)
        tags = NS_TAGS[: self.n_hosts]
        # the coordinator's namespace holds the bridge, at .1; host i is at .10+i
        self.net.build("c", {tag: 10 + i for i, tag in enumerate(tags, start=1)}, switch_addr=1)
        for i, tag in enumerate(tags, start=1):
            self.hosts.append(
                Host(
                    f"host-{i}",
                    self.net.ns(tag),
                    self.addr(10 + i),
                    self.root / f"w{i}",
                    self.root / "logs" / f"w{i}.log",
                    labels={"site": SITES[i - 1]},
                    path_dir=self._program_dir() if i == PROGRAM_HOST else None,
                )
            )

    def _program_dir(self) -> Path:
        """A directory holding PROGRAM, a tiny executable no other host has on its PATH."""
        bin_dir = self.root / "only-here-bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        program = bin_dir / PROGRAM
        program.write_text("#!/bin/sh\necho only here\n")
        program.chmod(0o755)
        return bin_dir

    # processes
    def _spawn(
        self, ns: str, argv: list[str], log: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(IP), "netns", "exec", ns, *argv],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def start(self, workers: int | None = None) -> None:
        """Start the coordinator, then workers on the first `workers` hosts (default: all)."""
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
            path = self.root / "xdg" / name.split("_")[1].lower()
            path.mkdir(parents=True, exist_ok=True)
            self.env[name] = str(path)
        self.env["PYTHONUNBUFFERED"] = "1"
        server_log = self.root / "logs" / "server.log"
        argv = [PYTHON, "-m", "corral", "server", "--host", self.addr(1), "--port", str(PORT)]
        argv += ["--data", str(self.data), "--lease-timeout", str(LEASE_TIMEOUT)]
        argv += ["--insecure"]  # a namespace this test made: plain HTTP is fine, and non-loopback
        server = self._spawn(self.coord_ns, argv, server_log, self.env)

        def healthy() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"server exited early:\n{server_log.read_text()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 20.0, 0.1, "the coordinator's /healthz across the bridge")
        self.token = (self.data / "admin.token").read_text().strip()
        self.client = Client(self.url, self.token)
        first = self.hosts[: len(self.hosts) if workers is None else workers]
        for host in first:
            self._spawn_worker(host)
        for host in first:
            self._wait_online(host)

    def start_worker(self, host: Host) -> None:
        """Start `host`'s worker (say, mid-job) and wait until it has registered."""
        self._spawn_worker(host)
        self._wait_online(host)

    def _spawn_worker(self, host: Host) -> None:
        assert host.proc is None, f"{host.name} already has a worker"
        env = {**self.env, "CORRAL_TOKEN": self.token}
        if host.path_dir is not None:
            env["PATH"] = f"{host.path_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
        argv = [PYTHON, "-m", "corral", "worker", "--server", self.url, "--slots", "1"]
        argv += ["--work-dir", str(host.work_dir), "--name", host.name, "-v"]
        for key, value in host.labels.items():
            argv += ["--label", f"{key}={value}"]
        # a worker on a non-loopback coordinator enforces its allowlist: allow exactly the
        # interpreter the tasks run (with their -c code); and let tasks that ask for it use
        # the host's network
        argv += ["--allow-inline", f"sha256:{PYTHON_SHA256}", "--allow-network"]
        host.proc = self._spawn(host.ns, argv, host.log, env)

    def _wait_online(self, host: Host) -> None:
        host.id = wait_for(partial(self._online_id, host), 20.0, 0.1, f"{host.name} to register")

    def _online_id(self, host: Host) -> str | None:
        assert self.client is not None and host.proc is not None
        if host.proc.poll() is not None:
            raise AssertionError(f"{host.name} exited early:\n{host.log_text()}")
        mine = [w for w in self.client.workers() if w.name == host.name and w.status == "online"]
        return max(mine, key=lambda w: w.registered).id if mine else None

    def host_of(self, worker_id: str | None) -> Host:
        return next(h for h in self.hosts if h.id == worker_id)

    def worker_status(self, host: Host) -> str:
        assert self.client is not None
        return next(w.status for w in self.client.workers() if w.id == host.id)

    # teardown: every step runs even if an earlier one failed
    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        for proc in reversed(self.procs):  # workers first, then the coordinator
            with contextlib.suppress(Exception):
                stop_tree(proc)
        self.net.close()
        # pytest shows this only when the test failed
        for log in sorted((self.root / "logs").glob("*.log")):
            lines = [x for x in log.read_text(errors="replace").splitlines() if "HTTP Req" not in x]
            print(f"--- {log.name} (without HTTP request lines)\n" + "\n".join(lines[-60:]))


@pytest.fixture
def make_netfarm(tmp_path: Path) -> Iterator[Callable[..., NetFarm]]:
    """Factory: `make_netfarm(hosts=3, workers=None)` builds the namespaces, starts the
    coordinator and workers on the first `workers` hosts (all by default); all torn down."""
    if IP is None:
        pytest.fail("iproute2 `ip` is not installed (CI is set and we are root)")
    farms: list[NetFarm] = []

    def make(hosts: int = 3, workers: int | None = None) -> NetFarm:
        farm = NetFarm(tmp_path / f"farm{len(farms)}", hosts)
        farms.append(farm)
        try:
            farm.build_network()
        except RuntimeError as exc:
            if IN_CI:
                raise
            pytest.skip(f"cannot build network namespaces here: {exc}")
        farm.start(workers)
        return farm

    try:
        yield make
    finally:
        for farm in farms:
            farm.close()


@pytest.fixture
def netfarm(make_netfarm: Callable[..., NetFarm]) -> NetFarm:
    """The coordinator and three worker hosts, all workers online."""
    return make_netfarm()


# what tasks run

# The marker: the address this task's packets to the coordinator leave from, seen from inside
# the task (a UDP connect sends nothing). It names the network namespace the task ran in.
SOURCE_IP = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.connect(({coord!r}, 9))\n"
    "src = s.getsockname()[0]\n"
    "s.close()\n"
)

COPY_TASK = SOURCE_IP + (
    "import os, time\n"
    "time.sleep(0.6)\n"
    "data = open('data.bin', 'rb').read()\n"
    "open('result.bin', 'wb').write(data[::-1] + os.environ['CORRAL_TASK_ID'].encode())\n"
    "print('ran-on=' + src, flush=True)\n"
)

# A task's job token is `crj_<task>.<lease>.<mac>`: the slow task tells its lease id on stderr,
# which is how the test learns the id the cut-off host's late result would carry.
SLOW_TASK = SOURCE_IP + (
    "import os, sys, time\n"
    "print('lease=' + os.environ['CORRAL_TOKEN'].split('.')[1], file=sys.stderr, flush=True)\n"
    "print('started-on=' + src, flush=True)\n"
    "time.sleep(3)\n"
    "open('result.txt', 'w').write('attempt=%s on=%s' % (os.environ['CORRAL_ATTEMPT'], src))\n"
    "print('ran-on=' + src, flush=True)\n"
)


def wait_task(client: Client, task_id: str, ok: Callable[[Task], bool], timeout: float) -> Task:
    def check() -> Task | None:
        task = client.task(task_id)
        return task if ok(task) else None

    return wait_for(check, timeout, 0.05, f"task {task_id} to change")


def blob(client: Client, sha: str, dest: Path) -> bytes:
    client.download(sha, dest)
    return dest.read_bytes()


# tests


def test_tasks_run_on_all_hosts_and_results_come_back_intact(
    netfarm: NetFarm, tmp_path: Path
) -> None:
    client = netfarm.client
    assert client is not None
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(300_000))
    refs = client.upload([payload])
    assert list(refs) == ["data.bin"]
    script = COPY_TASK.format(coord=netfarm.addr(1))
    specs = [
        TaskSpec(
            argv=[PYTHON, "-c", script],
            requires=NETWORK,
            inputs=refs,
            outputs=["result.bin"],
            name=f"t{i}",
        )
        for i in range(8)
    ]
    job = client.submit_job(specs, name="netns")

    def done() -> bool:
        return client.job(job.id).status in FINAL_STATUSES

    wait_for(done, 45.0, 0.1, f"job {job.id} to finish")
    tasks = client.tasks(job.id)
    assert [t.status for t in tasks] == ["succeeded"] * 8, [(t.status, t.error) for t in tasks]
    assert {t.worker_id for t in tasks} == {h.id for h in netfarm.hosts}, "not every host ran"

    data = payload.read_bytes()
    for task in tasks:
        host = netfarm.host_of(task.worker_id)
        stdout = blob(client, task.stdout or "", tmp_path / "out" / task.id / "stdout")
        assert stdout == f"ran-on={host.addr}\n".encode(), (task.name, host.name, stdout)
        assert task.attempts == 1
        expected = data[::-1] + task.id.encode()
        entry = task.manifest["result.bin"]
        assert entry.sha256 == hashlib.sha256(expected).hexdigest()
        assert entry.size == len(expected)
        got = blob(client, entry.sha256, tmp_path / "out" / task.id / "result.bin")
        assert got == expected, f"{task.name}: result differs"
    # each host staged the input from the coordinator's blob store: it crossed the bridge
    for host in netfarm.hosts:
        cached = list((host.work_dir / "cache").rglob("*"))
        assert any(p.is_file() and p.stat().st_size == len(data) for p in cached), host.name


# Posts a result from inside a host's namespace: stdin is the URL, the token, then the body.
POST_RESULT = (
    "import sys, httpx\n"
    "url, token, body = sys.stdin.buffer.read().split(b'\\n', 2)\n"
    "r = httpx.post(url.decode(), content=body, timeout=10.0, headers={\n"
    "    'authorization': 'Bearer ' + token.decode(), 'content-type': 'application/json'})\n"
    "print(r.status_code)\n"
    "print(r.text)\n"
)


def test_cut_link_requeues_to_other_host_and_stale_result_is_not_accepted(
    netfarm: NetFarm, tmp_path: Path
) -> None:
    """Cut the link of the host running a 3 s task: within the lease timeout the task is
    requeued and another host runs it to success. Heal the link: the late result of the
    first attempt is refused (409 stale_lease) and the accepted one stays as it was.

    What the cut-off worker itself does on return is a race it may win either way: a
    heartbeat answered "stale lease" kills its attempt before it reports (the usual case),
    or its retried report goes first and is refused with 409. Either is checked in its log.
    So that the 409 is shown every time, the test then sends that late result itself, from
    inside the victim's namespace over the healed link, under the first attempt's real lease
    (which the task told on stderr, from its job token), with blobs the coordinator holds.
    """
    client = netfarm.client
    assert client is not None
    script = SLOW_TASK.format(coord=netfarm.addr(1))
    job = client.submit_job(
        [TaskSpec(argv=[PYTHON, "-c", script], requires=NETWORK, name="slow")], name="cut"
    )
    (task_id,) = [t.id for t in client.tasks(job.id)]

    # wait until the process is really running on some host (its first lines are live output)
    first = wait_task(client, task_id, lambda t: t.status == "running", 15.0)
    victim = netfarm.host_of(first.worker_id)
    others = {h.id for h in netfarm.hosts if h is not victim}

    def started() -> bytes | None:
        out, _ = client.log(task_id)
        err, _ = client.log(task_id, "stderr")
        ok = out.startswith(f"started-on={victim.addr}".encode()) and err.endswith(b"\n")
        return err if ok else None

    err = wait_for(started, 10.0, 0.05, "the task's first output lines")
    lease1 = err.decode().removeprefix("lease=").strip()
    assert lease1 and "=" not in lease1, err

    victim.link("down")
    cut = time.monotonic()
    # the coordinator hears nothing more from the victim: lease expiry requeues the task,
    # and another host (long-polling for work) takes it as attempt 2
    wait_task(client, task_id, lambda t: t.attempts == 2, LEASE_TIMEOUT + 3)
    requeued_after = time.monotonic() - cut
    assert requeued_after <= LEASE_TIMEOUT + 1.5, requeued_after
    moved = wait_task(
        client, task_id, lambda t: t.attempts == 2 and t.status == "running", LEASE_TIMEOUT
    )
    rerun_after = time.monotonic() - cut
    assert rerun_after <= LEASE_TIMEOUT + 2.5, rerun_after
    assert moved.worker_id in others, "the requeued task went back to the cut-off host"
    survivor = netfarm.host_of(moved.worker_id)
    wait_for(lambda: netfarm.worker_status(victim) == "lost", LEASE_TIMEOUT + 2, 0.1, "victim lost")

    final = wait_task(client, task_id, lambda t: t.status in FINAL_STATUSES, 20.0)
    assert final.status == "succeeded", final
    assert final.worker_id == survivor.id
    assert final.attempts == 2
    assert final.exit_code == 0
    result = blob(client, final.manifest["result.txt"].sha256, tmp_path / "r1")
    assert result == f"attempt=2 on={survivor.addr}".encode()
    out, _ = client.log(task_id)
    assert out == f"started-on={survivor.addr}\nran-on={survivor.addr}\n".encode(), out
    accepted = (
        final.status,
        final.worker_id,
        final.attempts,
        final.exit_code,
        final.error,
        final.stdout,
        final.stderr,
        final.manifest,
        final.finished,
    )

    def unchanged() -> None:
        t = client.task(task_id)
        now = (t.status, t.worker_id, t.attempts, t.exit_code, t.error)
        now += (t.stdout, t.stderr, t.manifest, t.finished)
        assert now == accepted, f"the accepted result changed: {now} != {accepted}"

    # the victim's own attempt finished long ago, behind the cut; heal the link
    victim.link("up")
    healed = time.monotonic()
    wait_for(lambda: netfarm.worker_status(victim) == "online", 10.0, 0.1, "victim back online")
    online_after = time.monotonic() - healed

    # the victim is done with its stale attempt once it has removed that attempt's directory
    # (after reporting it, or learning from a heartbeat that the lease is no longer its own)
    stale_dir = victim.work_dir / "tasks" / f"{task_id}.1"
    wait_for(lambda: not stale_dir.exists(), 40.0, 0.1, "the victim to drop its stale attempt")
    unchanged()
    victim_log = victim.log_text()
    refused = [x for x in victim_log.splitlines() if f"result for {task_id} refused" in x]
    cancelled = f"task {task_id} cancelled by the coordinator" in victim_log
    assert refused or cancelled, "the victim neither reported nor was told its lease was stale"
    for line in refused:
        assert "stale_lease" in line, line
    # told once that the lease is no longer its own, the victim stops presenting it (it used
    # to re-send it in a tight loop, hundreds of heartbeats a second, until its upload ended)
    cancels = victim_log.count(f"task {task_id} cancelled by the coordinator")
    assert cancels <= 2, f"{cancels} heartbeats were answered with the same stale lease"

    # the late result, as the victim would send it, over the victim's healed link
    late = tmp_path / "late" / "result.txt"
    late.parent.mkdir()
    late.write_bytes(f"attempt=1 on={victim.addr}".encode())
    ref = client.upload([late])["result.txt"]
    body = TaskResult(
        lease1, 0, ref.sha256, ref.sha256, {"result.txt": OutputFile(ref.sha256, ref.size, 0o644)}
    )
    url = f"{netfarm.url}/api/v1/tasks/{task_id}/result"
    stdin = f"{url}\n{netfarm.token}\n".encode() + msgspec.json.encode(body)
    status, _, text = victim.python(POST_RESULT, stdin).partition("\n")
    assert status == "409", (status, text)
    assert "stale_lease" in text, text
    unchanged()
    got = blob(client, final.manifest["result.txt"].sha256, tmp_path / "r2")
    assert got == f"attempt=2 on={survivor.addr}".encode()
    way = "reported and was refused" if refused else "was cancelled before reporting"
    print(
        f"requeued {requeued_after:.2f} s and re-run {rerun_after:.2f} s after the cut; "
        f"victim online {online_after:.2f} s after the heal and {way}; late post: {status}"
    )


def test_healed_host_output_does_not_leak_into_the_new_attempt(netfarm: NetFarm) -> None:
    """The victim returns while attempt 2 runs elsewhere: its stale output must not show."""
    client = netfarm.client
    assert client is not None
    script = SLOW_TASK.format(coord=netfarm.addr(1))
    job = client.submit_job(
        [TaskSpec(argv=[PYTHON, "-c", script], requires=NETWORK, name="slow")], name="heal"
    )
    (task_id,) = [t.id for t in client.tasks(job.id)]
    first = wait_task(client, task_id, lambda t: t.status == "running", 15.0)
    victim = netfarm.host_of(first.worker_id)
    wait_for(lambda: client.log(task_id)[0].startswith(b"started-on="), 10.0, 0.05, "output")

    victim.link("down")
    moved = wait_task(
        client, task_id, lambda t: t.attempts == 2 and t.status == "running", LEASE_TIMEOUT + 5
    )
    survivor = netfarm.host_of(moved.worker_id)
    assert survivor is not victim
    mine = f"started-on={survivor.addr}\n".encode()
    wait_for(lambda: client.log(task_id)[0] == mine, 5.0, 0.02, "attempt 2's first line")
    victim.link("up")  # the victim's attempt 1 has ended, its last line not yet delivered
    expected = mine + f"ran-on={survivor.addr}\n".encode()
    seen = set()
    while (task := client.task(task_id)).status not in FINAL_STATUSES:
        out, _ = client.log(task_id)
        seen.add(out)
        assert expected.startswith(out), f"live output of attempt 2 is not its own: {out!r}"
        time.sleep(0.02)
    assert task.status == "succeeded" and task.worker_id == survivor.id and task.attempts == 2
    assert client.log(task_id)[0] == expected
    assert expected in seen or mine in seen
    wait_for(lambda: netfarm.worker_status(victim) == "online", 10.0, 0.1, "victim back online")


def test_requeued_task_waits_for_a_busy_host_rather_than_the_lost_one(
    make_netfarm: Callable[..., NetFarm],
) -> None:
    """When the cut host's lease expires, the other host is busy: the task must wait for it.

    The cut-off worker left a lease poll open on the coordinator (a worker keeps one open
    while its slot is busy); that poll must not be handed the task its own expiry requeued,
    since nobody is there to receive it (that cost another lease timeout and attempt 3).
    Two hosts only: a third, idle one would simply take the task.
    """
    netfarm = make_netfarm(hosts=2)
    client = netfarm.client
    assert client is not None
    slow = SLOW_TASK.format(coord=netfarm.addr(1))
    busy = "import time; time.sleep(8); print('busy done')"
    specs = [
        TaskSpec(argv=[PYTHON, "-c", slow], requires=NETWORK, name="slow"),
        TaskSpec(argv=[PYTHON, "-c", busy], name="busy"),
    ]
    job = client.submit_job(specs, name="busy")
    slow_id, busy_id = (t.id for t in client.tasks(job.id))

    def both_running() -> list[Task] | None:
        tasks = client.tasks(job.id)
        return tasks if all(t.status == "running" for t in tasks) else None

    first = {t.id: t for t in wait_for(both_running, 15.0, 0.05, "both tasks to start")}
    victim = netfarm.host_of(first[slow_id].worker_id)
    survivor = netfarm.host_of(first[busy_id].worker_id)
    assert victim is not survivor
    wait_for(lambda: client.log(slow_id)[0].startswith(b"started-on="), 10.0, 0.05, "output")

    victim.link("down")
    seen: list[tuple[str, int, str | None]] = []
    while (task := client.task(slow_id)).status not in FINAL_STATUSES:
        if not seen or seen[-1] != (task.status, task.attempts, task.worker_id):
            seen.append((task.status, task.attempts, task.worker_id))
        assert not (task.attempts >= 2 and task.worker_id == victim.id), (
            f"the lost host was handed its requeued task again: {seen}"
        )
        time.sleep(0.05)
    assert ("queued", 1, None) in seen, f"never requeued while the survivor was busy: {seen}"
    assert client.task(busy_id).status == "succeeded"
    assert task.status == "succeeded" and task.worker_id == survivor.id and task.attempts == 2


def test_tasks_land_only_on_hosts_that_meet_their_requirements(netfarm: NetFarm) -> None:
    """A label only host-3 has, a program only host-2 has on its PATH (looked for on demand),
    and memory: min_memory=1M every host meets, min_memory=100T none does (the hosts report
    this machine's real free memory), so that task stays queued and says why."""
    client = netfarm.client
    assert client is not None
    host1, host2, host3 = netfarm.hosts
    assert host3.labels == {"site": "c"} and host2.path_dir is not None
    script = SOURCE_IP.format(coord=netfarm.addr(1)) + "print('ran-on=' + src, flush=True)\n"
    wants = {
        "label": {"label.site": "c"},
        "program": {"programs": PROGRAM},
        "memory": {"min_memory": "1M"},
    }
    specs = [
        TaskSpec(argv=[PYTHON, "-c", script], requires={**NETWORK, **req}, name=f"{kind}{i}")
        for kind, req in wants.items()
        for i in range(3)
    ]
    huge = {**NETWORK, "min_memory": "100T"}
    specs.append(TaskSpec(argv=[PYTHON, "-c", script], requires=huge, name="huge"))
    job = client.submit_job(specs, name="requires")

    def runnable_done() -> list[Task] | None:
        tasks = client.tasks(job.id)
        rest = [t for t in tasks if t.name != "huge"]
        return tasks if all(t.status in FINAL_STATUSES for t in rest) else None

    tasks = {t.name: t for t in wait_for(runnable_done, 45.0, 0.1, "the satisfiable tasks")}
    names = {h.id: h.name for h in netfarm.hosts}
    placed = {n: (t.status, names.get(t.worker_id or "")) for n, t in tasks.items() if n != "huge"}
    for i in range(3):
        label, program, memory = tasks[f"label{i}"], tasks[f"program{i}"], tasks[f"memory{i}"]
        assert label.status == program.status == memory.status == "succeeded", placed
        assert label.worker_id == host3.id, f"label site=c ran elsewhere: {placed}"
        assert program.worker_id == host2.id, f"program {PROGRAM} ran elsewhere: {placed}"
        assert memory.worker_id in {h.id for h in netfarm.hosts}
        for task in (label, program, memory):
            out, _ = client.log(task.id)
            assert out == f"ran-on={netfarm.host_of(task.worker_id).addr}\n".encode(), out

    # host-2 looked for the program when tasks asked for it, and found it; no other host has
    # it (they report it missing once they have looked, which is usually before it ran out)
    caps = {w.id: w.capabilities for w in client.workers()}
    assert caps[host2.id].get("programs", {}).get(PROGRAM, "").startswith(str(host2.path_dir))
    for host in (host1, host3):
        assert PROGRAM not in caps[host.id].get("programs", {}), caps[host.id]

    # no host has 100 TB free: the task stays queued, and says why
    time.sleep(1.0)  # a couple of heartbeats (free memory is refreshed with them)
    stuck = client.task(tasks["huge"].id)
    assert stuck.status == "queued" and stuck.worker_id is None and stuck.attempts == 0, stuck
    assert stuck.pending_reason is not None and "min_memory" in stuck.pending_reason, stuck
    assert "3 workers checked" in stuck.pending_reason, stuck.pending_reason
    print(f"placed: {placed}; huge: {stuck.pending_reason}")


def test_worker_that_joins_mid_job_gets_work(make_netfarm: Callable[..., NetFarm]) -> None:
    """Sixteen 1 s tasks on two hosts; host-3's worker starts once the job runs and takes
    some of the rest."""
    netfarm = make_netfarm(workers=2)
    client = netfarm.client
    assert client is not None
    early = netfarm.hosts[:2]
    late = netfarm.hosts[2]
    assert late.proc is None and not any(w.name == late.name for w in client.workers())
    nap = "import time; time.sleep(1.0)"
    specs = [TaskSpec(argv=[PYTHON, "-c", nap], name=f"n{i}") for i in range(16)]
    job = client.submit_job(specs, name="join")

    def first_done() -> bool:
        return any(t.status == "succeeded" for t in client.tasks(job.id))

    wait_for(first_done, 15.0, 0.05, "the job's first task to finish")
    assert client.job(job.id).status == "running"
    netfarm.start_worker(late)
    queued = sum(t.status == "queued" for t in client.tasks(job.id))
    assert queued >= 3, f"only {queued} tasks were left when host-3 joined: too late to tell"

    def done() -> bool:
        return client.job(job.id).status in FINAL_STATUSES

    wait_for(done, 40.0, 0.1, f"job {job.id} to finish")
    tasks = client.tasks(job.id)
    assert [t.status for t in tasks] == ["succeeded"] * 16, [(t.status, t.error) for t in tasks]
    counts = {h.name: sum(t.worker_id == h.id for t in tasks) for h in netfarm.hosts}
    assert counts[late.name] >= 1, f"the worker that joined got no work: {counts}"
    assert all(counts[h.name] >= 1 for h in early), counts
    assert sum(counts.values()) == 16, counts
    print(f"tasks per host: {counts} ({queued} queued when {late.name} joined)")

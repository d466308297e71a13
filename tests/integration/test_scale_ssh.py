"""The `ssh` provider against a real OpenSSH server on a network-namespace host.

Layout (the /24 and names random per test)::

    root ns: the test, the coordinator on .254  --veth--  providers-XXXX-h: eth0 .11, sshd

The test's own `sshd` (Debian's openssh-server) runs inside the namespace with its own config,
host key and a client key made for the test (key-only login, no password, no PAM). The
coordinator listens on the root end of the link, so the worker the provider starts over SSH
reaches it across the (virtual) wire, as a worker on another machine would.

Needs root, iproute2 and sshd; skipped otherwise, unless CI is set (then it fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.coordinator.providers import ProviderError, Start, parse_scale
from corral.coordinator.providers.ssh import Remote, SshProvider
from corral.protocol import LaunchInfo, TaskSpec

from .conftest import PYTHON, Farm, free_port, is_gone, stop_process, wait_for
from .test_netns import IN_CI, IP, IS_ROOT, free_subnet, ip

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
KEYGEN = shutil.which("ssh-keygen")

pytestmark = [
    pytest.mark.skipif(not IS_ROOT, reason="network namespaces need root"),
    pytest.mark.skipif(IP is None and not IN_CI, reason="iproute2 `ip` is not installed"),
]


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what}; CI must install openssh-server")
    pytest.skip(what)


@dataclass
class SshHost:
    """A namespace host running the test's sshd; `peer` is the root namespace's end."""

    ns: str
    addr: str
    peer: str
    port: int
    user: str
    key: Path
    known_hosts: Path
    log: Path

    def scale_options(self) -> str:
        """The `ssh:` options that reach this host with the test's key, host key pinned."""
        return (
            f"hosts={self.addr}:{self.port},user={self.user},key={self.key},"
            f"known_hosts={self.known_hosts}"
        )

    def run(self, *argv: str) -> str:
        """Run a command inside the host's namespace (not over SSH); its stdout."""
        done = subprocess.run(
            [str(IP), "netns", "exec", self.ns, *argv], capture_output=True, text=True, timeout=15
        )
        return done.stdout


def _keygen(path: Path) -> str:
    assert KEYGEN is not None
    subprocess.run(
        [KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "corral-test", "-f", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path.with_suffix(".pub").read_text().strip()


SSHD_CONFIG = """\
Port {port}
ListenAddress {addr}
HostKey {dir}/host_ed25519
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
UsePAM no
StrictModes no
LogLevel VERBOSE
"""


@contextlib.contextmanager
def namespace_host(tag: str) -> Iterator[tuple[str, str, str]]:
    """One namespace host linked to the root namespace by a veth pair; (namespace, its
    address, the root end's address), all removed on exit."""
    prefix = f"providers-{secrets.token_hex(2)}"
    ns, veth = f"{prefix}-{tag}", f"provr-{prefix[-4:]}"
    try:
        subnet = free_subnet()
        ip("netns", "add", ns)
    except RuntimeError as exc:
        if IN_CI:
            raise
        pytest.skip(f"cannot build network namespaces here: {exc}")
    addr, peer = f"10.231.{subnet}.11", f"10.231.{subnet}.254"
    try:
        ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("addr", "add", f"{peer}/24", "dev", veth)
        ip("link", "set", veth, "up")
        yield ns, addr, peer
    finally:
        ip("netns", "del", ns, check=False)
        if ip("link", "show", veth, check=False).returncode == 0:
            ip("link", "del", veth, check=False)


def _listening(addr: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((addr, port), timeout=0.5):
        return True
    return False


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[SshHost]:
    """A namespace host with a running sshd that lets this test's key in as root."""
    if not os.access(SSHD, os.X_OK) or KEYGEN is None:
        _missing("sshd or ssh-keygen is not installed (Debian: openssh-server)")
    conf = tmp_path / "sshd"
    conf.mkdir()
    host_pub = _keygen(conf / "host_ed25519")
    client_pub = _keygen(tmp_path / "client_key")
    (conf / "authorized_keys").write_text(client_pub + "\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    with namespace_host("h") as (ns, addr, peer):
        port = free_port()
        config = conf / "sshd_config"
        config.write_text(SSHD_CONFIG.format(port=port, addr=addr, dir=conf, user="root"))
        known = tmp_path / "known_hosts"
        known.write_text(f"[{addr}]:{port} {host_pub}\n")
        log = tmp_path / "sshd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(IP), "netns", "exec", ns, SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            def up() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"sshd exited early:\n{log.read_text()}")
                return _listening(addr, port)

            wait_for(up, 15.0, 0.1, "sshd in the namespace host")
            yield SshHost(ns, addr, peer, port, "root", tmp_path / "client_key", known, log)
        finally:
            stop_process(proc)  # sessions' own sshd processes end with their connections


@pytest.mark.timeout(30)
def test_the_namespace_sshd_lets_in_the_key_and_reaches_the_coordinator(
    ssh_host: SshHost, farm: Callable[..., Farm]
) -> None:
    """The fixture itself: key login works, the host key is pinned, and from inside the host
    the coordinator answers on the root end of the link."""
    f = farm(host=ssh_host.peer)
    code = f"import httpx; print(httpx.get({f.url + '/healthz'!r}).status_code)"
    assert ssh_host.run(PYTHON, "-c", code).strip() == "200"


@pytest.mark.timeout(60)
def test_the_provider_starts_a_worker_on_the_host_and_stops_it(
    ssh_host: SshHost, farm: Callable[..., Farm], tmp_path: Path
) -> None:
    """In-process: a host whose key is not the pinned one is refused; launch runs `corral
    worker` in the namespace host (pid recorded), the worker joins across the link, `exited`
    sees it running; after a drain, stop leaves no process and removes its work directory."""
    f = farm(host=ssh_host.peer)
    work = tmp_path / "remote"
    spec = parse_scale(
        f"ssh:{ssh_host.scale_options()},python={PYTHON},dir={work}", {"ssh": SshProvider.OPTIONS}
    )
    provider = SshProvider(spec, tmp_path / "state")
    start = Start("launch-ssh-1", f.url, f.token, None, 2, {"site": "ns"})

    async def launch() -> str:
        return await provider.launch(start)

    # a host whose key is not the pinned one gets nothing, with one line saying why
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[{ssh_host.addr}]:{ssh_host.port} {_keygen(tmp_path / 'other')}\n")
    impostor = SshProvider(
        parse_scale(
            f"ssh:hosts={ssh_host.addr}:{ssh_host.port},user=root,key={ssh_host.key},"
            f"known_hosts={wrong},python={PYTHON},dir={work}",
            {"ssh": SshProvider.OPTIONS},
        ),
        tmp_path / "state",
    )
    with pytest.raises(ProviderError, match=f"ssh {ssh_host.addr}:{ssh_host.port}: .*not trusted"):
        asyncio.run(impostor.launch(start))
    assert not work.exists()

    handle = asyncio.run(launch())
    remote = Remote.parse(handle)
    assert remote.host == ssh_host.addr and remote.launch_id == "launch-ssh-1"
    assert ssh_host.run(str(IP), "netns", "identify", str(remote.pid)).strip() == ssh_host.ns
    with f.client() as client:
        worker = wait_for(
            lambda: next((w for w in client.workers() if w.name == "launch-ssh-1"), None),
            20.0,
            0.1,
            "the launched worker to join",
        )
        assert worker.slots == 2 and worker.capabilities["labels"] == {"site": "ns"}
        assert asyncio.run(provider.exited(handle)) is None
        client.drain_worker(worker.id)
    asyncio.run(provider.stop(handle))
    assert is_gone(remote.pid)
    assert not (work / "launch-ssh-1").exists()
    assert (work / "launch-ssh-1.log").exists()  # the log stays
    assert "exited" in str(asyncio.run(provider.exited(handle)))


@pytest.mark.timeout(90)
def test_a_job_makes_the_coordinator_start_a_worker_over_ssh_and_drain_it_when_idle(
    ssh_host: SshHost, farm: Callable[..., Farm], tmp_path: Path
) -> None:
    """`corral server --scale ssh:...`: a job starts one worker on the namespace host (its
    process in that namespace), the worker runs every task, and once idle past idle_timeout
    it is drained and its process is gone; the launch ends `stopped`."""
    work = tmp_path / "remote"
    scale = f"ssh:{ssh_host.scale_options()},python={PYTHON},dir={work}"
    scale += ",max=1,slots=2,idle_timeout=3,join_timeout=60,startup=5"
    f = farm(host=ssh_host.peer, server_args=("--scale", scale))
    rc, _, err = f.cli("allow", "add", "true")  # a worker joining over the network checks
    assert rc == 0, err
    with f.client() as client:
        job = client.submit_job([TaskSpec(argv=["true"]) for _ in range(6)], name="ssh")

        def joined() -> LaunchInfo | None:
            launches = client.scale().launches
            return next((x for x in launches if x.state == "joined"), None)

        launch = wait_for(joined, 30.0, 0.2, "a launch on the ssh host to join")
        assert launch.provider == "ssh" and launch.handle is not None
        remote = Remote.parse(launch.handle)
        assert ssh_host.run(str(IP), "netns", "identify", str(remote.pid)).strip() == ssh_host.ns
        assert f.wait_job(client, job.id, 30.0).status == "succeeded", client.tasks(job.id)[0].error
        tasks = client.tasks(job.id)
        assert {t.worker_id for t in tasks} == {launch.worker_id}

        def stopped() -> LaunchInfo | None:
            now = next(x for x in client.scale().launches if x.id == launch.id)
            return now if now.state == "stopped" else None

        wait_for(stopped, 30.0, 0.2, "the idle worker to be drained and stopped")
        assert [x.id for x in client.scale().launches] == [launch.id]  # launched once
        assert next(w for w in client.workers() if w.id == launch.worker_id).status != "online"
    # the provider's stop runs behind the launch's end: the process goes, then its directory
    wait_for(lambda: is_gone(remote.pid), 20.0, 0.1, "the remote worker's process to end")
    wait_for(lambda: not (work / launch.id).exists(), 20.0, 0.1, "its work dir to go")

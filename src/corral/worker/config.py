"""How a worker is started, and what follows from it for every task (pure data)."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from .._failover import primary_url
from .._net import is_loopback_url
from ..protocol import Assignment, ChannelMode
from .eviction import DEFAULT_GRACE
from .idle import IdlePolicy

__all__ = ["WorkerConfig", "WorkerRefused", "client_env", "sandbox_refusal", "tls_verify"]


class WorkerRefused(Exception):
    """The worker will not start as configured; the message says what to do instead."""


@dataclass
class WorkerConfig:
    """How a worker is started."""

    server: str
    token: str | None = None
    slots: int = 1
    work_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "corral" / "worker")
    name: str = field(default_factory=socket.gethostname)
    labels: dict[str, str] = field(default_factory=dict)
    programs: list[str] = field(default_factory=list)
    cache_size: int | None = None
    expose_env: dict[str, str] = field(default_factory=dict)  # passed to every task, reported
    lease_wait: float = 20.0
    keep_task_dirs: bool = False
    ca_file: Path | None = None  # the only trust root for an https server (pinned by --join)
    allow: set[str] = field(default_factory=set)  # own allowlist (sha256 hex)
    allow_inline: set[str] = field(default_factory=set)  # of those, interpreters for any code
    allow_all: bool = False
    enforce_allowlist: bool = False
    allow_network: bool = False
    sandbox: bool = True
    hide: tuple[Path, ...] = ()
    when_idle: IdlePolicy | None = None  # desktop mode: lend only idle cycles
    expose: tuple[Path, ...] = ()  # read-only in every task's sandbox
    expose_rw: tuple[Path, ...] = ()  # read-write in every task's sandbox
    task_uids: tuple[int, int] | None = None  # a root worker's slot uids (taskuser.py)
    task_user: str | None = None  # or one account for every task of a root worker
    checkpoint_exit_code: int = 85  # a task exiting so is saved and run again (checkpoints.py)
    checkpoint_grace: float = DEFAULT_GRACE  # SIGTERM to SIGKILL of an evicted task (eviction.py)
    channel: ChannelMode = "auto"  # leases, heartbeats and results over a WebSocket (_channel.py)


def client_env(config: WorkerConfig, a: Assignment, relay: str | None = None) -> dict[str, str]:
    """What a task needs to call back as a client of its own job (CORRAL_TOKEN is job-scoped);
    `relay`: the URL of its worker's relay (relay.py), its only way out of a sandbox."""
    env = {"CORRAL_URL": relay or config.server.rstrip("/")}
    if a.token:
        env["CORRAL_TOKEN"] = a.token
    if config.ca_file and relay is None:
        env["CORRAL_CA"] = str(config.ca_file)
    return env


def sandbox_refusal(server: str, wanted: bool, bwrap: str | None, installed: bool) -> str | None:
    """Why a worker may not start, or None: off loopback, tasks from the network must not run
    unsandboxed unless --no-sandbox (`wanted` False) said so on purpose. On loopback the
    guard's warning is enough: the owner submits their own tasks."""
    if not wanted or bwrap is not None or is_loopback_url(server):
        return None
    why = "bubblewrap cannot create namespaces here" if installed else "bwrap is not installed"
    return (
        f"refusing to run tasks from {server} without a sandbox ({why}): install bubblewrap"
        " (and util-linux's prlimit), or pass --no-sandbox to run them unsandboxed on purpose"
    )


def tls_verify(server: str, ca_file: Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies the coordinator with. For an http:// coordinator, a context with
    no CA loaded (TLS to anywhere would fail): loading the system's CA bundle, which httpx
    does for `True`, was 15% of a worker's start."""
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    if primary_url(server).lower().startswith("http://"):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True

"""`ssh`: `corral worker` started over SSH (asyncssh) on listed hosts.

    --scale ssh:hosts=h1,h2:2222,user=me,key=~/.ssh/id_ed25519,known_hosts=PATH|off,python=...

Each launch goes to the host with the fewest of this provider's workers (the first listed on
a tie). One short SSH command starts the worker in the background with `nohup`, its output in
`DIR/<launch>.log` and its work directory `DIR/<launch>/` (`dir=`, relative to the remote
home unless absolute; default `.corral/workers`), and prints its pid: the handle is
`<pid>@<host>/<launch>`, so a stop needs nothing but the handle.

The worker's secret (CORRAL_TOKEN or CORRAL_JOIN) travels on the command's stdin and is read
by the remote shell into the environment: it is on no command line, neither here nor there.

`stop` comes after the autoscaler drained the worker, which then leaves by itself: it waits a
little for that pid to go, then SIGTERMs and SIGKILLs it if it is still there, and removes the
work directory (the log stays). The pid is only signalled while its command line still names
the launch, so a pid reused by another process is left alone. `exited` asks whether the pid
is still that worker, and gives the end of its log when it is not.

Options: `hosts` (required; `host` or `host:port`), `user` (default: the remote default),
`key` (a private key file; default: asyncssh's, the agent), `known_hosts` (a file, or `off`
to skip host key checks; default: ~/.ssh/known_hosts), `python` (the remote interpreter with
corral installed; default `python3`), `dir`, `connect_timeout` (seconds, default 10).

Rejected: a pty and a foreground session per worker (what `ssh host corral worker` would do):
it ties the worker to one TCP connection, so a coordinator restart or a network blip would
kill every remote worker; `nohup` and a pid make the worker outlive the session.
"""

from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .base import ProviderError, ScaleError, Start, WorkerProvider

if TYPE_CHECKING:
    import asyncssh

__all__ = [
    "Remote",
    "SshProvider",
    "exited_script",
    "parse_hosts",
    "pick_host",
    "start_script",
    "stop_script",
]

DEFAULT_DIR = ".corral/workers"
STOP_WAIT = 5  # seconds a drained worker has to leave by itself before SIGTERM
TERM_WAIT = 15  # then seconds before SIGKILL (its own checkpoint grace is 10 s)


@dataclass(frozen=True)
class Remote:
    """Where one launched worker runs: `pid@host:port/launch` as a handle."""

    host: str
    port: int | None
    pid: int
    launch_id: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host

    def handle(self) -> str:
        return f"{self.pid}@{self.address}/{self.launch_id}"

    @classmethod
    def parse(cls, handle: str) -> Remote:
        """The inverse of `handle`; ProviderError when it is not one."""
        pid, _, rest = handle.partition("@")
        address, _, launch_id = rest.partition("/")
        try:
            ((host, port),) = parse_hosts(address)
            return cls(host, port, int(pid), launch_id)
        except (ValueError, ScaleError) as exc:
            raise ProviderError(f"not an ssh launch handle: {handle!r}") from exc


def parse_hosts(text: str) -> list[tuple[str, int | None]]:
    """`h1,h2:2222,[::1]:22` as (host, port or None) pairs; ScaleError on a bad one."""
    hosts: list[tuple[str, int | None]] = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        host, port = item, None
        if item.startswith("["):  # [v6]:port
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
            if rest and port is None:
                raise ScaleError(f"--scale ssh: host {item!r}: write [ADDRESS]:PORT")
        elif item.count(":") == 1:
            host, _, text_port = item.partition(":")
            if not text_port.isdigit() or not 0 < int(text_port) < 65536:
                raise ScaleError(f"--scale ssh: host {item!r}: the port is not a number")
            port = int(text_port)
        if not host:
            raise ScaleError(f"--scale ssh: host {item!r} has no name")
        hosts.append((host, port))
    if not hosts:
        raise ScaleError("--scale ssh: give hosts=HOST[,HOST...]")
    return hosts


def pick_host(hosts: Sequence[str], running: Mapping[str, int]) -> str:
    """The host for the next launch: the fewest workers running there, the first on a tie."""
    return min(hosts, key=lambda h: (running.get(h, 0), hosts.index(h)))


def start_script(start: Start, python: str, directory: str) -> tuple[str, str]:
    """The remote command that starts `start`'s worker in the background and prints its pid,
    and the stdin it needs (its secret, read into the environment)."""
    ((name, secret),) = start.secret_env().items()
    d = shlex.quote(directory)
    work = shlex.quote(f"{directory}/{start.launch_id}")
    log = shlex.quote(f"{directory}/{start.launch_id}.log")
    argv = [python, "-m", "corral", "worker", *start.worker_args()]
    script = (
        f"mkdir -p {d} && IFS= read -r {name} && export {name} || exit 1\n"
        f"nohup {shlex.join(argv)} --work-dir {work} > {log} 2>&1 < /dev/null &\n"
        "echo $!\n"
    )
    return script, secret + "\n"


def _is_ours(remote: Remote) -> str:
    # the pid still runs and is still this launch's worker (not a reused pid)
    return f"ps -p {remote.pid} -o args= 2>/dev/null | grep -q -- {shlex.quote(remote.launch_id)}"


def stop_script(remote: Remote, directory: str) -> str:
    """The remote command that makes sure a worker is gone: a few seconds to leave by itself
    (it was drained), then SIGTERM, then SIGKILL; then its work directory is removed."""
    ours, pid = _is_ours(remote), remote.pid
    work = shlex.quote(f"{directory}/{remote.launch_id}")
    return (
        f"i=0; while {ours} && [ $i -lt {STOP_WAIT * 5} ]; do sleep 0.2; i=$((i+1)); done\n"
        f"if {ours}; then kill -TERM {pid}; fi\n"
        f"i=0; while {ours} && [ $i -lt {TERM_WAIT * 5} ]; do sleep 0.2; i=$((i+1)); done\n"
        f"if {ours}; then kill -KILL {pid}; fi\n"
        f"rm -rf {work}\n"
    )


def exited_script(remote: Remote, directory: str) -> str:
    """The remote command that prints `running`, or the last lines of a gone worker's log."""
    log = shlex.quote(f"{directory}/{remote.launch_id}.log")
    return f"if {_is_ours(remote)}; then echo running; else tail -n 3 {log} 2>/dev/null; fi\n"


def _import_asyncssh() -> Any:
    try:
        with warnings.catch_warnings():
            # asyncssh's import warns that DSA is deprecated; Corral never offers DSA keys
            warnings.simplefilter("ignore")
            import asyncssh
    except ImportError as exc:
        raise ScaleError(
            "--scale ssh needs asyncssh: pip install 'corral[ssh]' (or asyncssh)"
        ) from exc
    return asyncssh


class SshProvider(WorkerProvider):
    """Workers on listed hosts, started over SSH."""

    kind = "ssh"
    OPTIONS: ClassVar[frozenset[str]] = frozenset(
        {"hosts", "user", "key", "known_hosts", "python", "dir", "connect_timeout"}
    )

    def check(self) -> None:
        """hosts parse; connect_timeout is seconds; asyncssh is installed."""
        self.asyncssh = _import_asyncssh()
        self.hosts = parse_hosts(self.require("hosts"))
        self.python = self.extra.get("python", "python3")
        self.directory = self.extra.get("dir", DEFAULT_DIR)
        try:
            self.connect_timeout = float(self.extra.get("connect_timeout", "10"))
        except ValueError as exc:
            raise ScaleError("--scale ssh: connect_timeout= takes seconds, like 10") from exc
        self.placed: dict[str, str] = {}  # launch id -> the host (address) it runs on

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"connect_timeout": self.connect_timeout}
        if "user" in self.extra:
            options["username"] = self.extra["user"]
        if "key" in self.extra:
            options["client_keys"] = [os.path.expanduser(self.extra["key"])]
        known = self.extra.get("known_hosts")
        if known is not None:
            options["known_hosts"] = None if known == "off" else os.path.expanduser(known)
        return options

    async def _run(self, host: str, port: int | None, script: str, stdin: str = "") -> str:
        """Run `script` on a host; its stdout. ProviderError with one line on any failure."""
        where = f"{host}:{port}" if port else host
        options = self._connect_options() | ({"port": port} if port else {})
        try:
            async with self.asyncssh.connect(host, **options) as conn:
                done: asyncssh.SSHCompletedProcess = await conn.run(
                    script, input=stdin, check=False, timeout=60
                )
        except (OSError, self.asyncssh.Error) as exc:
            raise ProviderError(f"ssh {where}: {exc or type(exc).__name__}") from exc
        if done.exit_status != 0:
            err = str(done.stderr or "").strip().splitlines()
            raise ProviderError(
                f"ssh {where}: exit {done.exit_status}: {err[-1] if err else 'no message'}"
            )
        return str(done.stdout or "")

    async def launch(self, start: Start) -> str:
        """Start the worker on the least busy host; the handle is `pid@host/launch`."""
        addresses = {f"{h}:{p}" if p else h: (h, p) for h, p in self.hosts}
        counts: dict[str, int] = {}
        for address in self.placed.values():
            counts[address] = counts.get(address, 0) + 1
        # placed before the first await, so launches started together spread out
        address = self.placed[start.launch_id] = pick_host(list(addresses), counts)
        host, port = addresses[address]
        script, stdin = start_script(start, self.python, self.directory)
        try:
            out = await self._run(host, port, script, stdin)
            pid = out.strip().splitlines()[-1] if out.strip() else ""
            if not pid.isdigit():
                raise ProviderError(f"ssh {address}: the worker's pid did not come back")
        except ProviderError:
            del self.placed[start.launch_id]
            raise
        return Remote(host, port, int(pid), start.launch_id).handle()

    async def exited(self, handle: str) -> str | None:
        """None while the pid is still this launch's worker; else the end of its log."""
        remote = Remote.parse(handle)
        try:
            out = await self._run(remote.host, remote.port, exited_script(remote, self.directory))
        except ProviderError:
            return None  # the host is out of reach for now: the join timeout still holds
        if out.strip() == "running":
            return None
        tail = " | ".join(line.strip() for line in out.strip().splitlines()[-3:])
        return f"worker {remote.pid} on {remote.address} exited" + (f": {tail}" if tail else "")

    async def stop(self, handle: str) -> None:
        """Make sure the worker is gone (it was drained: a few seconds, then kill)."""
        remote = Remote.parse(handle)
        await self._run(remote.host, remote.port, stop_script(remote, self.directory))
        self.placed.pop(remote.launch_id, None)

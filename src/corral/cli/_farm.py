"""Commands that run parts of the farm: `up`, `server` and `worker`."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click
import uvicorn

from .._loop import run_async
from .._net import is_loopback
from ..client import pem_fingerprint, write_config
from ..coordinator import Settings
from ..coordinator.announce import serve_announced
from ..coordinator.providers import ScaleError, build_providers
from ..coordinator.server import (
    CoordinatorServer,
    make_server,
    open_coordinator_store,
    shared_secrets,
)
from ..coordinator.store import SchemaTooNew, Store
from ..coordinator.tls import share_ca
from ..protocol import CHANNEL_MODES, ChannelMode
from ..worker.agent import run_worker
from ..worker.config import WorkerConfig
from ..worker.eviction import DEFAULT_GRACE
from ._common import Fail, FailedWork, key_values
from ._desktop import (
    announce_options,
    announce_targets,
    desktop_config,
    desktop_worker_options,
    discovered_server,
)
from ._elastic import elastic_config, elastic_options, report_drain
from ._policy import policy_config, policy_options
from ._security import parse_duration
from ._tls import server_tls, tls_server_options, worker_target, worker_tls_options


def default_data_dir() -> Path:
    """Where `corral up` and `corral server` keep state unless told otherwise."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "corral"


def _check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise FailedWork(
                f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port"
            ) from exc


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_LEASE_TIMEOUT = click.option(
    "--lease-timeout",
    type=click.FloatRange(0.5),
    default=10.0,
    show_default=True,
    help="Seconds of silence before a worker is lost and its tasks requeued.",
)


def _heartbeat(lease_timeout: float) -> float:
    """The heartbeat interval the coordinator asks of workers, for its lease timeout."""
    return min(2.0, lease_timeout / 4)


_STORE = click.option(
    "--store",
    envvar="CORRAL_STORE",
    default="",
    metavar="URL",
    help="postgresql://USER@HOST/DB: a database other coordinators may share"
    " [default: SQLite in the data directory].",
)

# `corral worker`'s, and `corral up`'s for its workers (worker/eviction.py)
_CHECKPOINT_GRACE = click.option(
    "--checkpoint-grace",
    type=click.FloatRange(0.0, 3600.0),
    default=DEFAULT_GRACE,
    show_default=True,
    metavar="S",
    help="An evicted task (SIGTERM or a second Ctrl-C to the worker, drain --evict, kill"
    " --checkpoint, the desktop's owner back) gets SIGTERM and this many seconds to exit;"
    " then it is killed, its checkpoint saved, and it is given back.",
)


_SCALE = click.option(
    "--scale",
    "scale",
    multiple=True,
    envvar="CORRAL_SCALE",
    metavar="KIND:OPTIONS",
    help="Start and stop workers as the queue asks (repeatable), e.g."
    " local:max=4,idle_timeout=2m; kinds: local, command, ssh, slurm, libcloud."
    " See the README's Autoscaling.",
)


def _scale(values: Sequence[str], data: Path) -> tuple[str, ...]:
    """The --scale values, each checked (one line and exit 2 when one is wrong)."""
    try:
        build_providers(values, data)
    except ScaleError as exc:
        raise Fail(str(exc)) from exc
    return tuple(values)


def _self_url(scheme: str, host: str, port: int) -> str:
    """The URL workers on this machine reach a coordinator listening on `host` at."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"{scheme}://{_url_host(host)}:{port}"


def _open_store(data: Path, spec: str) -> tuple[Store, str, bytes]:
    """The store, the admin token and the job-token key; one line and exit 1 if it fails."""
    try:
        store = open_coordinator_store(Settings(data_dir=data, store=spec))
        token, key = shared_secrets(store, data)
    except SchemaTooNew as exc:
        raise FailedWork(str(exc)) from exc
    except Exception as exc:  # the driver's own errors (psycopg's, sqlite3's)
        raise FailedWork(f"cannot open the store {spec or data}: {exc}".splitlines()[0]) from exc
    return store, token, key


class _QuietServer(CoordinatorServer):
    """uvicorn without its own signal handlers: `corral up` stops workers first."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Child:
    """A forked worker process: the part of Popen that `corral up` uses."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(0.02)
        return code

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Workers:
    """`corral up`'s local workers, forked before the coordinator starts.

    A forked worker has every module imported already: a fresh interpreter spent most of a
    second importing before it could register, the largest part of `corral up`'s time to a
    first result. Each waits on a pipe until the coordinator listens (or, if the pipe closes
    unwritten, exits: the coordinator never started). Nothing before the fork has started a
    thread or an event loop, so the children start clean.
    """

    def __init__(
        self,
        n: int,
        url: str,
        token: str,
        data: Path,
        options: Sequence[str],
        grace: float,
    ) -> None:
        self.procs: list[_Child] = []
        self._ready: int | None = None
        self.grace = grace  # the workers' --checkpoint-grace
        if not n:
            return
        host = socket.gethostname()
        # --sandbox-hide: the admin token and every job's files
        argv = ["--server", url, *options, "--sandbox-hide", str(data)]
        argv += ["--checkpoint-grace", str(grace)]
        # httpx (workers) and Starlette (coordinator) import anyio's asyncio backend at their
        # first request, 60 ms here: once now serves the coordinator and every child
        with contextlib.suppress(ImportError):
            importlib.import_module("anyio._backends._asyncio")
        readable, self._ready = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        for i in range(n):
            args = [*argv, "--work-dir", str(data / "workers" / f"w{i}"), "--name", f"{host}-w{i}"]
            pid = os.fork()
            if pid == 0:
                os.close(self._ready)
                _worker_child(readable, args, token)
            self.procs.append(_Child(pid))
        os.close(readable)

    def release(self) -> None:
        """The coordinator listens: let the workers register."""
        if self._ready is not None:
            os.write(self._ready, b"x" * len(self.procs))
            self._close()

    def _close(self) -> None:
        if self._ready is not None:
            os.close(self._ready)
            self._ready = None

    def stop(self) -> None:
        """SIGTERM (running tasks are evicted: checkpoint saved, requeued), then SIGKILL
        after their grace period and 5 s for the saves: what still runs is requeued next
        time, from its last checkpoint."""
        self._close()
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        grace = self.grace + 5.0
        for p in self.procs:
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(grace)


def _worker_child(ready: int, args: list[str], token: str) -> NoReturn:
    """In a forked child: wait for the coordinator, run `corral worker args`, never return."""
    code = 1
    try:
        os.environ["CORRAL_TOKEN"] = token
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        if os.read(ready, 1):  # (end of file instead: the coordinator never started)
            os.close(ready)
            worker.main(args, prog_name="corral worker", standalone_mode=False)
            code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except KeyboardInterrupt:  # Ctrl-C while the coordinator was still starting
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


async def _run_up(server: uvicorn.Server, workers: _Workers, url: str) -> None:
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            raise FailedWork("the coordinator failed to start")
        await asyncio.sleep(0.005)
    workers.release()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    n = len(workers.procs)
    click.echo(f"corral is up at {url} with {n} worker(s); Ctrl-C stops it", err=True)
    await stop.wait()
    click.echo("stopping workers and coordinator", err=True)
    # workers evict their tasks (checkpoints saved, requeued), then what remains is killed
    await asyncio.to_thread(workers.stop)
    server.should_exit = True
    await serving


@click.command()
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(0),
    default=None,
    help="Local workers to start [default: one per core].",
)
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8470, show_default=True)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory [default: $XDG_DATA_HOME/corral].",
)
@click.option(
    "--slots", type=click.IntRange(1), default=1, show_default=True, help="Slots per worker."
)
@click.option("--allow-network", is_flag=True, help="Workers give tasks that ask the network.")
@click.option("--no-sandbox", is_flag=True, help="Workers run tasks without bubblewrap.")
@_LEASE_TIMEOUT
@_STORE
@_CHECKPOINT_GRACE
@_SCALE
def up(
    workers: int | None,
    port: int,
    data: Path | None,
    slots: int,
    allow_network: bool,
    no_sandbox: bool,
    lease_timeout: float,
    store: str,
    checkpoint_grace: float,
    scale: tuple[str, ...],
) -> None:
    """Start a coordinator and local workers in one command, and point the CLI at them.

    With --scale (say local:max=8,idle_timeout=2m and --workers 0) the farm also grows and
    shrinks with the queue, beyond the --workers started at once."""
    host = "127.0.0.1"
    data = (data or default_data_dir()).resolve()
    scale = _scale(scale, data)
    port = port or _free_port(host)
    _check_port(host, port)
    opened, token, key = _open_store(data, store)
    opened.close()  # opened again after the fork: nothing may start a thread before it
    url = f"http://{host}:{port}"
    path = write_config(url, token)
    click.echo(f"client config written to {path}", err=True)
    settings = Settings(
        data_dir=data,
        store=store,
        tokens={token: "admin"},
        job_key=key,
        lease_timeout=lease_timeout,
        heartbeat_interval=_heartbeat(lease_timeout),
        scale=scale,
        url=url,
    )
    options = ["--slots", str(slots)]
    options += ["--allow-network"] * allow_network + ["--no-sandbox"] * no_sandbox
    count = workers if workers is not None else max((os.cpu_count() or 1) // slots, 1)
    # forked first, so they are ready the moment the coordinator is (see _Workers)
    procs = _Workers(count, url, token, data, options, checkpoint_grace)
    try:
        run_async(_run_up(make_server(settings, host, port, _QuietServer), procs, url))
    finally:
        procs.stop()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", "-p", type=click.IntRange(1, 65535), default=8470, show_default=True)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory [default: $XDG_DATA_HOME/corral].",
)
@click.option(
    "--token",
    "tokens",
    multiple=True,
    envvar="CORRAL_TOKEN",
    help="Accept this admin token too; it is stored (hashed) until `corral token revoke`.",
)
@_LEASE_TIMEOUT
@click.option(
    "--speculative-min-seconds",
    type=click.FloatRange(0.0),
    default=Settings.speculative_min_seconds,
    hidden=True,  # for tests: how long a speculative job's task runs before a backup
)
@_STORE
@click.option(
    "--blobs",
    type=click.Path(file_okay=False),
    default="",
    help="Keep blobs in this directory [default: in the database with --store postgresql://,"
    " else in the data directory].",
)
@click.option(
    "--group-commit",
    type=click.Choice(["auto", "on", "off"]),
    envvar="CORRAL_GROUP_COMMIT",
    default=Settings.group_commit,
    show_default=True,
    help="Writes of requests that arrive together share one transaction (auto: only on a"
    " shared --store database).",
)
@click.option(
    "--metrics-public",
    is_flag=True,
    help="Serve GET /metrics without a token (only on a trusted network).",
)
@click.option(
    "--fair-share-half-life",
    "half_life",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Fair share: an owner's usage this long ago counts half (90s, 15m, 1h, 7d).",
)
@_SCALE
@tls_server_options
@announce_options
def server(
    host: str,
    port: int,
    data: Path | None,
    tokens: tuple[str, ...],
    lease_timeout: float,
    speculative_min_seconds: float,
    announce_port: int,
    store: str,
    blobs: str,
    group_commit: str,
    metrics_public: bool,
    half_life: str,
    scale: tuple[str, ...],
    **tls_opts: Any,
) -> None:
    """Start a coordinator alone (or one of several sharing a --store database)."""
    fair_share_half_life = parse_duration(half_life, "--fair-share-half-life")
    data = (data or default_data_dir()).resolve()
    scale = _scale(scale, data)
    auto = tls_opts.get("tls_mode") == "auto"
    # the store (and the data directory) only once the options are known good; first, though,
    # for --tls auto on a shared store: every coordinator's certificate from the one CA
    early = _open_store(data, store) if auto and store else None
    if early is not None and early[0].shared:
        share_ca(early[0], data)
    tls = server_tls(host, data, tls_opts)
    _check_port(host, port)
    opened, own, key = early or _open_store(data, store)
    scheme = "https" if tls else "http"
    beacons = announce_targets(host, port, scheme, tls_opts)
    click.echo(
        f"coordinator on {scheme}://{host}:{port}; admin token in {data / 'admin.token'}"
        + (f"; CA certificate {tls.ca}" if tls else ""),
        err=True,
    )
    if is_loopback(host):  # this machine's own coordinator: point the CLI at it, as `up` does
        ca = str(tls.ca) if tls and tls.ca else None
        path = write_config(f"{scheme}://{_url_host(host)}:{port}", own, ca)
        click.echo(f"client config written to {path}", err=True)
    settings = Settings(
        data_dir=data,
        store=store,
        blobs=blobs,
        tokens={t: "admin" for t in (own, *tokens)},
        job_key=key,
        lease_timeout=lease_timeout,
        heartbeat_interval=_heartbeat(lease_timeout),
        ca_file=tls.ca if tls else None,
        speculative_min_seconds=speculative_min_seconds,
        group_commit=group_commit,
        metrics_public=metrics_public,
        fair_share_half_life=fair_share_half_life,
        scale=scale,
        url=_self_url(scheme, host, port),
        ca_sha256=pem_fingerprint(tls.ca.read_bytes()) if tls and tls.ca else "",
    )
    app = make_server(settings, host, port, tls=tls, store=opened)
    run_async(serve_announced(app, beacons, announce_port))


@click.command()
@click.option("--server", envvar="CORRAL_URL", default=None, help="Coordinator URL.")
@click.option("--token", envvar="CORRAL_TOKEN", help="Bearer token.")
@click.option("--slots", type=click.IntRange(1), default=1, show_default=True)
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option("--name", default=None, help="Worker name [default: hostname].")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="Operator label.")
@click.option("--program", "programs", multiple=True, help="Program on PATH to advertise.")
@policy_options
@elastic_options
@worker_tls_options
@desktop_worker_options
@click.option(
    "--checkpoint-exit-code",
    type=click.IntRange(1, 255),
    default=85,
    show_default=True,
    help="A task exiting with this code has its checkpoint saved and is run again at once.",
)
@_CHECKPOINT_GRACE
@click.option(
    "--channel",
    type=click.Choice(CHANNEL_MODES),
    envvar="CORRAL_CHANNEL",
    default="auto",
    show_default=True,
    help="Leases, heartbeats and results over one WebSocket (ws), over plain HTTP requests"
    " (http), or the WebSocket when the coordinator has one and HTTP meanwhile (auto).",
)
@click.option("-v", "--verbose", is_flag=True)
def worker(
    server: str | None,
    token: str | None,
    slots: int,
    work_dir: Path | None,
    name: str | None,
    labels: tuple[str, ...],
    programs: tuple[str, ...],
    checkpoint_exit_code: int,
    checkpoint_grace: float,
    channel: ChannelMode,
    verbose: bool,
    **policy: Any,
) -> None:
    """Run a worker that pulls tasks from a coordinator.

    Ctrl-C (SIGINT) drains it: no new tasks, the running ones finish, then it leaves. SIGTERM,
    or a second Ctrl-C, evicts the running tasks (checkpoint saved, requeued), then it leaves."""
    if policy.get("drain_worker"):
        return report_drain(server, token, policy["drain_worker"])
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s worker %(message)s"
    )
    name = name or socket.gethostname()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    work_dir = (work_dir or Path(base) / "corral" / f"worker-{name}").resolve()
    server = discovered_server(server, policy)
    desktop = desktop_config(policy)
    target = worker_target(server, token, policy, work_dir)
    config = WorkerConfig(
        server=target.server,
        token=target.token,
        ca_file=target.ca_file,
        slots=slots,
        name=name,
        labels=key_values(labels, "--label"),
        programs=list(programs),
        work_dir=work_dir,
        checkpoint_exit_code=checkpoint_exit_code,
        checkpoint_grace=checkpoint_grace,
        channel=channel,
        **policy_config(policy),
        **elastic_config(policy),
        **desktop,
    )
    run_worker(config)

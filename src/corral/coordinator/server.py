"""Running a coordinator: open its data directory and serve it with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import secrets
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from .app import build_app
from .blobs import LocalBlobs
from .service import Coordinator
from .settings import Settings
from .store import SQLiteStore
from .tls import TlsFiles

T = TypeVar("T")


def admin_token(data_dir: Path) -> str:
    """The data directory's admin token, made on first use (file mode 0600)."""
    path = data_dir / "admin.token"
    if path.exists():
        return path.read_text().strip()
    token = "crl_" + secrets.token_urlsafe(24)
    data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


class CoordinatorServer(uvicorn.Server):
    """uvicorn that answers held long-polls before it waits for connections to close."""

    def __init__(self, config: uvicorn.Config, coordinator: Coordinator) -> None:
        super().__init__(config)
        self.coordinator = coordinator

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.coordinator.release_waiters()
        await super().shutdown(sockets)


def job_key(data_dir: Path) -> bytes:
    """The key that signs job-scoped task tokens, made on first use (file mode 0600), so
    tokens handed to running tasks survive a coordinator restart."""
    path = data_dir / "job.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


KEEP_ALIVE_S = 75  # longer than any worker sits idle between calls on one connection


def raise_open_files() -> int:
    """Lift the soft open-file limit to the hard one (every worker holds a connection);
    the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def make_server(
    settings: Settings,
    host: str,
    port: int,
    kind: type[CoordinatorServer] = CoordinatorServer,
    tls: TlsFiles | None = None,
) -> uvicorn.Server:
    """A uvicorn server (of class `kind`) for a coordinator on `settings.data_dir`."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    raise_open_files()
    store = SQLiteStore(settings.db_path)
    app = build_app(settings, store, LocalBlobs(settings.blob_dir))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        ws="none",  # no WebSocket routes; "auto" imported websockets, 30 ms of every start
        access_log=False,
        timeout_graceful_shutdown=3,
        # Thousands of workers connect at once and sit idle between calls for longer than
        # uvicorn's 5 s default (a farm of 10,000 takes several seconds just to register),
        # which closed their keep-alive connections under them. 4096: Linux's usual somaxconn.
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=4096,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )
    return kind(config, app.state.coordinator)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed (uvicorn[standard] brings it): every
    request the coordinator answers costs less event-loop time there."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    run_async(make_server(settings, host, port).serve())

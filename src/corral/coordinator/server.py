"""Running a coordinator: open its data directory and store, and serve them with uvicorn.

The admin token and the key that signs job tokens live in the data directory; on a store
several coordinators share (PostgreSQL), in the database instead (`shared_secrets`), made by
the first coordinator and read by the rest, so a task's token or an admin's keeps working
whichever coordinator it reaches.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import socket
from pathlib import Path

import uvicorn

from .._loop import run_async
from .app import build_app
from .blobs import Blobs, DatabaseBlobs, LocalBlobs
from .service import Coordinator
from .settings import Settings
from .store import Store, open_store
from .tls import TlsFiles


def admin_token(data_dir: Path) -> str:
    """The data directory's admin token, made on first use (file mode 0600)."""
    path = data_dir / "admin.token"
    if path.exists():
        return path.read_text().strip()
    token = _new_admin_token()
    _write_admin_token(data_dir, token)
    return token


def _new_admin_token() -> str:
    return "crl_" + secrets.token_urlsafe(24)


def _write_admin_token(data_dir: Path, token: str) -> None:
    path = data_dir / "admin.token"
    data_dir.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")


def open_coordinator_store(settings: Settings) -> Store:
    """The store `settings` names: its `store` URL, else the data directory's SQLite file."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_store(settings.store or str(settings.db_path))


def shared_secrets(store: Store, data_dir: Path) -> tuple[str, bytes]:
    """The admin token and the job-token key: the data directory's, or on a shared store the
    database's (the token also written to data_dir/admin.token for the local CLI)."""
    if not store.shared:
        return admin_token(data_dir), job_key(data_dir)
    token = store.shared_value("admin_token", lambda: _new_admin_token().encode()).decode()
    if not (data_dir / "admin.token").exists() or admin_token(data_dir) != token:
        _write_admin_token(data_dir, token)
    return token, store.shared_value("job_key", lambda: secrets.token_bytes(32))


def open_blobs(settings: Settings, store: Store) -> Blobs:
    """Blobs in `settings.blobs`; else in the database when it is shared, else local."""
    if settings.blobs:
        return LocalBlobs(Path(settings.blobs))
    if store.shared:
        return DatabaseBlobs(settings.blob_dir, store)
    return LocalBlobs(settings.blob_dir)


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
    store: Store | None = None,
) -> uvicorn.Server:
    """A uvicorn server (of class `kind`) for a coordinator on `settings.data_dir` and its
    store (opened here unless given)."""
    raise_open_files()
    store = store or open_coordinator_store(settings)
    app = build_app(settings, store, open_blobs(settings, store))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        # the channel (coordinator/channel.py); its largest call is a body at its limit
        ws="websockets-sansio",
        ws_max_size=settings.max_body_bytes + 64 * 1024,
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


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    run_async(make_server(settings, host, port).serve())

"""B4: the coordinator alone, with simulated in-process workers that lease and complete tasks as
fast as it allows (SQLite). Three paths: straight into the service (store + scheduling),
through the ASGI app (routing, JSON, auth) with httpx's in-process transport, and over the
channel (coordinator/channel.py's own endpoint fed msgpack frames by an in-memory socket, as
a worker on `--channel ws` talks to it: no httpx on the calling side).

Each simulated worker behaves as a real one with free slots does: it asks for as many tasks as
it has slots, and its next lease call carries the results of the ones it finished (recorded in
one transaction before the lease), so one call completes a batch and leases the next.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from starlette.websockets import WebSocketDisconnect

from corral.coordinator import Settings
from corral.coordinator.app import build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.channel import ChannelServer
from corral.coordinator.service import Coordinator
from corral.coordinator.store import SQLiteStore, Store
from corral.protocol import (
    CHANNEL_PATH,
    Answer,
    Call,
    JobCreate,
    LeaseGrant,
    LeaseRequest,
    TaskResult,
    TaskSpec,
    WorkerRegister,
    WorkerRegistered,
    decode_answer,
    encode_frame,
)

WORKERS = 8
SLOTS = 4

Opener = Callable[[Path], Store]


def sqlite_store(root: Path) -> Store:
    """The default: a SQLite file in the run's directory."""
    return SQLiteStore(root / "corral.db")


def _settings(root: Path) -> Settings:
    # CORRAL_GROUP_COMMIT as `corral server` reads it (on, off, auto)
    group = os.environ.get("CORRAL_GROUP_COMMIT", Settings.group_commit)
    return Settings(data_dir=root, tokens={"t": "bench"}, lease_timeout=60.0, group_commit=group)


def _completed(results: dict[str, TaskResult], stale: list[str], refused: dict[str, str]) -> int:
    assert not stale and not refused, (stale, refused)
    return len(results)


async def _service_worker(coord: Coordinator, done: list[int], n: int, slots: int) -> None:
    reg = coord.register(WorkerRegister("sim", slots, {}))
    carry: dict[str, TaskResult] = {}
    while done[0] < n or carry:
        # carrying results: do not wait for work, so the last batch is recorded at once
        ask = LeaseRequest(max=slots, wait=0.0 if carry else 0.2, results=carry)
        grant = await coord.lease(reg.id, ask)
        done[0] += _completed(carry, grant.stale, grant.refused)
        carry = {a.task_id: TaskResult(a.lease_id, 0) for a in grant.assignments}


async def _timed(
    coord: Coordinator, store: Store, n: int, worker: Callable[[list[int]], Any]
) -> dict[str, Any]:
    """Submit `n` tasks, run WORKERS simulated workers until they are done, time them."""
    await coord.start()
    try:
        coord.submit(JobCreate([TaskSpec(argv=["true"]) for _ in range(n)]), "bench")
        done = [0]
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(done) for _ in range(WORKERS)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await coord.stop()
        store.close()
    return {"n": n, "seconds": elapsed, "per_s": n / elapsed, "cpu_us": cpu / n * 1e6}


async def _service(root: Path, n: int, slots: int, opener: Opener) -> dict[str, Any]:
    store = opener(root)
    coord = Coordinator(store, LocalBlobs(root / "blobs"), _settings(root))
    return await _timed(coord, store, n, lambda done: _service_worker(coord, done, n, slots))


async def _post(http: httpx.AsyncClient, path: str, body: Any, kind: Any = None) -> Any:
    r = await http.post(
        path, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
    )
    r.raise_for_status()
    return msgspec.json.decode(r.content, type=kind) if kind else None


async def _asgi_worker(http: httpx.AsyncClient, done: list[int], n: int, slots: int) -> None:
    reg = await _post(http, "/workers", WorkerRegister("sim", slots, {}), WorkerRegistered)
    carry: dict[str, TaskResult] = {}
    while done[0] < n or carry:
        ask = LeaseRequest(max=slots, wait=0.0 if carry else 0.2, results=carry)
        grant = await _post(http, f"/workers/{reg.id}/lease", ask, LeaseGrant)
        done[0] += _completed(carry, grant.stale, grant.refused)
        carry = {a.task_id: TaskResult(a.lease_id, 0) for a in grant.assignments}


async def _asgi(root: Path, n: int, slots: int, opener: Opener) -> dict[str, Any]:
    store = opener(root)
    app = build_app(_settings(root), store, LocalBlobs(root / "blobs"))
    coord: Coordinator = app.state.coordinator
    await coord.start()
    transport = httpx.ASGITransport(app=app)
    headers = {"authorization": "Bearer t"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench/api/v1", headers=headers
        ) as http:
            await _post(http, "/jobs", JobCreate([TaskSpec(argv=["true"]) for _ in range(n)]))
            done = [0]
            t0, cpu0 = time.perf_counter(), time.process_time()
            await asyncio.gather(*(_asgi_worker(http, done, n, slots) for _ in range(WORKERS)))
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await coord.stop()
        store.close()
    return {"n": n, "seconds": elapsed, "per_s": n / elapsed, "cpu_us": cpu / n * 1e6}


class _Socket:
    """The coordinator's end of a channel, in memory: what ChannelServer.endpoint reads and
    writes (the ASGI scope, receive_bytes, send_bytes), and a worker's `call` on it."""

    def __init__(self, app: Any) -> None:
        headers = [(b"authorization", b"Bearer t"), (b"host", b"bench")]
        self.scope = {"type": "websocket", "app": app, "path": CHANNEL_PATH, "headers": headers}
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._waiting: dict[int, asyncio.Future[Answer]] = {}
        self._next = 0

    async def accept(self) -> None:
        pass

    async def receive_bytes(self) -> bytes:
        data = await self._inbox.get()
        if data is None:
            raise WebSocketDisconnect()
        return data

    async def send_bytes(self, data: bytes) -> None:
        answer = decode_answer(data)
        self._waiting.pop(answer.id).set_result(answer)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        raise AssertionError(f"channel closed: {code} {reason}")

    async def call(self, method: str, path: str, body: Any, kind: Any) -> Any:
        self._next += 1
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = waiter
        self._inbox.put_nowait(
            encode_frame(Call(self._next, method, path, msgspec.json.encode(body)))
        )
        answer = await waiter
        assert answer.status < 300, answer
        return msgspec.json.decode(answer.body, type=kind)

    def hang_up(self) -> None:
        self._inbox.put_nowait(None)


async def _channel_worker(app: Any, done: list[int], n: int, slots: int) -> None:
    sock = _Socket(app)
    served = asyncio.create_task(ChannelServer(app.state.coordinator.metrics).endpoint(sock))
    reg = await sock.call("POST", "/workers", WorkerRegister("sim", slots, {}), WorkerRegistered)
    carry: dict[str, TaskResult] = {}
    while done[0] < n or carry:
        ask = LeaseRequest(max=slots, wait=0.0 if carry else 0.2, results=carry)
        grant = await sock.call("POST", f"/workers/{reg.id}/lease", ask, LeaseGrant)
        done[0] += _completed(carry, grant.stale, grant.refused)
        carry = {a.task_id: TaskResult(a.lease_id, 0) for a in grant.assignments}
    sock.hang_up()
    await served


async def _channel(root: Path, n: int, slots: int, opener: Opener) -> dict[str, Any]:
    store = opener(root)
    app = build_app(_settings(root), store, LocalBlobs(root / "blobs"))
    coord: Coordinator = app.state.coordinator
    return await _timed(coord, store, n, lambda done: _channel_worker(app, done, n, slots))


def b4_coordinator(n: int, slots: int = SLOTS, opener: Opener = sqlite_store) -> dict[str, Any]:
    """Dispatch+complete per second (and the process's CPU microseconds a task) through the
    service, through the ASGI app and over the channel."""
    out = {}
    for name, run in (("service", _service), ("asgi", _asgi), ("channel", _channel)):
        root = Path(tempfile.mkdtemp(prefix="corral-bench-b4-"))
        try:
            out[name] = asyncio.run(run(root, n, slots, opener))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return out | {"workers": WORKERS, "slots": slots}

"""B4: the coordinator alone, with simulated in-process workers that lease and complete tasks as
fast as it allows (SQLite). Two paths: straight into the service (store + scheduling), and
through the ASGI app (routing, JSON, auth) with httpx's in-process transport."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec

from corral.coordinator import Settings
from corral.coordinator.app import build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.service import Coordinator
from corral.coordinator.store import SQLiteStore
from corral.protocol import (
    JobCreate,
    LeaseGrant,
    LeaseRequest,
    TaskResult,
    TaskSpec,
    WorkerRegister,
    WorkerRegistered,
)

WORKERS = 8
SLOTS = 4


def _settings(root: Path) -> Settings:
    return Settings(data_dir=root, tokens={"t": "bench"}, lease_timeout=60.0)


async def _service_worker(coord: Coordinator, done: list[int], n: int) -> None:
    reg = coord.register(WorkerRegister("sim", SLOTS, {}))
    while done[0] < n:
        grant = await coord.lease(reg.id, LeaseRequest(max=SLOTS, wait=0.2))
        for a in grant.assignments:
            coord.result(a.task_id, TaskResult(a.lease_id, 0))
            done[0] += 1


async def _service(root: Path, n: int) -> dict[str, Any]:
    store = SQLiteStore(root / "corral.db")
    coord = Coordinator(store, LocalBlobs(root / "blobs"), _settings(root))
    await coord.start()
    try:
        coord.submit(JobCreate([TaskSpec(argv=["true"]) for _ in range(n)]), "bench")
        done = [0]
        t0 = time.perf_counter()
        await asyncio.gather(*(_service_worker(coord, done, n) for _ in range(WORKERS)))
        elapsed = time.perf_counter() - t0
    finally:
        await coord.stop()
        store.close()
    return {"n": n, "seconds": elapsed, "per_s": n / elapsed}


async def _post(http: httpx.AsyncClient, path: str, body: Any, kind: Any = None) -> Any:
    r = await http.post(
        path, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
    )
    r.raise_for_status()
    return msgspec.json.decode(r.content, type=kind) if kind else None


async def _asgi_worker(http: httpx.AsyncClient, done: list[int], n: int) -> None:
    reg = await _post(http, "/workers", WorkerRegister("sim", SLOTS, {}), WorkerRegistered)
    while done[0] < n:
        grant = await _post(
            http, f"/workers/{reg.id}/lease", LeaseRequest(max=SLOTS, wait=0.2), LeaseGrant
        )
        for a in grant.assignments:
            await _post(http, f"/tasks/{a.task_id}/result", TaskResult(a.lease_id, 0))
            done[0] += 1


async def _asgi(root: Path, n: int) -> dict[str, Any]:
    store = SQLiteStore(root / "corral.db")
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
            t0 = time.perf_counter()
            await asyncio.gather(*(_asgi_worker(http, done, n) for _ in range(WORKERS)))
            elapsed = time.perf_counter() - t0
    finally:
        await coord.stop()
        store.close()
    return {"n": n, "seconds": elapsed, "per_s": n / elapsed}


def b4_coordinator(n: int) -> dict[str, Any]:
    """Dispatch+complete per second through the service and through the ASGI app."""
    out = {}
    for name, run in (("service", _service), ("asgi", _asgi)):
        root = Path(tempfile.mkdtemp(prefix="corral-bench-b4-"))
        try:
            out[name] = asyncio.run(run(root, n))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return out | {"workers": WORKERS, "slots": SLOTS}

"""B5: 10,000 simulated workers holding long-polls at once, then 1,000,000 queued tasks.

The coordinator is a real server process; the simulated workers are raw HTTP/1.1 keep-alive
connections from this process (no subprocesses), so 10,000 of them fit in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

from corral.coordinator.server import raise_open_files
from corral.protocol import JobCreate, TaskSpec

from .farm import free_port, stop, wait_healthy

TOKEN = "bench-token"


class Conn:
    """One HTTP/1.1 keep-alive connection speaking just enough of the protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, path: str, body: bytes) -> None:
        head = (
            f"POST /api/v1{path} HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {TOKEN}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)

    async def answer(self) -> tuple[int, bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        return status, await self.reader.readexactly(length)

    async def call(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.send(path, body)
        return await self.answer()

    def close(self) -> None:
        self.writer.close()


async def _register(port: int, i: int, sem: asyncio.Semaphore) -> tuple[Conn, str]:
    async with sem:
        conn = await Conn.open(port)
        body = msgspec.json.encode({"name": f"sim{i}", "slots": 1})
        status, raw = await conn.call("/workers", body)
        assert status == 200, raw
        return conn, msgspec.json.decode(raw)["id"]


async def _hold(n: int, port: int, hold: float, rss: Callable[[], int]) -> dict[str, Any]:
    """Register n workers, have every one hold a lease long-poll, heartbeat them all meanwhile."""
    sem = asyncio.Semaphore(256)
    t0 = time.perf_counter()
    pairs = await asyncio.gather(*(_register(port, i, sem) for i in range(n)))
    registered = time.perf_counter() - t0
    poll = msgspec.json.encode({"max": 1, "wait": hold})
    sent = time.perf_counter()
    for conn, wid in pairs:
        conn.send(f"/workers/{wid}/lease", poll)
    answers = [asyncio.ensure_future(c.answer()) for c, _ in pairs]
    await asyncio.sleep(min(2.0, hold / 3))
    early = [a.done() for a in answers]
    rss_held = rss()
    beats = await _heartbeat_all(port, [w for _, w in pairs])
    results = await asyncio.gather(*answers, return_exceptions=True)
    released = time.perf_counter() - sent
    # held: still open at the early check, then a clean empty answer (a connection the
    # coordinator dropped early counts as early and as dropped, never as held)
    held = sum(not e and _empty(r) for e, r in zip(early, results, strict=True))
    for conn, _ in pairs:
        conn.close()
    return {
        "workers": n,
        "register_s": registered,
        "answered_early": sum(early),
        "held_then_answered": held,
        "connections_dropped": sum(isinstance(r, BaseException) for r in results),
        "hold_s": hold,
        "all_answered_after_s": released,
        "heartbeats": beats,
        "rss_mb_while_held": rss_held / 1e6,
    }


def _empty(answer: object) -> bool:
    """A 200 lease answer with no assignments."""
    if not isinstance(answer, tuple):
        return False
    status, body = answer
    return bool(status == 200 and msgspec.json.decode(body)["assignments"] == [])


async def _heartbeat_all(port: int, ids: list[str]) -> dict[str, Any]:
    """One heartbeat (no wait) per simulated worker, over 64 connections, while polls are held."""
    conns = [await Conn.open(port) for _ in range(64)]
    body = msgspec.json.encode({"leases": [], "wait": 0})
    queue = list(ids)
    samples: list[float] = []

    async def pump(conn: Conn) -> None:
        while queue:
            wid = queue.pop()
            t = time.perf_counter()
            status, _ = await conn.call(f"/workers/{wid}/heartbeat", body)
            assert status == 200
            samples.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(pump(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return {"n": len(samples), "per_s": len(samples) / elapsed, "median_ms": _median_ms(samples)}


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000 if samples else float("nan")


def _lease_latency(http: httpx.Client, worker_id: str, n: int) -> dict[str, Any]:
    body = msgspec.json.encode({"max": 1, "wait": 0})
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        r = http.post(f"/workers/{worker_id}/lease", content=body)
        samples.append(time.perf_counter() - t)
        assert r.status_code == 200 and r.json()["assignments"], r.text
        for a in r.json()["assignments"]:  # complete it, so the worker has a free slot again
            done = {"lease_id": a["lease_id"], "exit_code": 0}
            assert http.post(f"/tasks/{a['task_id']}/result", json=done).status_code == 200
    ms = sorted(s * 1000 for s in samples)
    return {"n": n, "median_ms": statistics.median(ms), "p99_ms": ms[int(0.99 * (n - 1))]}


def _submit(http: httpx.Client, total: int, chunk: int) -> float:
    spec = [TaskSpec(argv=["/bin/true"])]
    t0 = time.perf_counter()
    for start in range(0, total, chunk):
        body = msgspec.json.encode(JobCreate(spec * min(chunk, total - start)))
        r = http.post("/jobs", content=body, timeout=600)
        assert r.status_code == 201, r.text[:300]
    return time.perf_counter() - t0


def _queued(http: httpx.Client, port: int, proc: psutil.Process, queued: int) -> dict[str, Any]:
    reg = http.post("/workers", json={"name": "probe", "slots": 1}).json()["id"]
    chunk = min(queued, 100_000)
    submit_s = _submit(http, queued, chunk)
    rss = proc.memory_info().rss
    return {
        "queued": queued,
        "submit_s": submit_s,
        "rss_mb": rss / 1e6,
        "lease": _lease_latency(http, reg, 200),
    }


def b5_scale(workers: int, queued: int, hold: float = 8.0) -> dict[str, Any]:
    """Held workers and RSS, then submit time and lease latency at 1k and `queued` tasks."""
    raise_open_files()  # this process holds every simulated worker's connection
    root = Path(tempfile.mkdtemp(prefix="corral-bench-b5-"))
    port = free_port()
    argv = [sys.executable, "-m", "bench.serve", str(port), str(root / "data"), TOKEN]
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(argv, stdout=log, stderr=log, cwd=Path(__file__).parent.parent)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        proc = psutil.Process(server.pid)
        rss_idle = proc.memory_info().rss
        open_files = proc.rlimit(psutil.RLIMIT_NOFILE)[0]  # after make_server raised it

        def rss() -> int:
            return int(proc.memory_info().rss)

        held = asyncio.run(_hold(workers, port, hold, rss)) if workers else {}
        rss_after_hold = proc.memory_info().rss
        headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}/api/v1", headers=headers, timeout=60
        ) as http:
            small = _queued(http, port, proc, 1000)
            big = _queued(http, port, proc, queued) if queued else {}
        return {
            "coordinator_open_files_limit": open_files,
            "rss_mb_idle": rss_idle / 1e6,
            "rss_mb_after_workers": rss_after_hold / 1e6,
            "held": held,
            "at_1k": small,
            "at_big": big,
        }
    finally:
        stop(server)
        with contextlib.suppress(Exception):
            log.close()
        _keep_log(root / "server.log")
        shutil.rmtree(root, ignore_errors=True)


def _keep_log(path: Path) -> None:
    """Copy the coordinator's log, when it said anything, to bench/results/."""
    if path.exists() and path.stat().st_size:
        dest = Path(__file__).parent / "results"
        dest.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        shutil.copy(path, dest / f"{stamp}-b5-server.log")

"""The dashboard's cost: a page of a job of 100,000 tasks, rendered by the coordinator.

Fills a fresh SQLite store with one job of 100,000 tasks (20 workers of 4 slots have run and
finished 2,000 of them, 10% failed, and 80 run now), then times GET requests through the ASGI
app in process (httpx's transport: routing, session check, store reads, Jinja2), logged in
with an admin token's session cookie. Prints the median of several renders of each page:

    .venv/bin/python -m bench.dashboard [--tasks N] [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from corral.coordinator import Settings
from corral.coordinator.app import build_app
from corral.coordinator.blobs import LocalBlobs
from corral.coordinator.store import NewTask, Outcome, SQLiteStore
from corral.protocol import TaskSpec

TOKEN = "bench-admin"


def fill(store: SQLiteStore, n: int, now: float) -> str:
    """One job of `n` tasks; some run and finish on 20 workers; returns its id."""
    tasks = [
        NewTask(uuid.uuid4().hex, i, TaskSpec(argv=["./analyse", f"part{i}"], name=f"part{i}"))
        for i in range(n)
    ]
    store.create_job("bench-job", "bench", "root", now - 600, tasks)
    workers = [f"w{i:02d}" for i in range(20)]
    for w in workers:
        store.register_worker(w, w, 4, {"os": "linux", "sandbox": "bwrap"}, now - 600)
    t = now - 500.0
    for round_ in range(25):  # 25 rounds x 20 workers x 4 slots = 2,000 finished
        for w in workers:
            leased = store.lease(w, 4, t, t + 60, 64)
            done = [
                (x.task_id, x.lease_id, Outcome("failed" if i == 0 and round_ % 3 == 0
                 else "succeeded", 0, None, None, None, {}))
                for i, x in enumerate(leased)
            ]  # fmt: skip
            store.finish_many(w, done, t + 10)
        t += 15
    for w in workers:  # and 80 running now
        store.lease(w, 4, now - 5, now + 60, 64)
    return "bench-job"


async def measure(data: Path, job_id: str, runs: int) -> dict[str, list[float]]:
    settings = Settings(data_dir=data, tokens={TOKEN: "root"})
    store = SQLiteStore(settings.db_path)
    app = build_app(settings, store, LocalBlobs(settings.blob_dir))
    transport = httpx.ASGITransport(app=app)
    pages = {
        "job page 1": f"/ui/jobs/{job_id}",
        "job page, deep (after=90000)": f"/ui/jobs/{job_id}?after=90000",
        "job page, failed only": f"/ui/jobs/{job_id}?status=failed",
        "job page, last": f"/ui/jobs/{job_id}?before={2**62}",
        "jobs": "/ui/",
        "workers": "/ui/workers",
    }
    times: dict[str, list[float]] = {name: [] for name in pages}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://bench") as http,
    ):
        r = await http.post("/ui/login", data={"token": TOKEN})
        assert r.status_code == 303, r.text
        for name, path in pages.items():
            for _ in range(runs + 1):  # the first warms the template and statement caches
                start = time.perf_counter()
                r = await http.get(path)
                times[name].append(time.perf_counter() - start)
                assert r.status_code == 200, (path, r.status_code, r.text[:300])
            times[name] = times[name][1:]
    store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="corral-bench-dash-"))
    try:
        start = time.perf_counter()
        store = SQLiteStore(data / "corral.db")
        job_id = fill(store, args.tasks, time.time())
        store.close()
        print(f"filled a job of {args.tasks:,} tasks in {time.perf_counter() - start:.1f} s")
        times = asyncio.run(measure(data, job_id, args.runs))
        for name, values in times.items():
            ms = [1000 * v for v in values]
            print(
                f"{name:32} median {statistics.median(ms):6.1f} ms"
                f"  (min {min(ms):.1f}, max {max(ms):.1f}, {len(ms)} renders)"
            )
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

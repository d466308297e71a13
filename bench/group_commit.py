"""Group commit, measured: B4 (the coordinator alone) and the coordinator's CPU a task on a real
farm, on SQLite and on PostgreSQL. Not part of `bench/run`:

    .venv/bin/python -m bench.group_commit [--n 20000] [--farm-n 2000] [--only b4,farm]

PostgreSQL is CORRAL_BENCH_POSTGRES (default: the test database on loopback); each run gets a
schema of its own, dropped afterwards. Set CORRAL_GROUP_COMMIT in the environment to choose
what the coordinator does (the farm's server reads it; B4 passes it to Settings).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from corral.client import Client
from corral.coordinator.store import PostgresStore, Store
from corral.protocol import FINAL_STATUSES, TaskSpec

from .coordinator_side import b4_coordinator, sqlite_store
from .farm import Farm

PG_DSN = os.environ.get("CORRAL_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def _pg_schema() -> Iterator[str]:
    import psycopg

    name = f"corral_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def b4(n: int, backend: str) -> dict[str, Any]:
    """B4 on one backend."""
    if backend == "sqlite":
        return b4_coordinator(n, opener=sqlite_store)
    schemas: list[str] = []

    def opener(root: Path) -> Store:
        name = f"corral_bench_{uuid.uuid4().hex[:12]}"
        schemas.append(name)
        return PostgresStore(PG_DSN, schema=name)

    try:
        return b4_coordinator(n, opener=opener)
    finally:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            for name in schemas:
                conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _run_job(farm: Farm, n: int) -> float:
    with Client(farm.url, farm.token, timeout=120.0) as client:
        t0 = time.perf_counter()
        job = client.submit_job([TaskSpec(argv=["/bin/true"]) for _ in range(n)], name="gc")
        while client.job(job.id).status not in FINAL_STATUSES:
            time.sleep(0.02)
        return time.perf_counter() - t0


def farm(n: int, backend: str) -> dict[str, Any]:
    """Coordinator CPU ms a task, and tasks/s, for `n` `/bin/true` tasks on 2 workers."""
    with _pg_schema() as schema:
        f = Farm(workers=2)
        if "CORRAL_GROUP_COMMIT" in os.environ:  # Farm passes on no CORRAL_* of its own
            f.env["CORRAL_GROUP_COMMIT"] = os.environ["CORRAL_GROUP_COMMIT"]
        if backend == "postgres":
            f.env["CORRAL_STORE"] = f"{PG_DSN}?options=-csearch_path%3D{schema}"
        with f:
            f.wait_workers()
            _run_job(f, 20)  # warm up
            server = psutil.Process(f.procs[0].pid)
            before = _cpu(server)
            elapsed = _run_job(f, n)
            cpu = _cpu(server) - before
    return {"n": n, "tasks_per_s": n / elapsed, "coordinator_cpu_ms": cpu / n * 1e3}


def main() -> None:
    """Run the selection on both backends and print one JSON line each."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--farm-n", type=int, default=2000)
    parser.add_argument("--only", default="b4,farm")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    mode = os.environ.get("CORRAL_GROUP_COMMIT", "default")
    for backend in args.backends.split(","):
        if "b4" in args.only:
            print(json.dumps({"b4": backend, "group_commit": mode} | b4(args.n, backend)))
        if "farm" in args.only:
            out = farm(args.farm_n, backend)
            print(json.dumps({"farm": backend, "group_commit": mode} | out))


if __name__ == "__main__":
    main()

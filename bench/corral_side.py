"""B1-B3 on Corral: a real coordinator and two one-slot workers as processes on loopback."""

from __future__ import annotations

import concurrent.futures
import statistics
import sys
import time
from typing import Any

from corral.client import Client
from corral.protocol import FINAL_STATUSES, TaskSpec

from .farm import Farm


def _noop(x: int) -> int:
    return x


def executor_class() -> Any:
    """corral's Executor when the Python API has one, else None."""
    try:
        import cloudpickle

        from corral import Executor
    except ImportError:
        return None
    # workers cannot import bench/: ship the no-op function by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return Executor


def _wait_job(client: Client, job_id: str, timeout: float) -> tuple[str, int]:
    """The job's status and finished count, when it is done or `timeout` has passed: its
    events followed as `corral submit --wait` follows them (until 2026-12-06 this polled
    `GET /jobs/{id}` every 10 ms, whose usage summary reads every finished task: a cost of
    the benchmark's, quadratic in the job's size, counted in the coordinator's CPU)."""
    deadline = time.monotonic() + timeout
    for _ in client.events(job_id):
        if time.monotonic() > deadline:
            break
    job = client.job(job_id)
    return job.status, sum(job.counts.get(s, 0) for s in FINAL_STATUSES)


def run_commands(farm: Farm, argv: list[str], n: int, timeout: float) -> dict[str, Any]:
    """`n` command tasks as one job on a running farm: tasks/s and CPU ms a task."""
    with Client(farm.url, farm.token, timeout=120.0) as client:
        meter = farm.meter()
        t0 = time.perf_counter()
        job = client.submit_job([TaskSpec(argv=argv) for _ in range(n)], name="bench")
        status, done = _wait_job(client, job.id, timeout)
        elapsed = time.perf_counter() - t0
        cpu = meter.stop(done)
        if status not in FINAL_STATUSES:
            client.kill(job.id)
            status = f"PARTIAL: {done} of {n} done in the {timeout:.0f} s cap"
    return {
        "n": n,
        "done": done,
        "seconds": elapsed,
        "tasks_per_s": done / elapsed,
        "status": status,
        "cpu_ms": cpu,
    }


def run_functions(farm: Farm, n: int, timeout: float) -> dict[str, Any]:
    """`n` no-op functions through corral.Executor on a running farm (after 20 to warm up
    its runners): tasks/s and CPU ms a task."""
    executor = executor_class()
    with Client(farm.url, farm.token) as client, executor(client) as ex:
        list(ex.map(_noop, range(20)))  # warm up (function runners start)
        meter = farm.meter()
        t0 = time.perf_counter()
        futures = [ex.submit(_noop, i) for i in range(n)]
        done, _ = concurrent.futures.wait(futures, timeout)
        elapsed = time.perf_counter() - t0
        cpu = meter.stop(len(done))
        for f in futures:
            f.cancel()
    assert all(f.result() == i for i, f in enumerate(futures) if f in done)
    out = {"n": n, "done": len(done), "seconds": elapsed, "tasks_per_s": len(done) / elapsed}
    if len(done) < n:
        out["status"] = f"PARTIAL: {len(done)} of {n} done in the {timeout:.0f} s cap"
    return out | {"cpu_ms": cpu, "via": "corral.Executor"}


def b1_functions(n: int, timeout: float) -> dict[str, Any]:
    """No-op Python functions; through the Executor when it exists."""
    with Farm(workers=2) as farm:
        farm.wait_workers()
        if executor_class() is None:
            out = run_commands(farm, ["python3", "-c", "pass"], n, timeout)
            out["via"] = "FALLBACK: corral.Executor missing; `python3 -c pass` command tasks"
            return out
        return run_functions(farm, n, timeout)


def b2_true(n: int, timeout: float, sandbox: bool = True) -> dict[str, Any]:
    """`/bin/true` command tasks submitted as one job (what submit --each-line does), on
    workers with their default bubblewrap sandbox, or started with --no-sandbox (as the
    peers run: none of them sandboxes a task)."""
    with Farm(workers=2, sandbox=sandbox) as farm:
        farm.wait_workers()
        run_commands(farm, ["/bin/true"], 20, timeout)  # warm up
        out = run_commands(farm, ["/bin/true"], n, timeout)
        out["via"] = "Client.submit_job (as corral submit --each-line)"
        return out


def b3_round_trip(n: int, timeout: float) -> dict[str, Any]:
    """Sequential one-task jobs: submit, then follow the job's events until it is done."""
    executor = executor_class()
    samples = []
    with Farm(workers=2) as farm, Client(farm.url, farm.token) as client:
        farm.wait_workers()
        deadline = time.monotonic() + timeout
        if executor is not None:
            with executor(client) as ex:
                ex.submit(_noop, 0).result()
                for i in range(n):
                    t0 = time.perf_counter()
                    ex.submit(_noop, i).result()
                    samples.append(time.perf_counter() - t0)
                    if time.monotonic() > deadline:
                        break
            via = "corral.Executor submit().result()"
        else:
            for i in range(n + 5):
                t0 = time.perf_counter()
                job = client.submit_job([TaskSpec(argv=["/bin/true"])])
                for _ in client.events(job.id):
                    pass
                if i >= 5:  # the first few warm up connections and caches
                    samples.append(time.perf_counter() - t0)
                if time.monotonic() > deadline:
                    break
            via = "submit_job(/bin/true) + events stream (Executor missing)"
    return latency_summary(samples) | {"via": via}


def latency_summary(samples: list[float]) -> dict[str, Any]:
    """Median and p99 in milliseconds."""
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return {"n": len(ms), "median_ms": statistics.median(ms), "p99_ms": p99}

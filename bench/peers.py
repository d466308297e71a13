"""The peers' side of B1-B3, B7 and B8, run inside bench/.peers-venv (Dask, Celery) or with
the system's GNU Parallel. Prints one JSON object on stdout; never imports corral.

    python bench/peers.py dask|celery|parallel b1|b2|b3|b7 N
    python bench/peers.py dask b8 BLOCKSIZE TEXT_DIR
"""

from __future__ import annotations

import json
import operator
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from words import WORD, summary  # bench/words.py: B8's regex and result digest

CELERY_URL = "redis://127.0.0.1:6379/13"  # a database of its own, flushed before and after


def noop(x: int) -> int:
    return x


def run_true(_: int) -> int:
    return subprocess.run(["/bin/true"], check=False).returncode


def latency(samples: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return {"n": len(ms), "median_ms": statistics.median(ms), "p99_ms": p99}


def throughput(n: int, seconds: float) -> dict[str, Any]:
    return {"n": n, "seconds": seconds, "tasks_per_s": n / seconds}


# dask
def dask_bench(bench: str, n: int) -> dict[str, Any]:
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.worker.daemon": False, "logging.distributed": "error"})
    t_start = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    with cluster, Client(cluster) as client:
        if bench == "b7":
            client.submit(noop, 1, pure=False).result()
            return {"seconds": time.perf_counter() - t_start}
        client.gather(client.map(noop, range(20), pure=False))  # warm up
        if bench == "b3":
            samples = []
            for i in range(n):
                t0 = time.perf_counter()
                client.submit(noop, i, pure=False).result()
                samples.append(time.perf_counter() - t0)
            return latency(samples)
        fn = noop if bench == "b1" else run_true
        t0 = time.perf_counter()
        client.gather(client.map(fn, range(n), pure=False))
        return throughput(n, time.perf_counter() - t0)


def _line_words(line: str) -> list[str]:
    return WORD.findall(line.lower())


def _one_more(count: int, _: str) -> int:
    return count + 1


def _same(word: str) -> str:
    return word


def dask_wordcount(blocksize: int, directory: str) -> dict[str, Any]:
    """B8: dask.bag.read_text, the same per-line words, foldby on 2 workers x 1 thread."""
    import dask
    import dask.bag as db
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.worker.daemon": False, "logging.distributed": "error"})
    files = sorted(str(p) for p in Path(directory).iterdir())
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.gather(client.map(noop, range(20), pure=False))  # warm up
        t0 = time.perf_counter()
        bag = db.read_text(files, blocksize=blocksize)
        words = bag.map(_line_words).flatten()
        pairs = words.foldby(_same, _one_more, 0, operator.add, 0).compute()
        seconds = time.perf_counter() - t0
        partitions = bag.npartitions
    return {"seconds": seconds, "partitions": partitions} | summary(dict(pairs))


# celery
def _celery_app() -> Any:
    from celery import Celery

    app = Celery("corral_bench", broker=CELERY_URL, backend=CELERY_URL)
    app.conf.update(worker_prefetch_multiplier=4, task_acks_late=False, result_expires=300)
    app.task(name="noop")(noop)
    app.task(name="run_true")(run_true)
    return app


app = None
if os.environ.get("CORRAL_BENCH_CELERY_WORKER"):
    app = _celery_app()


def _flush_redis() -> None:
    import redis

    redis.Redis.from_url(CELERY_URL).flushdb()


def _celery_worker(log: Path) -> subprocess.Popen[bytes]:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "CORRAL_BENCH_CELERY_WORKER": "1", "PYTHONPATH": str(here)}
    argv = [sys.executable, "-m", "celery", "-A", "peers", "worker", "-c", "2", "-P", "prefork"]
    argv += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def celery_bench(bench: str, n: int) -> dict[str, Any]:
    from celery import group

    _flush_redis()
    capp = _celery_app()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-celery-"))
    t_start = time.perf_counter()
    worker = _celery_worker(tmp / "worker.log")
    try:
        noop_t, true_t = capp.tasks["noop"], capp.tasks["run_true"]
        if bench == "b7":
            noop_t.delay(1).get(timeout=60)
            return {"seconds": time.perf_counter() - t_start}
        group(noop_t.s(i) for i in range(20))().get(timeout=60)  # warm up
        if bench == "b3":
            samples = []
            for i in range(n):
                t0 = time.perf_counter()
                noop_t.delay(i).get(timeout=30)
                samples.append(time.perf_counter() - t0)
            return latency(samples)
        task = noop_t if bench == "b1" else true_t
        t0 = time.perf_counter()
        group(task.s(i) for i in range(n))().get(timeout=600)
        return throughput(n, time.perf_counter() - t0)
    finally:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        _flush_redis()
        shutil.rmtree(tmp, ignore_errors=True)


# GNU parallel
def gnu_parallel() -> str | None:
    """The path of GNU parallel, or None: moreutils ships another `parallel` that takes other
    options and, given GNU's, runs nothing and exits 0 (a bogus 600,000 tasks/s)."""
    exe = shutil.which("parallel")
    if exe is None:
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return exe if version.stdout.startswith("GNU parallel") else None


def parallel_bench(bench: str, n: int) -> dict[str, Any]:
    exe = gnu_parallel()
    if exe is None:
        return {"error": "GNU parallel is not installed (moreutils' parallel is not it)"}
    if bench == "b7":
        t0 = time.perf_counter()
        subprocess.run([exe, "-j2", "/bin/true", ":::", "1"], check=True)
        return {"seconds": time.perf_counter() - t0}
    if bench != "b2":
        return {"error": "not applicable"}
    lines = "".join(f"{i}\n" for i in range(n)).encode()
    with tempfile.TemporaryDirectory() as tmp:
        joblog = Path(tmp) / "joblog"
        t0 = time.perf_counter()
        subprocess.run([exe, "-j2", "--joblog", str(joblog), "/bin/true"], input=lines, check=True)
        elapsed = time.perf_counter() - t0
        ran = len(joblog.read_text().splitlines()) - 1  # a header line, then one a job
    if ran != n:
        return {"error": f"parallel ran {ran} of {n} jobs"}
    return throughput(n, elapsed)


def main() -> None:
    peer, bench, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if (peer, bench) == ("dask", "b8"):
        sys.stdout.write(json.dumps(dask_wordcount(n, sys.argv[4])) + "\n")
        return
    run = {"dask": dask_bench, "celery": celery_bench, "parallel": parallel_bench}[peer]
    result = run(bench, n)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

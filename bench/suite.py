"""Run B1-B8 against Corral and its peers in one run; print a table, write JSON.

bench/run [--quick] [--only B2,B3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import corral_side, words
from .coordinator_side import b4_coordinator
from .cpu import fork_exec_ms
from .mapreduce_side import b8_corral
from .scale import b5_scale
from .staging import b6_staging, b7_up

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".peers-venv" / "bin" / "python"
FULL = {"b1": 5000, "b2": 1000, "b3": 200, "b4": 20000, "b5w": 10000, "b5q": 1_000_000}
FULL |= {"b6mb": 1024, "b6t": 100, "cap": 120, "b8mb": 256}
QUICK = {"b1": 300, "b2": 200, "b3": 30, "b4": 3000, "b5w": 1000, "b5q": 50_000}
QUICK |= {"b6mb": 128, "b6t": 20, "cap": 25, "b8mb": 64}
PEER_TIMEOUT = 300.0
B8_ROUNDS = 2
B8_CHUNK = "16M"  # 16 maps for 256 MB: 8 a worker (why not 8M: bench/README.md, B8)

Row = dict[str, Any]


def peer(name: str, bench: str, n: int, *extra: str) -> dict[str, Any]:
    """One peer measurement in the peers' virtualenv, bounded in time."""
    argv = [str(PEERS_PYTHON), str(HERE / "peers.py"), name, bench, str(n), *extra]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PEER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {PEER_TIMEOUT:.0f} s"}
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.decode().strip().splitlines()[-1:] or "failed"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _noop(x: int) -> int:
    return x


def _true(_: int) -> int:
    return subprocess.run(["/bin/true"], check=False).returncode


def raw_pool(n: int) -> dict[str, Any]:
    """multiprocessing.Pool(2) over no-op functions: the limit for B1."""
    with multiprocessing.Pool(2) as pool:
        pool.map(_noop, range(100))
        t0 = time.perf_counter()
        pool.map(_noop, range(n), chunksize=1)
        elapsed = time.perf_counter() - t0
    return {"n": n, "tasks_per_s": n / elapsed}


def raw_threads(n: int) -> dict[str, Any]:
    """Two threads calling subprocess.run(['/bin/true']): the limit for B2."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        list(pool.map(_true, range(n)))
        elapsed = time.perf_counter() - t0
    return {"n": n, "tasks_per_s": n / elapsed}


def raw_round_trip(n: int) -> dict[str, Any]:
    """ProcessPoolExecutor(2) submit().result(), sequentially: the limit for B3."""
    samples = []
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        pool.submit(_noop, 0).result()
        for i in range(n):
            t0 = time.perf_counter()
            pool.submit(_noop, i).result()
            samples.append(time.perf_counter() - t0)
    return corral_side.latency_summary(samples)


def _guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # one failing system must not lose the rest of the run
        return {"error": f"{type(exc).__name__}: {exc}"}


def b1(c: dict[str, int]) -> dict[str, Any]:
    n = c["b1"]
    return {
        "corral": _guard(lambda: corral_side.b1_functions(n, c["cap"])),
        "dask": peer("dask", "b1", n),
        "celery": peer("celery", "b1", n),
        "multiprocessing.Pool": _guard(lambda: raw_pool(n)),
    }


def b2(c: dict[str, int]) -> dict[str, Any]:
    n = c["b2"]
    corral = _guard(lambda: corral_side.b2_true(n, c["cap"]))
    if "cpu_ms" in corral:  # the runner's budget adds the program's own start
        corral["fork_exec_ms"] = _guard(lambda: {"ms": fork_exec_ms()}).get("ms", 0.0)
    return {
        "corral": corral,
        "corral --no-sandbox": _guard(lambda: corral_side.b2_true(n, c["cap"], sandbox=False)),
        "dask": peer("dask", "b2", n),
        "celery": peer("celery", "b2", n),
        "parallel -j2": peer("parallel", "b2", n),
        "threads+subprocess.run": _guard(lambda: raw_threads(n)),
    }


def b3(c: dict[str, int]) -> dict[str, Any]:
    n = c["b3"]
    return {
        "corral": _guard(lambda: corral_side.b3_round_trip(n, c["cap"])),
        "dask": peer("dask", "b3", n),
        "celery": peer("celery", "b3", n),
        "ProcessPoolExecutor": _guard(lambda: raw_round_trip(n)),
    }


def b7(_: dict[str, int]) -> dict[str, Any]:
    def corral() -> dict[str, Any]:
        runs = [b7_up()["seconds"] for _ in range(3)]
        return {"seconds": statistics.median(runs), "runs": runs}

    return {
        "corral": _guard(corral),
        "dask": peer("dask", "b7", 1),
        "celery": peer("celery", "b7", 1),
        "parallel -j2": peer("parallel", "b7", 1),
    }


def b8(c: dict[str, int]) -> dict[str, Any]:
    """Word count over c["b8mb"] MiB of generated text: Corral's MapReduce, Dask bag's foldby
    and multiprocessing.Pool(2) over the same line-aligned chunks; the answers compared."""
    root = Path(tempfile.mkdtemp(prefix="corral-bench-b8-"))
    try:
        text = root / "text"
        files = words.make_text(text, c["b8mb"] << 20)
        mb = sum(f.stat().st_size for f in files) / 1e6
        (root / "warm").mkdir()
        (root / "warm" / "warm.txt").write_text("a warm-up line\n" * 100)
        size = int(B8_CHUNK[:-1]) << 20
        systems: dict[str, Callable[[], dict[str, Any]]] = {
            "corral": lambda: _guard(
                lambda: b8_corral(text, root / "warm", B8_CHUNK, PEER_TIMEOUT)
            ),
            # Dask cuts a file into size // blocksize parts: for files just under 2 chunks,
            # 15/16 of the chunk size gives it the same 2 parts a file as the others
            "dask": lambda: peer("dask", "b8", size * 15 // 16, str(text)),
            "multiprocessing.Pool": lambda: _guard(lambda: words.pool_count(files, size)),
        }
        out = _best_of(B8_ROUNDS, systems)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    reference = out["multiprocessing.Pool"].get("digest")
    for r in out.values():
        r["mb"] = mb
        if "digest" in r:
            r["same_answer"] = r["digest"] == reference if reference else None
    return out


def _best_of(rounds: int, systems: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, Any]:
    """Each system `rounds` times, taking turns (so a busy spell on a shared VM hits them
    alike); each one's fastest run, with every run's seconds in `runs`."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, measure in systems.items():
            runs[name].append(measure())
    out = {}
    for name, results in runs.items():
        timed = [r for r in results if "seconds" in r]
        best = min(timed, key=lambda r: r["seconds"]) if timed else results[-1]
        out[name] = best | {"runs": [round(r.get("seconds", 0), 2) for r in results]}
    return out


BENCHES: dict[str, Callable[[dict[str, int]], dict[str, Any]]] = {
    "B1": b1,
    "B2": b2,
    "B3": b3,
    "B4": lambda c: {"corral": _guard(lambda: b4_coordinator(c["b4"]))},
    "B5": lambda c: {"corral": _guard(lambda: b5_scale(c["b5w"], c["b5q"]))},
    "B6": lambda c: {"corral": _guard(lambda: b6_staging(c["b6mb"], c["b6t"]))},
    "B7": b7,
    "B8": b8,
}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "hostname": platform.node(),
        "load_1min_at_start": os.getloadavg()[0],
        "bwrap": shutil.which("bwrap") is not None,
        "channel": os.environ.get("CORRAL_CHANNEL", "auto"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts (about 3 minutes)")
    parser.add_argument("--only", default="", help="comma-separated, e.g. B2,B3")
    parser.add_argument(
        "--channel",
        choices=("auto", "ws", "http"),
        default=None,
        help="Corral's calls over the WebSocket channel or plain HTTP [default: auto]",
    )
    args = parser.parse_args(argv)
    if args.channel:
        os.environ["CORRAL_CHANNEL"] = args.channel  # read by farm.Farm (and the client)
    chosen = [b.strip().upper() for b in args.only.split(",") if b.strip()] or list(BENCHES)
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]}; choose from {', '.join(BENCHES)}")
    counts = QUICK if args.quick else FULL
    console = Console(width=200)
    started = datetime.datetime.now(datetime.UTC)
    facts = machine()  # before the run: its load is the other processes'
    results: dict[str, Any] = {}
    for name in chosen:
        console.print(f"[bold]{name}[/bold] ...", end=" ")
        t0 = time.perf_counter()
        results[name] = BENCHES[name](counts)
        console.print(f"{time.perf_counter() - t0:.1f} s")
    from .report import CPU_COLUMNS, cpu_rows, rows, targets

    table = Table(title=f"Corral benchmarks {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    for col in ("bench", "system", "result", "vs Corral", "note"):
        table.add_column(col)
    for row in rows(results):
        table.add_row(*row)
    console.print(table)
    cpu = cpu_rows(results)
    if cpu:
        cpu_table = Table(title="CPU ms a task, by process (psutil, children included)")
        for col in CPU_COLUMNS:
            cpu_table.add_column(col)
        for row in cpu:
            cpu_table.add_row(*row)
        console.print(cpu_table)
    verdicts = targets(results)
    for line in verdicts:
        console.print(line)
    record = {
        "started": started.isoformat(timespec="seconds"),
        "machine": facts,
        "quick": args.quick,
        "counts": counts,
        "results": results,
        "targets": verdicts,
    }
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"{started:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    md = ["| bench | system | result | vs Corral | note |", "|---|---|---|---|---|"]
    md += ["| " + " | ".join(row) + " |" for row in rows(results)]
    if cpu:
        md += ["", "| " + " | ".join(CPU_COLUMNS) + " |", "|---" * len(CPU_COLUMNS) + "|"]
        md += ["| " + " | ".join(row) + " |" for row in cpu]
    path.with_suffix(".md").write_text("\n".join(md + [""] + verdicts) + "\n")
    console.print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

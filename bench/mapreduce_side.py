"""B8 on Corral: examples/mapreduce/wordcount.py's WordCount on a throwaway farm (a server and
two one-slot workers, as every Corral benchmark), timed from `run()` to its result."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import re
import sys
import time
from pathlib import Path
from typing import Any

from corral.client import Client

from .farm import Farm
from .words import summary

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mapreduce" / "wordcount.py"


def word_count_class() -> Any:
    """The example's WordCount, imported as the top-level module `wordcount` (so MapReduce
    ships it to the workers by value, as it would a user's script)."""
    spec = importlib.util.spec_from_file_location("wordcount", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["wordcount"] = module
    spec.loader.exec_module(module)
    return module.WordCount


def sandbox_state(farm: Farm) -> str:
    """Whether the workers run tasks in bubblewrap: each one warns when it does not."""
    off = set()
    for log in farm.worker_logs:
        found = re.search(r"WITHOUT a sandbox \(([^)]*)\)", log.read_text(errors="replace"))
        if found:
            off.add(found[1])
    return f"sandbox OFF ({'; '.join(sorted(off))})" if off else "sandbox on (bubblewrap)"


def b8_corral(text: Path, warm: Path, chunk_size: str, timeout: float) -> dict[str, Any]:
    """WordCount(reducers=2) over the files in `text`, after a warm-up job over `warm`."""
    word_count = word_count_class()
    with Farm(workers=2) as farm, Client(farm.url, farm.token, timeout=120.0) as client:
        farm.wait_workers()
        word_count([str(warm)], chunk_size).run(client, reducers=2, progress=False)
        job = word_count([str(text)], chunk_size)
        chunks = len(job.chunks())
        pool = concurrent.futures.ThreadPoolExecutor(1)
        t0 = time.perf_counter()
        running = pool.submit(job.run, client, reducers=2, progress=False)
        try:
            pairs = running.result(timeout)
        except concurrent.futures.TimeoutError:
            farm.close()  # the run fails as its farm goes, and its thread ends
            return {"error": f"not done in the {timeout:.0f} s cap"}
        finally:
            pool.shutdown(wait=False)
        seconds = time.perf_counter() - t0
        via = f"WordCount, chunk {chunk_size}, {chunks} maps, 2 reducers; {sandbox_state(farm)}"
    return {"seconds": seconds, "chunks": chunks, "via": via} | summary(dict(pairs))

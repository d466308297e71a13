"""Turning the results of a run into table rows and P1-P8 verdicts."""

from __future__ import annotations

from typing import Any

from .cpu import PROCESSES, budget, over

Row = tuple[str, str, str, str, str]


def _get(d: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _ratio(ours: float | None, theirs: float | None, higher_is_better: bool) -> str:
    if not ours or not theirs:
        return ""
    r = ours / theirs if higher_is_better else theirs / ours
    return f"Corral {r:.2f}x"


def _throughput_rows(bench: str, res: dict[str, Any]) -> list[Row]:
    ours = _get(res, "corral", "tasks_per_s")
    out = []
    for system, r in res.items():
        value = _get(r, "tasks_per_s")
        shown = f"{value:,.0f} tasks/s" if value else f"error: {_get(r, 'error')}"
        vs = "" if system == "corral" else _ratio(ours, value, True)
        note = " ".join(str(_get(r, k) or "") for k in ("via", "status") if _get(r, k))
        out.append((bench, system, shown, vs, note))
    return out


def _latency_rows(bench: str, res: dict[str, Any]) -> list[Row]:
    ours = _get(res, "corral", "median_ms")
    out = []
    for system, r in res.items():
        med, p99 = _get(r, "median_ms"), _get(r, "p99_ms")
        shown = f"median {med:.2f} ms, p99 {p99:.2f} ms" if med else f"error: {_get(r, 'error')}"
        vs = "" if system == "corral" else _ratio(ours, med, False)
        out.append((bench, system, shown, vs, str(_get(r, "via") or "")))
    return out


def _seconds_rows(bench: str, res: dict[str, Any]) -> list[Row]:
    ours = _get(res, "corral", "seconds")
    out = []
    for system, r in res.items():
        value = _get(r, "seconds")
        shown = f"{value:.2f} s" if value else f"error: {_get(r, 'error')}"
        vs = "" if system == "corral" else _ratio(ours, value, False)
        out.append((bench, system, shown, vs, "start to first result"))
    return out


def _b4_rows(res: dict[str, Any]) -> list[Row]:
    c = res.get("corral", {})
    if "error" in c:
        return [("B4", "corral", f"error: {c['error']}", "", "")]
    note = f"{c.get('workers')} simulated workers x {c.get('slots')} slots, SQLite"
    rows = [
        ("B4", "corral service", f"{_get(c, 'service', 'per_s'):,.0f} /s", "", note),
        ("B4", "corral ASGI", f"{_get(c, 'asgi', 'per_s'):,.0f} /s", "", "+ HTTP layer in-process"),
    ]
    if "channel" in c:  # runs before 2026-12-06 had no channel path
        rows.append(("B4", "corral channel", f"{c['channel']['per_s']:,.0f} /s", "", "+ frames"))
    return rows


def _b5_rows(res: dict[str, Any]) -> list[Row]:
    c = res.get("corral", {})
    if "error" in c:
        return [("B5", "corral", f"error: {c['error']}", "", "")]
    held, small, big = c.get("held", {}), c.get("at_1k", {}), c.get("at_big", {})
    q = big.get("queued", 0)
    beats = held.get("heartbeats", {})
    return [
        (
            "B5",
            "workers held",
            f"{held.get('held_then_answered', 0):,} of {held.get('workers', 0):,}",
            "",
            f"RSS {held.get('rss_mb_while_held', 0):.0f} MB; "
            f"heartbeats {beats.get('per_s', 0):,.0f}/s",
        ),
        ("B5", f"submit {q:,}", f"{big.get('submit_s', 0):.1f} s", "", "100k tasks a job"),
        ("B5", f"RSS at {q:,} queued", f"{big.get('rss_mb', 0):.0f} MB", "", ""),
        (
            "B5",
            "lease at 1k queued",
            f"median {_get(small, 'lease', 'median_ms') or 0:.2f} ms",
            "",
            f"p99 {_get(small, 'lease', 'p99_ms') or 0:.2f} ms",
        ),
        (
            "B5",
            f"lease at {q:,} queued",
            f"median {_get(big, 'lease', 'median_ms') or 0:.2f} ms",
            "",
            f"p99 {_get(big, 'lease', 'p99_ms') or 0:.2f} ms",
        ),
    ]


def _b6_rows(res: dict[str, Any]) -> list[Row]:
    c = res.get("corral", {})
    if "error" in c:
        return [("B6", "corral", f"error: {c['error']}", "", "")]
    big, rep = c.get("big", {}), c.get("repeat", {})
    mb = big.get("bytes", 0) / 1e6
    return [
        (
            "B6",
            f"corral {mb:,.0f} MB input",
            f"{big.get('worker_mb_s', 0):,.0f} MB/s",
            "",
            f"client upload {big.get('upload_mb_s', 0):,.0f} MB/s",
        ),
        ("B6", "loopback copy", f"{big.get('loopback_copy_mb_s', 0):,.0f} MB/s", "", "sendfile"),
        (
            "B6",
            f"exe to {rep.get('tasks')} tasks",
            f"{rep.get('repeat_bytes_per_worker')} B repeated",
            "",
            f"first fetch {rep.get('bytes_per_worker')} B per worker",
        ),
    ]


def _b8_rows(res: dict[str, Any]) -> list[Row]:
    ours = _get(res, "corral", "seconds")
    out = []
    for system, r in res.items():
        value = _get(r, "seconds")
        if value:
            shown = f"{value:.2f} s ({r['mb'] / value:,.1f} MB/s)"
        else:
            shown = f"error: {_get(r, 'error')}"
        vs = "" if system == "corral" else _ratio(ours, value, False)
        same = _get(r, "same_answer")
        answer = {True: "same counts", False: "WRONG ANSWER: counts differ", None: ""}[same]
        if same is not None:
            answer += f" ({r['words']:,} words, {r['distinct']:,} distinct)"
        runs = _get(r, "runs")
        runs_text = f"best of {runs} s" if runs and len(runs) > 1 else ""
        note = "; ".join(x for x in (answer, runs_text, str(_get(r, "via") or "")) if x)
        out.append(("B8", system, shown, vs, note))
    return out


def rows(results: dict[str, Any]) -> list[Row]:
    """Table rows for every benchmark that ran."""
    out: list[Row] = []
    for bench, res in results.items():
        if bench in ("B1", "B2"):
            out += _throughput_rows(bench, res)
        elif bench == "B3":
            out += _latency_rows(bench, res)
        elif bench == "B7":
            out += _seconds_rows(bench, res)
        else:
            out += {"B4": _b4_rows, "B5": _b5_rows, "B6": _b6_rows, "B8": _b8_rows}[bench](res)
    return out


CPU_COLUMNS = ("CPU ms a task", "B1 functions", "budget", "B2 /bin/true", "budget", "B2 bare")
_CPU_RUNS = (("B1", "corral", "function"), ("B2", "corral", "command"))


def cpu_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Issue 18's table: CPU ms a task in each process of B1 and B2, against the budget
    (OVER where a process spends more); B2 bare is the --no-sandbox farm."""
    runs = []
    for bench, system, kind in _CPU_RUNS:
        per = _get(results, bench, system, "cpu_ms")
        fork = _get(results, bench, system, "fork_exec_ms") or 0.0
        runs.append((per, budget(kind, fork)))
    bare = _get(results, "B2", "corral --no-sandbox", "cpu_ms")
    if not any(per for per, _ in runs) and not bare:
        return []
    out = []
    for proc in (*PROCESSES, "all"):
        row = ["whole farm" if proc == "all" else proc]
        for per, limits in runs:
            if not per:
                row += ["", ""]
                continue
            mark = " OVER" if proc in over(per, limits) else ""
            row += [f"{per[proc]:.2f}{mark}", f"<= {limits[proc]:.2f}"]
        row.append(f"{bare[proc]:.2f}" if bare else "")
        out.append(tuple(row))
    return out


def _verdict(name: str, ok: bool | None, text: str) -> str:
    mark = "n/a" if ok is None else ("MET" if ok else "MISSED")
    return f"{name} {mark}: {text}"


def _beats(res: dict[str, Any], peer: str, factor: float) -> bool:
    ours, theirs = _get(res, "corral", "tasks_per_s"), _get(res, peer, "tasks_per_s")
    return bool(ours and theirs and ours >= factor * theirs)


def targets(results: dict[str, Any]) -> list[str]:
    """P1-P8: met or missed, for the benchmarks that ran."""
    out = []
    if "B2" in results:
        r = results["B2"]
        v = _get(r, "corral", "tasks_per_s") or 0
        ok = v >= 1500 and _beats(r, "dask", 3) and _beats(r, "celery", 5)
        ok = ok and _beats(r, "parallel -j2", 7)
        bare = _get(r, "corral --no-sandbox", "tasks_per_s")
        also = f"; {bare:,.0f}/s with --no-sandbox, as the peers run" if bare else ""
        text = f"/bin/true {v:,.0f}/s sandboxed{also} (>= 1,500, 3x Dask, 5x Celery)"
        out.append(_verdict("P1", ok, text))
    if "B1" in results:
        r = results["B1"]
        v = _get(r, "corral", "tasks_per_s") or 0
        ok = v >= 3000 and _beats(r, "dask", 5)
        out.append(_verdict("P2", ok, f"no-op functions {v:,.0f}/s (>= 3,000, 5x Dask)"))
    if "B3" in results:
        med = _get(results["B3"], "corral", "median_ms") or 1e9
        p99 = _get(results["B3"], "corral", "p99_ms") or 1e9
        ok = med <= 2 and p99 <= 10
        out.append(_verdict("P3", ok, f"round trip median {med:.2f} ms, p99 {p99:.2f} ms"))
    if "B4" in results:
        v = _get(results["B4"], "corral", "service", "per_s") or 0
        out.append(_verdict("P4", v >= 20000, f"{v:,.0f} dispatch+complete/s (>= 20,000)"))
    if "B5" in results:
        out.append(_p5(results["B5"].get("corral", {})))
    if "B6" in results:
        c = results["B6"].get("corral", {})
        mbs = _get(c, "big", "worker_mb_s") or 0
        rep = _get(c, "repeat", "repeat_bytes_per_worker") or [1]
        ok = mbs >= 300 and not any(rep)
        out.append(_verdict("P6", ok, f"{mbs:,.0f} MB/s; repeated executable {rep} bytes"))
    if "B7" in results:
        s = _get(results["B7"], "corral", "seconds") or 1e9
        out.append(_verdict("P7", s <= 1, f"corral up to first result {s:.2f} s"))
    if "B8" in results:
        out.append(_p8(results["B8"]))
    return out


def _p8(r: dict[str, Any]) -> str:
    ours = _get(r, "corral", "seconds") or 1e9
    dask = _get(r, "dask", "seconds") or 0
    pool = _get(r, "multiprocessing.Pool", "seconds") or 0
    right = _get(r, "corral", "same_answer") is True
    ok = right and ours < dask and ours <= 2 * pool
    mb = _get(r, "corral", "mb") or 0
    text = (
        f"word count of {mb:,.0f} MB in {ours:.2f} s, Dask bag {dask:.2f} s, "
        f"multiprocessing {pool:.2f} s (faster than Dask, within 2x of multiprocessing: "
        f"{ours / pool if pool else 0:.2f}x){'' if right else '; WRONG OR NO ANSWER'}"
    )
    full = mb >= 200
    return _verdict("P8", ok if full else None, text + ("" if full else " (quick size)"))


def _p5(c: dict[str, Any]) -> str:
    held = _get(c, "held", "held_then_answered") or 0
    workers = _get(c, "held", "workers") or 0
    q = _get(c, "at_big", "queued") or 0
    rss = _get(c, "at_big", "rss_mb") or 1e9
    sub = _get(c, "at_big", "submit_s") or 1e9
    small = _get(c, "at_1k", "lease", "median_ms") or 0
    big = _get(c, "at_big", "lease", "median_ms") or 1e9
    full = workers >= 10000 and q >= 1_000_000
    ok = held == workers and rss <= 1000 and sub <= 60 and big <= 2 * small
    text = (
        f"{held:,}/{workers:,} workers held; {q:,} queued in {rss:.0f} MB, submitted in "
        f"{sub:.1f} s; lease {small:.2f} ms at 1k vs {big:.2f} ms at {q:,}"
    )
    return _verdict("P5", ok if full else None, text + ("" if full else " (quick counts)"))

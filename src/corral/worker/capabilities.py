"""What this machine can run, as reported to the coordinator."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil


def _gpus() -> dict[str, Any]:
    if not shutil.which("nvidia-smi"):
        return {"gpus": 0}
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"gpus": 0}
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return {"gpus": len(names), "gpu_models": names}


def static_capabilities(
    work_dir: Path, labels: dict[str, str], programs: list[str], slots: int
) -> dict[str, Any]:
    """Facts measured once at start, plus the changing ones."""
    caps: dict[str, Any] = {
        "os": platform.system().lower(),
        "arch": platform.machine().lower(),
        "cpus": os.cpu_count() or 1,
        "memory_total": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "hostname": platform.node(),
        "slots": slots,
        "labels": labels,
        **probe_programs(programs),
        "sandbox": "none",
    }
    caps.update(_gpus())
    caps.update(dynamic_capabilities(work_dir))
    return caps


def probe_programs(names: list[str]) -> dict[str, Any]:
    """Which of `names` are on PATH (name -> path), and which were looked for and not found."""
    found = {p: path for p in names if (path := shutil.which(p))}
    return {"programs": found, "programs_missing": sorted(set(names) - set(found))}


def exposed_env(names: list[str]) -> dict[str, str]:
    """NAME or NAME=VALUE items as the variables a worker passes to its tasks: a bare NAME
    takes its value from the worker's own environment and is left out when unset there."""
    out = {}
    for item in names:
        name, sep, value = item.partition("=")
        if sep:
            out[name] = value
        elif name in os.environ:
            out[name] = os.environ[name]
    return out


def dynamic_capabilities(work_dir: Path) -> dict[str, Any]:
    """Facts that change while the worker runs: refreshed with heartbeats."""
    return {
        "memory_free": psutil.virtual_memory().available,
        "disk_free": psutil.disk_usage(str(work_dir)).free,
    }

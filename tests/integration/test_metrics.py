"""A real Prometheus server scrapes a real `corral server` and sees its queue."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .conftest import Farm, free_port, stop_process, wait_for

PROMETHEUS = shutil.which("prometheus")
N = 7


@pytest.fixture
def prometheus_bin() -> str:
    if PROMETHEUS is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (apt-get install prometheus)")
        pytest.skip("prometheus is not installed")
    return PROMETHEUS


def _config(path: Path, farm: Farm) -> None:
    path.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: corral\n"
        f"    authorization:\n      credentials: {farm.token}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{farm.port}']\n"
    )


def _queued(port: int) -> float | None:
    try:
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/query",
            params={"query": "sum(corral_tasks_queued)"},
            timeout=2.0,
        )
    except httpx.HTTPError:
        return None
    result = r.json()["data"]["result"] if r.status_code == 200 else []
    return float(result[0]["value"][1]) if result else None


def test_prometheus_sees_the_queued_tasks(
    farm: Callable[..., Farm], prometheus_bin: str, tmp_path: Path
) -> None:
    f = farm(workers=0)
    r = httpx.post(
        f.url + "/api/v1/jobs",
        json={"name": "queued", "tasks": [{"argv": ["true"]}] * N},
        headers={"authorization": f"Bearer {f.token}"},
    )
    assert r.status_code == 201, r.text
    config = tmp_path / "prometheus.yml"
    _config(config, f)
    port = free_port()
    argv = [prometheus_bin, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]
    argv += [f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
    with (tmp_path / "prometheus.log").open("wb") as log:
        prom = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for(lambda: _queued(port) == N, 50, 0.5, what=f"Prometheus to see {N} queued")
    finally:
        stop_process(prom)

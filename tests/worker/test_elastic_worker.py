"""Worker-side pieces of issue 3: cache counters and limit, program probes, exposed env."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from corral.worker.cache import CacheError, FileCache
from corral.worker.capabilities import exposed_env, probe_programs


def test_cache_counts_hits_misses_and_bytes_and_keeps_its_limit(tmp_path: Path) -> None:
    blobs = {hashlib.sha256(d).hexdigest(): d for d in (b"a" * 100, b"b" * 100, b"c" * 100)}

    async def fetch(sha: str, dest: Path) -> None:
        dest.write_bytes(blobs[sha])

    cache = FileCache(tmp_path / "c", fetch, max_bytes=250)

    async def main() -> None:
        a, b, c = blobs
        for sha in (a, a, b, c, c):
            await cache.path_for(sha, 100)

    asyncio.run(main())
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["bytes_fetched"]) == (2, 3, 300)
    assert stats["bytes_held"] == 200 and stats["max_bytes"] == 250
    held = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert held <= 250


def test_cache_refuses_bytes_that_do_not_match_their_hash(tmp_path: Path) -> None:
    good = b"the real data"
    sha = hashlib.sha256(good).hexdigest()

    async def fetch(_: str, dest: Path) -> None:
        dest.write_bytes(b"THE FAKE DATA")  # same size, wrong content

    cache = FileCache(tmp_path / "c", fetch)
    with pytest.raises(CacheError, match="hashes to"):
        asyncio.run(cache.stage(sha, len(good), tmp_path / "dest", 0o644))
    assert not (tmp_path / "dest").exists()
    assert cache.stats()["bytes_held"] == 0


def test_probe_programs_reports_found_and_missing() -> None:
    caps = probe_programs(["sh", "surely-not-a-program-xyz"])
    assert set(caps["programs"]) == {"sh"}
    assert caps["programs_missing"] == ["surely-not-a-program-xyz"]


def test_exposed_env_takes_values_given_or_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_HOME", "/opt/cuda")
    monkeypatch.delenv("UNSET_VAR_XYZ", raising=False)
    got = exposed_env(["CUDA_HOME", "SITE=lab", "UNSET_VAR_XYZ"])
    assert got == {"CUDA_HOME": "/opt/cuda", "SITE": "lab"}

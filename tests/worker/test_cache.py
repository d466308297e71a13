"""Tests for the worker's content-addressed file cache."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import stat
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.worker import cache as cache_mod
from corral.worker.cache import CacheError, FileCache


@pytest.fixture(autouse=True)
def link_small_blobs_too(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """These tests use 100-byte blobs to exercise lending by hard link, which the cache
    otherwise keeps for blobs over `SMALL` (smaller ones are copied)."""
    if "small_copies" not in request.keywords:
        monkeypatch.setattr(cache_mod, "SMALL", 0)


def blob(text: str, size: int = 100) -> tuple[bytes, str]:
    """Deterministic test content of exactly `size` bytes and its sha256."""
    data = (text * size).encode()[:size]
    return data, hashlib.sha256(data).hexdigest()


class FakeFetch:
    """A fetch that serves blobs from memory, counts calls and tracks concurrency."""

    def __init__(self, blobs: dict[str, bytes], delay: float = 0.0) -> None:
        self.blobs = blobs
        self.delay = delay
        self.calls: Counter[str] = Counter()
        self.active = 0
        self.max_active = 0

    async def __call__(self, sha256: str, dest: Path) -> None:
        self.calls[sha256] += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            dest.write_bytes(self.blobs[sha256])
        finally:
            self.active -= 1


def cache_files(root: Path) -> list[str]:
    """Every file (including temp files) under the cache root, relative to it."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def test_concurrent_path_for_fetches_once(tmp_path: Path) -> None:
    data, sha = blob("a", 5000)
    fetch = FakeFetch({sha: data}, delay=0.02)
    cache = FileCache(tmp_path / "c", fetch)

    async def main() -> list[Path]:
        return await asyncio.gather(*(cache.path_for(sha, len(data)) for _ in range(20)))

    paths = asyncio.run(main())
    assert fetch.calls[sha] == 1
    assert cache.fetched == 1
    assert cache.fetched_bytes == len(data)
    assert set(paths) == {tmp_path / "c" / sha[:2] / sha}
    assert paths[0].read_bytes() == data


def test_different_hashes_fetch_in_parallel(tmp_path: Path) -> None:
    (d1, s1), (d2, s2) = blob("x"), blob("y")
    fetch = FakeFetch({s1: d1, s2: d2}, delay=0.02)
    cache = FileCache(tmp_path, fetch)

    async def main() -> None:
        await asyncio.gather(cache.path_for(s1, 100), cache.path_for(s2, 100))

    asyncio.run(main())
    assert fetch.max_active == 2  # the lock is per hash, not global
    assert cache.fetched == 2


def test_hash_mismatch_raises_and_leaves_no_file(tmp_path: Path) -> None:
    data, sha = blob("a")
    fetch = FakeFetch({sha: b"tampered" + data[8:]})
    cache = FileCache(tmp_path, fetch)
    with pytest.raises(CacheError, match="expected"):
        asyncio.run(cache.path_for(sha, len(data)))
    assert cache_files(tmp_path) == []
    assert cache.fetched == 0


def test_declared_size_mismatch_raises(tmp_path: Path) -> None:
    data, sha = blob("a")
    cache = FileCache(tmp_path, FakeFetch({sha: data}))
    with pytest.raises(CacheError, match="declared"):
        asyncio.run(cache.path_for(sha, len(data) + 1))
    assert cache_files(tmp_path) == []


def test_failed_fetch_cleans_temp_file_and_propagates(tmp_path: Path) -> None:
    _, sha = blob("a")

    async def broken(sha256: str, dest: Path) -> None:
        dest.write_bytes(b"partial")
        raise ConnectionError("network down")

    cache = FileCache(tmp_path, broken)
    with pytest.raises(ConnectionError):
        asyncio.run(cache.path_for(sha, 100))
    assert cache_files(tmp_path) == []


def test_reuse_across_instances(tmp_path: Path) -> None:
    data, sha = blob("a")
    first = FileCache(tmp_path, FakeFetch({sha: data}))
    path = asyncio.run(first.path_for(sha, len(data)))

    refetch = FakeFetch({})  # would KeyError if asked for anything
    second = FileCache(tmp_path, refetch)
    assert second.total_bytes == len(data)
    assert asyncio.run(second.path_for(sha, len(data))) == path
    assert refetch.calls == Counter()
    assert second.fetched == 0


def test_damaged_cached_blob_is_refetched(tmp_path: Path) -> None:
    data, sha = blob("a")
    fetch = FakeFetch({sha: data})
    cache = FileCache(tmp_path, fetch)
    path = asyncio.run(cache.path_for(sha, len(data)))
    path.chmod(0o644)
    path.write_bytes(b"short")
    assert asyncio.run(cache.path_for(sha, len(data))).read_bytes() == data
    assert fetch.calls[sha] == 2


def cached(root: Path, sha: str) -> Path:
    return root / sha[:2] / sha


def overwrite_in_place(path: Path, data: bytes) -> None:
    """What a task may do to its input: same size, same inode, no mode left in the way."""
    path.chmod(0o644)
    with path.open("r+b") as f:
        f.write(data)


def end_task(task_dir: Path) -> None:
    """The agent removes a finished task's directory."""
    shutil.rmtree(task_dir)


@pytest.mark.parametrize("mode", [0o755, 0o600, 0o640])
def test_stage_links_the_blob_with_mode_and_marks_it_lent(tmp_path: Path, mode: int) -> None:
    data, sha = blob("a")
    cache = FileCache(tmp_path / "cache", FakeFetch({sha: data}))
    dest = tmp_path / "task" / "in" / "deep" / "input.bin"
    asyncio.run(cache.stage(sha, len(data), dest, mode))

    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == mode
    assert dest.stat().st_ino == cached(tmp_path / "cache", sha).stat().st_ino  # no copy
    assert (tmp_path / "cache" / sha[:2] / f".{sha}.lent").exists()


def test_task_overwriting_its_input_never_reaches_the_next_task(tmp_path: Path) -> None:
    data, sha = blob("a")
    fetch = FakeFetch({sha: data})
    cache = FileCache(tmp_path / "cache", fetch)
    asyncio.run(cache.stage(sha, len(data), tmp_path / "t1" / "in", 0o444))
    overwrite_in_place(tmp_path / "t1" / "in", b"X" * len(data))
    end_task(tmp_path / "t1")

    asyncio.run(cache.stage(sha, len(data), tmp_path / "t2" / "in", 0o644))
    assert (tmp_path / "t2" / "in").read_bytes() == data
    assert fetch.calls[sha] == 2  # the damaged blob was dropped and fetched again
    assert asyncio.run(cache.path_for(sha, len(data))).read_bytes() == data


def test_lent_blob_left_intact_is_verified_and_taken_back(tmp_path: Path) -> None:
    data, sha = blob("a")
    fetch = FakeFetch({sha: data})
    cache = FileCache(tmp_path / "cache", fetch)
    asyncio.run(cache.stage(sha, len(data), tmp_path / "t1" / "in", 0o755))
    end_task(tmp_path / "t1")

    path = asyncio.run(cache.path_for(sha, len(data)))
    assert fetch.calls[sha] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert not (tmp_path / "cache" / sha[:2] / f".{sha}.lent").exists()


def test_blob_still_linked_by_a_running_task_is_copied_verified(tmp_path: Path) -> None:
    data, sha = blob("a")
    fetch = FakeFetch({sha: data})
    cache = FileCache(tmp_path / "cache", fetch)
    first = tmp_path / "t1" / "in"
    asyncio.run(cache.stage(sha, len(data), first, 0o644))
    asyncio.run(cache.stage(sha, len(data), tmp_path / "t2" / "in", 0o644))
    assert (tmp_path / "t2" / "in").stat().st_ino != first.stat().st_ino
    assert fetch.calls[sha] == 1

    overwrite_in_place(first, b"Y" * len(data))  # t1 still running, writing its input
    asyncio.run(cache.stage(sha, len(data), tmp_path / "t3" / "in", 0o644))
    assert (tmp_path / "t3" / "in").read_bytes() == data
    assert fetch.calls[sha] == 2
    assert (tmp_path / "t2" / "in").read_bytes() == data
    assert asyncio.run(cache.path_for(sha, len(data))).read_bytes() == data


def test_path_for_verifies_a_blob_a_running_task_changed(tmp_path: Path) -> None:
    data, sha = blob("a")
    fetch = FakeFetch({sha: data})
    cache = FileCache(tmp_path / "cache", fetch)
    asyncio.run(cache.stage(sha, len(data), tmp_path / "t1" / "in", 0o644))
    overwrite_in_place(tmp_path / "t1" / "in", b"Z" * len(data))
    assert asyncio.run(cache.path_for(sha, len(data))).read_bytes() == data
    assert fetch.calls[sha] == 2


def test_lent_mark_survives_a_worker_restart(tmp_path: Path) -> None:
    data, sha = blob("a")
    asyncio.run(
        FileCache(tmp_path / "c", FakeFetch({sha: data})).stage(
            sha, 100, tmp_path / "t1" / "in", 0o644
        )
    )
    overwrite_in_place(tmp_path / "t1" / "in", b"W" * len(data))
    end_task(tmp_path / "t1")  # the worker died; its task directory was cleaned up

    fetch = FakeFetch({sha: data})
    restarted = FileCache(tmp_path / "c", fetch)
    asyncio.run(restarted.stage(sha, len(data), tmp_path / "t2" / "in", 0o644))
    assert (tmp_path / "t2" / "in").read_bytes() == data
    assert fetch.calls[sha] == 1


def test_stale_lent_mark_without_its_blob_is_removed(tmp_path: Path) -> None:
    _, sha = blob("a")
    marker = tmp_path / sha[:2] / f".{sha}.lent"
    marker.parent.mkdir()
    marker.touch()
    FileCache(tmp_path, FakeFetch({}))
    assert not marker.exists()


def test_stage_copies_where_the_file_system_cannot_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, sha = blob("a")
    cache = FileCache(tmp_path / "cache", FakeFetch({sha: data}))

    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    dest = tmp_path / "task" / "in"
    asyncio.run(cache.stage(sha, len(data), dest, 0o640))
    blob_file = cached(tmp_path / "cache", sha)
    assert dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert dest.stat().st_ino != blob_file.stat().st_ino
    assert stat.S_IMODE(blob_file.stat().st_mode) == 0o444
    assert not (tmp_path / "cache" / sha[:2] / f".{sha}.lent").exists()


def test_stage_drops_setuid_bits(tmp_path: Path) -> None:
    data, sha = blob("a")
    cache = FileCache(tmp_path / "cache", FakeFetch({sha: data}))
    dest = tmp_path / "task" / "x"
    asyncio.run(cache.stage(sha, len(data), dest, 0o4755))
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755


def test_stage_replaces_symlink_instead_of_writing_through(tmp_path: Path) -> None:
    data, sha = blob("a")
    cache = FileCache(tmp_path / "cache", FakeFetch({sha: data}))
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    dest = tmp_path / "task" / "input"
    dest.parent.mkdir()
    dest.symlink_to(victim)
    asyncio.run(cache.stage(sha, len(data), dest, 0o644))
    assert not dest.is_symlink()
    assert dest.read_bytes() == data
    assert victim.read_bytes() == b"precious"


def test_stage_twice_reuses_cache(tmp_path: Path) -> None:
    data, sha = blob("a")
    fetch = FakeFetch({sha: data}, delay=0.01)
    cache = FileCache(tmp_path / "cache", fetch)

    async def main() -> None:
        await asyncio.gather(
            *(cache.stage(sha, len(data), tmp_path / f"t{i}" / "in", 0o644) for i in range(5))
        )

    asyncio.run(main())
    assert fetch.calls[sha] == 1
    assert all((tmp_path / f"t{i}" / "in").read_bytes() == data for i in range(5))


def test_lru_eviction_respects_max_bytes_and_order(tmp_path: Path) -> None:
    blobs = {sha: data for data, sha in map(blob, "abc")}
    sa, sb, sc = (blob(c)[1] for c in "abc")
    fetch = FakeFetch(blobs)
    cache = FileCache(tmp_path, fetch, max_bytes=250)

    async def main() -> None:
        await cache.path_for(sa, 100)
        await cache.path_for(sb, 100)
        await cache.path_for(sa, 100)  # a is now more recent than b
        await cache.path_for(sc, 100)  # 300 > 250: evict the least recent, b

    asyncio.run(main())
    assert (tmp_path / sa[:2] / sa).exists()
    assert not (tmp_path / sb[:2] / sb).exists()
    assert (tmp_path / sc[:2] / sc).exists()
    assert cache.total_bytes == 200
    assert fetch.calls == Counter({sa: 1, sb: 1, sc: 1})


def test_lru_order_survives_restart(tmp_path: Path) -> None:
    blobs = {sha: data for data, sha in map(blob, "ab")}
    sa, sb = (blob(c)[1] for c in "ab")
    first = FileCache(tmp_path, FakeFetch(blobs))

    async def main() -> None:
        await first.path_for(sa, 100)
        await first.path_for(sb, 100)
        await first.path_for(sa, 100)  # a most recent, recorded in its atime

    asyncio.run(main())
    second = FileCache(tmp_path, FakeFetch({}), max_bytes=100)
    second.evict()
    assert (tmp_path / sa[:2] / sa).exists()
    assert not (tmp_path / sb[:2] / sb).exists()


def test_evict_spares_blob_being_staged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, sha = blob("a")
    cache = FileCache(tmp_path / "cache", FakeFetch({sha: data}), max_bytes=0)
    started, release = threading.Event(), threading.Event()
    real_link = cache_mod.link_to

    def slow_link(src: Path, dest: Path, mode: int) -> bool:
        started.set()
        assert release.wait(5)
        return real_link(src, dest, mode)

    monkeypatch.setattr(cache_mod, "link_to", slow_link)

    async def main() -> bool:
        staging = asyncio.ensure_future(cache.stage(sha, 100, tmp_path / "task" / "in", 0o644))
        while not started.is_set():
            await asyncio.sleep(0.001)
        cache.evict()
        survived = (tmp_path / "cache" / sha[:2] / sha).exists()
        release.set()
        await staging
        return survived

    assert asyncio.run(main())
    assert (tmp_path / "task" / "in").read_bytes() == data
    cache.evict()  # no longer staged: now it goes
    assert not (tmp_path / "cache" / sha[:2] / sha).exists()


def test_stale_temp_files_removed_at_start(tmp_path: Path) -> None:
    _, sha = blob("a")
    shard = tmp_path / sha[:2]
    shard.mkdir()
    stale, fresh = shard / f".{sha}.old.tmp", shard / f".{sha}.new.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (0, 0))
    cache = FileCache(tmp_path, FakeFetch({}))
    assert not stale.exists()
    assert fresh.exists()  # might belong to a download still in progress
    assert cache.total_bytes == 0


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "A" * 64,
        "g" * 64,
        "0" * 63,
        "0" * 65,
        "../" + "0" * 61,
        "0" * 62 + "/x",
        " " * 64,
    ],
)
def test_invalid_hash_rejected(tmp_path: Path, bad: str) -> None:
    fetch = FakeFetch({})
    cache = FileCache(tmp_path / "cache", fetch)
    with pytest.raises(CacheError, match="invalid sha256"):
        asyncio.run(cache.path_for(bad, 1))
    with pytest.raises(CacheError, match="invalid sha256"):
        asyncio.run(cache.stage(bad, 1, tmp_path / "dest", 0o644))
    assert fetch.calls == Counter()
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("in_thread", [False, True])
def test_digest_hashed_while_receiving_spares_a_second_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_thread: bool
) -> None:
    data, sha = blob("a", 9 << 20)
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]

    async def chunks() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async def fetch(_: str, dest: Path) -> str:
        if in_thread:  # as the worker does: a blocking download in a thread of its own
            return await asyncio.to_thread(FileCache.receive_sync, iter(pieces), dest)
        return await FileCache.receive(chunks(), dest)

    def no_second_pass(path: Path) -> str:
        raise AssertionError("hashed the file again")

    monkeypatch.setattr(cache_mod, "sha256_file", no_second_pass)
    cache = FileCache(tmp_path, fetch)
    assert asyncio.run(cache.path_for(sha, len(data))).read_bytes() == data


def test_digest_reported_by_the_fetch_must_match(tmp_path: Path) -> None:
    data, sha = blob("a")

    async def honest(_: str, dest: Path) -> str:
        dest.write_bytes(b"not the blob" + data[12:])
        return hashlib.sha256(dest.read_bytes()).hexdigest()

    with pytest.raises(CacheError, match="expected"):
        asyncio.run(FileCache(tmp_path / "h", honest).path_for(sha, len(data)))
    assert cache_files(tmp_path / "h") == []


@pytest.mark.small_copies
def test_a_small_blob_is_copied_not_lent(tmp_path: Path) -> None:
    data, sha = blob("s")
    fetch = FakeFetch({sha: data})
    cache = FileCache(tmp_path / "cache", fetch)
    asyncio.run(cache.stage(sha, len(data), tmp_path / "t1" / "in", 0o644))
    first = tmp_path / "t1" / "in"
    assert first.stat().st_ino != cached(tmp_path / "cache", sha).stat().st_ino
    assert not (tmp_path / "cache" / sha[:2] / f".{sha}.lent").exists()
    overwrite_in_place(first, b"X" * len(data))  # the task's copy only
    asyncio.run(cache.stage(sha, len(data), tmp_path / "t2" / "in", 0o644))
    assert (tmp_path / "t2" / "in").read_bytes() == data
    assert fetch.calls[sha] == 1 and cache.hits == 1

"""Per-worker content-addressed file cache.

Blobs live at ``root/ab/abcdef...`` (the first two hex digits shard the directory) and survive
worker restarts. Each blob is downloaded at most once however many tasks ask for it at the same
time, is verified against its sha256 before it becomes visible under its final name, and is
handed to tasks as a private copy so a task that edits its input cannot corrupt the cache.

Single owner: one `FileCache` instance (one worker process) per root.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from .outputs import sha256_file

__all__ = ["CacheError", "Fetch", "FileCache"]

Fetch = Callable[[str, Path], Awaitable[None]]

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_TMP_SUFFIX = ".tmp"
# Temp files older than this at startup are leftovers of a crashed download.
_STALE_TMP_SECONDS = 3600.0
# Cached blobs are read-only as a second line of defence against accidental writes.
_BLOB_MODE = 0o444
_COPY_CHUNK = 1 << 30


class CacheError(Exception):
    """A blob could not be served: bad hash name, failed verification or size mismatch."""


def _check_hash(sha256: str) -> str:
    """Return sha256 if it is exactly 64 lowercase hex digits, else raise CacheError."""
    if not isinstance(sha256, str) or _HASH_RE.fullmatch(sha256) is None:
        raise CacheError(f"invalid sha256 {sha256!r}: need 64 lowercase hex digits")
    return sha256


def _copy_data(src_fd: int, dst_fd: int) -> None:
    """Copy the rest of src_fd into dst_fd, letting the kernel share extents where it can."""
    copy_range = getattr(os, "copy_file_range", None)
    if copy_range is not None:
        try:
            # On btrfs/XFS this is a reflink; elsewhere an in-kernel copy.
            while copy_range(src_fd, dst_fd, _COPY_CHUNK):
                pass
            return
        except OSError:
            pass  # Unsupported for this pair of files: finish with a plain copy from here.
    with open(src_fd, "rb", closefd=False) as fsrc, open(dst_fd, "wb", closefd=False) as fdst:
        shutil.copyfileobj(fsrc, fdst)


def _copy_to(src: Path, dest: Path, mode: int) -> None:
    """Copy src to dest via a temp file, so an existing dest (even a symlink) is replaced."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".corral-{uuid.uuid4().hex}{_TMP_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with open(src, "rb") as fsrc:
            fd = os.open(tmp, flags, 0o600)
            try:
                _copy_data(fsrc.fileno(), fd)
                os.fchmod(fd, mode)  # explicit, so the umask does not alter it
            finally:
                os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class FileCache:
    """Content-addressed blob store shared by all tasks on one worker."""

    def __init__(self, root: Path, fetch: Fetch, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.fetched = 0
        self.fetched_bytes = 0
        self.hits = 0  # asked for a blob already held
        self.misses = 0  # had to fetch it
        self._fetch = fetch
        self._lru: OrderedDict[str, int] = OrderedDict()  # sha256 -> size, least recent first
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: Counter[str] = Counter()
        self._staging: Counter[str] = Counter()
        self.root.mkdir(parents=True, exist_ok=True)
        self._load()

    @property
    def total_bytes(self) -> int:
        """Bytes held by the blobs this cache knows about."""
        return sum(self._lru.values())

    def stats(self) -> dict[str, int | None]:
        """Counters for the worker's capabilities: hits, misses, bytes fetched and held."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "bytes_fetched": self.fetched_bytes,
            "bytes_held": self.total_bytes,
            "max_bytes": self.max_bytes,
        }

    def _blob_path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _load(self) -> None:
        """Index blobs left by an earlier run, oldest access first, and drop stale temp files."""
        found: list[tuple[int, str, int]] = []
        now = time.time()
        for shard in os.scandir(self.root):
            if not (shard.is_dir(follow_symlinks=False) and _SHARD_RE.fullmatch(shard.name)):
                continue
            for entry in os.scandir(shard.path):
                st = entry.stat(follow_symlinks=False)
                if (
                    stat.S_ISREG(st.st_mode)
                    and _HASH_RE.fullmatch(entry.name)
                    and entry.name.startswith(shard.name)
                ):
                    found.append((st.st_atime_ns, entry.name, st.st_size))
                elif entry.name.endswith(_TMP_SUFFIX) and now - st.st_mtime > _STALE_TMP_SECONDS:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        for _, sha256, size in sorted(found):
            self._lru[sha256] = size

    @contextlib.asynccontextmanager
    async def _hash_lock(self, sha256: str) -> AsyncIterator[None]:
        """Hold the per-hash lock; the lock is dropped from the table once nobody uses it."""
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        self._lock_users[sha256] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[sha256] -= 1
            if not self._lock_users[sha256]:
                del self._lock_users[sha256]
                del self._locks[sha256]

    async def path_for(self, sha256: str, size: int) -> Path:
        """Return the cached file for sha256, downloading and verifying it on first use."""
        path = self._blob_path(_check_hash(sha256))
        async with self._hash_lock(sha256):
            if await self._usable(sha256, size, path):
                self.hits += 1
            else:
                self.misses += 1
                await self._download(sha256, size, path)
                # Inside the lock, so the blob just fetched is itself safe from eviction.
                self.evict()
            self._touch(sha256, path)
        return path

    async def _usable(self, sha256: str, size: int, path: Path) -> bool:
        """Whether a good copy of the blob is already on disk (discarding a damaged one)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._lru.pop(sha256, None)
            return False
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            return True
        # Wrong size: either the request is wrong or the file was damaged behind our back.
        if stat.S_ISREG(st.st_mode) and await asyncio.to_thread(sha256_file, path) == sha256:
            raise CacheError(f"blob {sha256} has {st.st_size} bytes, not the declared {size}")
        self._lru.pop(sha256, None)
        path.unlink()
        return False

    async def _download(self, sha256: str, size: int, path: Path) -> None:
        """Fetch into a temp file, verify it, then atomically move it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
        try:
            await self._fetch(sha256, tmp)
            try:
                st = os.lstat(tmp)
            except FileNotFoundError:
                raise CacheError(f"fetching {sha256} produced no file") from None
            if not stat.S_ISREG(st.st_mode):
                raise CacheError(f"fetching {sha256} produced something other than a file")
            digest = await asyncio.to_thread(sha256_file, tmp)
            if digest != sha256:
                raise CacheError(f"fetched blob hashes to {digest}, expected {sha256}")
            if st.st_size != size:
                raise CacheError(f"blob {sha256} has {st.st_size} bytes, not the declared {size}")
            os.chmod(tmp, _BLOB_MODE)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.fetched += 1
        self.fetched_bytes += st.st_size
        self._lru[sha256] = st.st_size

    def _touch(self, sha256: str, path: Path) -> None:
        """Mark the blob most recently used, in memory and in its atime (for restarts)."""
        st = os.stat(path)
        self._lru[sha256] = st.st_size
        self._lru.move_to_end(sha256)
        # Set atime explicitly: noatime/relatime mounts would not record the use otherwise.
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))

    async def stage(self, sha256: str, size: int, dest: Path, mode: int) -> None:
        """Place a private copy of the blob at dest with permission bits mode."""
        _check_hash(sha256)
        self._staging[sha256] += 1
        try:
            src = await self.path_for(sha256, size)
            # Only permission bits: a wire request must not create setuid/setgid files.
            await asyncio.to_thread(_copy_to, src, Path(dest), mode & 0o777)
        finally:
            self._staging[sha256] -= 1
            if not self._staging[sha256]:
                del self._staging[sha256]

    def evict(self) -> None:
        """Delete least recently used blobs until the cache fits max_bytes, sparing busy ones."""
        if self.max_bytes is None:
            return
        total = self.total_bytes
        for sha256 in list(self._lru):
            if total <= self.max_bytes:
                break
            if sha256 in self._staging or sha256 in self._locks:
                continue
            total -= self._lru.pop(sha256)
            # A file we fail to delete is forgotten here and re-indexed at the next start.
            with contextlib.suppress(OSError):
                self._blob_path(sha256).unlink()

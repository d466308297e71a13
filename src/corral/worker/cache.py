"""Per-worker content-addressed file cache.

Blobs live at ``root/ab/abcdef...`` (the first two hex digits shard the directory) and survive
worker restarts. Each blob is downloaded at most once however many tasks ask for it at the same
time, and is verified against its sha256 (hashed as it arrives) before it becomes visible under
its final name.

A task gets its input as a hard link to the cached blob, so no bytes are copied (ext4 has no
reflinks, and copying a 1 GB input cost as much as downloading it). The task may write to that
file, so from the moment of the link the blob is *lent*: marked in memory and by an empty
``root/ab/.abcdef....lent`` file that survives a crash, and not trusted again until it has been
re-hashed with no other link left (a damaged one is dropped and fetched again). A lent blob
still linked from another task's directory is handed out as a copy that is hashed as it is
written, so no task ever starts from bytes that are not the blob's.

Single owner: one `FileCache` instance (one worker process) per root.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import stat
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path

from .._blobio import write_hashed, write_hashed_sync
from ._place import TMP_SUFFIX, copy_to, copy_verified, link_to, write_new
from .outputs import sha256_file

__all__ = ["CacheError", "Fetch", "FileCache"]

# Writes the blob with this sha256 to a new file at the path. It may return the sha256 of the
# bytes it wrote, hashed as they were written (`FileCache.receive`), which spares the cache a
# second pass over the file; None makes the cache hash the file itself.
Fetch = Callable[[str, Path], Awaitable[str | None]]

_HASH_RE = re.compile(r"[0-9a-f]{64}")
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_LENT_SUFFIX = ".lent"
# Temp files older than this at startup are leftovers of a crashed download.
_STALE_TMP_SECONDS = 3600.0
# Cached blobs not lent out are read-only as a second line of defence against accidental writes.
_BLOB_MODE = 0o444
SMALL = 64 * 1024  # blobs up to this size are staged by a plain copy (see `stage`)


class CacheError(Exception):
    """A blob could not be served: bad hash name, failed verification or size mismatch."""


def _check_hash(sha256: str) -> str:
    """Return sha256 if it is exactly 64 lowercase hex digits, else raise CacheError."""
    if not isinstance(sha256, str) or _HASH_RE.fullmatch(sha256) is None:
        raise CacheError(f"invalid sha256 {sha256!r}: need 64 lowercase hex digits")
    return sha256


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
        self._lent: set[str] = set()  # may be linked from a task's directory: verify before use
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

    def _marker(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f".{sha256}{_LENT_SUFFIX}"

    def _load(self) -> None:
        """Index blobs left by an earlier run, oldest access first, note which were lent, and
        drop stale temp files."""
        found: list[tuple[int, str, int]] = []
        lent: set[str] = set()
        for shard in os.scandir(self.root):
            if shard.is_dir(follow_symlinks=False) and _SHARD_RE.fullmatch(shard.name):
                self._scan_shard(shard.path, shard.name, found, lent)
        for _, sha256, size in sorted(found):
            self._lru[sha256] = size
        for sha256 in lent:
            if sha256 in self._lru:
                self._lent.add(sha256)
            else:
                with contextlib.suppress(OSError):
                    self._marker(sha256).unlink()

    def _scan_shard(
        self, path: str, shard: str, found: list[tuple[int, str, int]], lent: set[str]
    ) -> None:
        now = time.time()
        for entry in os.scandir(path):
            st = entry.stat(follow_symlinks=False)
            name = entry.name
            if stat.S_ISREG(st.st_mode) and _HASH_RE.fullmatch(name) and name.startswith(shard):
                found.append((st.st_atime_ns, name, st.st_size))
            elif name.endswith(_LENT_SUFFIX) and _HASH_RE.fullmatch(name[1 : -len(_LENT_SUFFIX)]):
                lent.add(name[1 : -len(_LENT_SUFFIX)])
            elif name.endswith(TMP_SUFFIX) and now - st.st_mtime > _STALE_TMP_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

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
        """Return the cached file for sha256 (downloading it on first use), its bytes verified.
        Tasks get their inputs through `stage`."""
        path = self._blob_path(_check_hash(sha256))
        async with self._hash_lock(sha256):
            await self._ready(sha256, size, path)
            if sha256 in self._lent and await self._hash(path) != sha256:
                self._drop(sha256)  # a task still holding it changed it
                await self._ready(sha256, size, path)
        return path

    async def _ready(self, sha256: str, size: int, path: Path) -> None:
        """Have a good copy of the blob at path (or one lent and still linked elsewhere)."""
        if await self._usable(sha256, size, path):
            self.hits += 1
        else:
            self.misses += 1
            await self._download(sha256, size, path)
            # Inside the lock, so the blob just fetched is itself safe from eviction.
            self.evict()
        self._touch(sha256, path)

    async def _usable(self, sha256: str, size: int, path: Path) -> bool:
        """Whether a good copy of the blob is already on disk (discarding a damaged one)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self._drop(sha256)
            return False
        if stat.S_ISREG(st.st_mode) and st.st_size == size:
            return await self._reclaim(sha256, path, st) if sha256 in self._lent else True
        # Wrong size: either the request is wrong or the file was damaged behind our back.
        if stat.S_ISREG(st.st_mode) and await self._hash(path) == sha256:
            raise CacheError(f"blob {sha256} has {st.st_size} bytes, not the declared {size}")
        self._drop(sha256)
        return False

    async def _reclaim(self, sha256: str, path: Path, st: os.stat_result) -> bool:
        """Take back a lent blob that no task links any more once its hash shows no task
        changed it (True); drop a changed one (False). One still linked stays lent (True)."""
        if st.st_nlink > 1:
            return True
        if await self._hash(path) != sha256:
            self._drop(sha256)
            return False
        os.chmod(path, _BLOB_MODE)
        self._marker(sha256).unlink(missing_ok=True)
        self._lent.discard(sha256)
        return True

    @staticmethod
    async def _hash(path: Path) -> str:
        return await asyncio.to_thread(sha256_file, path)

    def _drop(self, sha256: str) -> None:
        """Forget the blob and delete its file (a task's link to it lives on)."""
        self._lru.pop(sha256, None)
        self._lent.discard(sha256)
        # A file we fail to delete is forgotten here and re-indexed at the next start.
        for path in (self._blob_path(sha256), self._marker(sha256)):
            with contextlib.suppress(OSError):
                path.unlink()

    async def _download(self, sha256: str, size: int, path: Path) -> None:
        """Fetch into a temp file, verify it, then atomically move it into place."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{sha256}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        try:
            digest = await self._fetch(sha256, tmp)
            try:
                st = os.lstat(tmp)
            except FileNotFoundError:
                raise CacheError(f"fetching {sha256} produced no file") from None
            if not stat.S_ISREG(st.st_mode):
                raise CacheError(f"fetching {sha256} produced something other than a file")
            if digest is None:
                digest = await self._hash(tmp)
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

    @staticmethod
    async def receive(chunks: AsyncIterable[bytes], dest: Path) -> str:
        """Write a download's chunks to a new file at dest and return their sha256, hashed
        on the way in (what a Fetch may return)."""
        digest, _ = await write_hashed(chunks, dest)
        return digest

    @staticmethod
    def receive_sync(chunks: Iterable[bytes], dest: Path) -> str:
        """`receive` for a download running in a thread of its own."""
        digest, _ = write_hashed_sync(chunks, dest)
        return digest

    def _touch(self, sha256: str, path: Path) -> None:
        """Mark the blob most recently used, in memory and in its atime (for restarts)."""
        st = os.stat(path)
        self._lru[sha256] = st.st_size
        self._lru.move_to_end(sha256)
        if st.st_nlink > 1:
            return  # a task's file too: utime could undo the mtime of a write it just made
        # Set atime explicitly: noatime/relatime mounts would not record the use otherwise.
        with contextlib.suppress(OSError):
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))

    async def stage(self, sha256: str, size: int, dest: Path | str, mode: int) -> None:
        """Place the blob at dest with permission bits mode, such that whatever the task does
        to that file, no later task gets anything but the blob's bytes."""
        # Only permission bits: a wire request must not create setuid/setgid files.
        mode &= 0o777
        path = self._blob_path(_check_hash(sha256))
        dest = Path(dest)
        self._staging[sha256] += 1
        try:
            async with self._hash_lock(sha256):
                await self._ready(sha256, size, path)
                if size <= SMALL and sha256 not in self._lent:
                    # a plain copy, right here: for a few KiB a link and its bookkeeping (the
                    # lent mark, a hash before the next use, thread hops) cost more
                    copy_to(path, dest, mode)
                    return
                if sha256 in self._lent:  # still linked from another task's directory
                    if await asyncio.to_thread(copy_verified, path, dest, mode, sha256):
                        return
                    self._drop(sha256)  # that task changed it
                    await self._ready(sha256, size, path)
                await self._lend(sha256, path, dest, mode)
        finally:
            self._staging[sha256] -= 1
            if not self._staging[sha256]:
                del self._staging[sha256]

    async def _lend(self, sha256: str, path: Path, dest: Path, mode: int) -> None:
        """Hard-link the blob at dest, marked lent first so that even after a crash it is
        verified before its next use; a plain copy where the file system cannot link."""
        self._lent.add(sha256)
        await asyncio.to_thread(self._marker(sha256).touch)
        if not await asyncio.to_thread(link_to, path, dest, mode):
            await asyncio.to_thread(copy_to, path, dest, mode)
            os.chmod(path, _BLOB_MODE)
            self._marker(sha256).unlink(missing_ok=True)
            self._lent.discard(sha256)

    @staticmethod
    def place(sha256: str, size: int, dest: str, mode: int, data: bytes) -> os.stat_result | None:
        """Write a blob whose bytes came with the lease (a few KiB) straight at dest, a name
        not taken yet, never through the cache (the coordinator sends such bytes with every
        lease that needs them); its stat. None, with nothing done: `stage` it instead."""
        if len(data) != size or size > SMALL:
            return None
        if hashlib.sha256(data).hexdigest() != _check_hash(sha256):
            return None  # `stage` fetches it and says what is wrong
        return write_new(dest, data, mode & 0o777)

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
            total -= self._lru[sha256]
            self._drop(sha256)

"""The blob-store seam: what the coordinator asks of wherever blobs are kept.

    Blobs          the interface; blobs are named by their sha256 and never change
    ├─ LocalBlobs  one directory on this coordinator's disk (local.py; the default)
    └─ DatabaseBlobs  the store's database, shared by every coordinator on it, with the
                   local directory as a cache in front (database.py)

A blob is read through `path`: a local file holding it, fetched first when the backend keeps
it elsewhere. A backend that cannot reach a blob raises BlobUnavailable (a 503), never hands
out a file that does not hash to the name asked for. Small ones the coordinator sends inside
bodies (a lease's inputs, a final event's outputs) are read through `small`, which keeps the
latest in memory: a function task's are written and read again within milliseconds.
"""

from __future__ import annotations

import abc
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

__all__ = ["BlobError", "BlobUnavailable", "Blobs"]


class BlobError(Exception):
    """An upload was refused; `code` is the API error code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class BlobUnavailable(BlobError):
    """The blob may exist but cannot be reached now (its backend is down or corrupt)."""

    def __init__(self, detail: str) -> None:
        super().__init__("unavailable", detail)


RECENT_BYTES = 32 << 20  # small blobs kept in memory (`small`)


class Blobs(abc.ABC):
    """A content-addressed store."""

    def __init__(self) -> None:
        self._recent: OrderedDict[str, bytes] = OrderedDict()  # sha256 -> bytes, LRU first
        self._recent_bytes = 0

    def small(self, sha256: str, limit: int) -> bytes | None:
        """A stored blob's bytes when it holds at most `limit` (None otherwise, or when it is
        not stored): from memory for one stored or read lately (blobs never change)."""
        data = self._recent.get(sha256)
        if data is not None:
            self._recent.move_to_end(sha256)
        else:
            try:
                path = self.path(sha256)
                if path.stat().st_size > limit:
                    return None
                data = path.read_bytes()
            except (OSError, BlobError):
                return None
            self.remember(sha256, data)
        return data if len(data) <= limit else None

    def remember(self, sha256: str, data: bytes) -> None:
        """Keep a small blob just stored or read in memory, forgetting the least recent."""
        if sha256 in self._recent or len(data) > RECENT_BYTES // 64:
            return
        self._recent[sha256] = data
        self._recent_bytes += len(data)
        while self._recent_bytes > RECENT_BYTES:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= len(old)

    @abc.abstractmethod
    def path(self, sha256: str) -> Path:
        """A local file holding the blob (fetched first if need be); the path need not
        exist when the blob is not stored."""

    @abc.abstractmethod
    def has(self, sha256: str) -> bool:
        """Whether the blob is stored."""

    @abc.abstractmethod
    def missing(self, hashes: list[str]) -> list[str]:
        """The hashes not yet stored, in the given order."""

    @abc.abstractmethod
    async def put(self, sha256: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Store an upload, verifying its hash; returns its size."""

    @abc.abstractmethod
    def put_bytes(self, data: bytes) -> str:
        """Store bytes the coordinator made itself; returns their hash."""

    @abc.abstractmethod
    def total_bytes(self) -> int:
        """The bytes of every stored blob (for `GET /metrics`)."""

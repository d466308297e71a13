"""The blob-store seam: what the coordinator asks of wherever blobs are kept.

    Blobs          the interface; blobs are named by their sha256 and never change
    ├─ LocalBlobs  one directory on this coordinator's disk (local.py; the default)
    └─ DatabaseBlobs  the store's database, shared by every coordinator on it, with the
                   local directory as a cache in front (database.py)

A blob is read through `path`: a local file holding it, fetched first when the backend keeps
it elsewhere. A backend that cannot reach a blob raises BlobUnavailable (a 503), never hands
out a file that does not hash to the name asked for.
"""

from __future__ import annotations

import abc
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


class Blobs(abc.ABC):
    """A content-addressed store."""

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

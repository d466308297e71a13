"""Blobs kept in the store's database, where every coordinator sharing it can reach them.

What `corral server --store postgresql://...` uses unless given `--blobs DIR`. The database
holds each blob (in chunks, `store/_shared.py`); the local directory is a cache in front of
it: an upload is received and verified there first, then copied into the database in one
transaction, and a read fetches the blob into the cache once, checking its hash before the
file is used. A blob counts as stored only once it is in the database.

Rejected: an S3-compatible object store. It would need a server this machine does not run
and a client dependency, and a coordinator would then depend on two services being up
instead of one; the database is already shared, backed up and highly available wherever the
farm is. The cost: blob copies run on the coordinator's event loop, like every store call,
so this suits inputs and outputs of megabytes, not of many gigabytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from ..store import Store
from .base import BlobUnavailable
from .local import LocalBlobs

__all__ = ["DatabaseBlobs"]

_CHUNK = 1 << 20


class DatabaseBlobs(LocalBlobs):
    """Blobs in the store's database, cached in the local directory `root`."""

    def __init__(self, root: Path, store: Store) -> None:
        super().__init__(root)
        self.store = store

    def _missing(self, hashes: list[str]) -> set[str]:
        try:
            return self.store.blobs_missing(hashes)
        except self.store.errors as exc:
            raise BlobUnavailable(f"cannot reach the blob database: {exc}") from exc

    def has(self, sha256: str) -> bool:
        super().path(sha256)  # checks the name
        return not self._missing([sha256])

    def missing(self, hashes: list[str]) -> list[str]:
        absent = self._missing(hashes)
        return [h for h in dict.fromkeys(hashes) if h in absent]

    async def put(self, sha256: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        size = await super().put(sha256, chunks, max_bytes)
        self._copy_in(sha256, size, _file_chunks(super().path(sha256)))
        return size

    def put_bytes(self, data: bytes) -> str:
        sha256 = super().put_bytes(data)
        pieces = (data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK))
        self._copy_in(sha256, len(data), pieces)
        return sha256

    def total_bytes(self) -> int:
        """The database's blobs (the local directory only caches them)."""
        return self.store.blob_bytes()

    def _copy_in(self, sha256: str, size: int, chunks: Iterator[bytes]) -> None:
        try:
            self.store.blob_put(sha256, size, chunks)
        except self.store.errors as exc:
            raise BlobUnavailable(f"cannot store blob {sha256} in the database: {exc}") from exc

    def path(self, sha256: str) -> Path:
        local = super().path(sha256)
        if local.is_file():
            return local
        try:
            chunks = self.store.blob_chunks(sha256)
            if chunks is not None:
                self._fetch(sha256, chunks, local)
        except self.store.errors as exc:
            raise BlobUnavailable(f"cannot fetch blob {sha256} from the database: {exc}") from exc
        return local

    def _fetch(self, sha256: str, chunks: Iterator[bytes], dest: Path) -> None:
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        try:
            with tmp.open("wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise BlobUnavailable(
                    f"blob {sha256} in the database hashes to {digest.hexdigest()}: corrupt"
                )
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk

"""Blobs on the local disk, at root/ab/abcdef... named by their sha256."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ..._blobio import TooLarge, write_hashed
from ...protocol import is_sha256
from .base import BlobError, Blobs


class LocalBlobs(Blobs):
    """A content-addressed store in one directory."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self._root = str(root)
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _where(self, sha256: str) -> str:
        # a string joined once: pathlib's two joins were most of a lookup's cost
        if not is_sha256(sha256):
            raise BlobError("invalid_argument", f"{sha256!r} is not a sha256 hex digest")
        return f"{self._root}/{sha256[:2]}/{sha256}"

    def path(self, sha256: str) -> Path:
        """Where a blob lives (whether or not it exists)."""
        return Path(self._where(sha256))

    def has(self, sha256: str) -> bool:
        """Whether the blob is stored."""
        return sha256 in self._recent or os.path.isfile(self._where(sha256))

    def missing(self, hashes: list[str]) -> list[str]:
        """The hashes not yet stored, in the given order."""
        return [h for h in dict.fromkeys(hashes) if not self.has(h)]

    async def put(self, sha256: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Stream an upload to disk, verifying its hash; returns its size."""
        dest = self.path(sha256)
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            try:
                # hashed and written in a thread, batch by batch, as the body arrives
                digest, size = await write_hashed(chunks, tmp, max_bytes)
            except TooLarge:
                raise BlobError("too_large", f"upload exceeds {max_bytes} bytes") from None
            if digest != sha256:
                raise BlobError("hash_mismatch", f"body hashes to {digest}, not {sha256}")
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return size

    def total_bytes(self) -> int:
        """A walk of the two-level tree (uploads still in tmp/ are not blobs yet)."""
        total = 0
        for top in os.scandir(self.root):
            if top.is_dir() and len(top.name) == 2:
                total += sum(e.stat().st_size for e in os.scandir(top.path) if e.is_file())
        return total

    def put_bytes(self, data: bytes) -> str:
        """Store bytes the coordinator made itself; returns their hash."""
        sha256 = hashlib.sha256(data).hexdigest()
        dest = self._where(sha256)
        if not os.path.exists(dest):
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.dirname(dest))
            # mkstemp's random name and retry loop cost more than the write: a name of 16
            # random bytes, created exclusively (0600, as mkstemp makes it), is as safe here
            tmp = f"{self._tmp}/{os.urandom(16).hex()}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, dest)
        self.remember(sha256, data)
        return sha256

"""Putting a cached blob's bytes at a task's input path: a hard link, a copy, or a copy that
hashes what it writes. Each goes through a temp file beside the destination, so an existing
destination (even a symlink a task left there) is replaced, never written through."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["TMP_SUFFIX", "copy_to", "copy_verified", "link_to", "write_new"]

TMP_SUFFIX = ".tmp"
_COPY_CHUNK = 1 << 30
_READ_CHUNK = 4 << 20
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# link() failures that mean "this file system or this file cannot be linked here"
_CANNOT_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


class _Mismatch(Exception):
    pass


def _via_tmp(dest: Path, make: Callable[[Path], None]) -> None:
    """Have `make` create a temp file beside dest, then move it over dest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".corral-{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        make(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


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


def write_new(dest: str, data: bytes, mode: int) -> os.stat_result | None:
    """Write a few KiB at dest, a name that does not exist yet (in a task directory just
    made), with permission bits mode, making its parent directories if need be: one
    create-exclusive open that follows no symlink. Its stat; None, with nothing written,
    when something is already there (then go through a temp file, `_via_tmp`)."""
    try:
        fd = os.open(dest, _NEW, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        fd = os.open(dest, _NEW, 0o600)
    except FileExistsError:
        return None
    try:
        view = memoryview(data)
        while view:  # a regular file takes it in one write; a full disk raises
            view = view[os.write(fd, view) :]
        os.fchmod(fd, mode)  # explicit, so the umask does not alter it
        return os.fstat(fd)
    finally:
        os.close(fd)


def copy_to(src: Path, dest: Path, mode: int) -> None:
    """Copy src to dest with permission bits mode."""

    def make(tmp: Path) -> None:
        with open(src, "rb") as fsrc:
            fd = os.open(tmp, _NEW, 0o600)
            try:
                _copy_data(fsrc.fileno(), fd)
                os.fchmod(fd, mode)  # explicit, so the umask does not alter it
            finally:
                os.close(fd)

    _via_tmp(dest, make)


def copy_verified(src: Path, dest: Path, mode: int, sha256: str) -> bool:
    """Copy src to dest, hashing the bytes as they are written: False (and no dest) if they
    are not the blob sha256, for a source that may be changing while it is read."""

    def make(tmp: Path) -> None:
        digest = hashlib.sha256()
        with open(src, "rb") as fsrc, open(os.open(tmp, _NEW, 0o600), "wb") as out:
            while chunk := fsrc.read(_READ_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            os.fchmod(out.fileno(), mode)
        if digest.hexdigest() != sha256:
            raise _Mismatch

    try:
        _via_tmp(dest, make)
    except _Mismatch:
        return False
    return True


def link_to(src: Path, dest: Path, mode: int) -> bool:
    """Hard-link src at dest and give the file (src too: one inode) permission bits mode.
    False, with nothing done, where the file system cannot link the two."""

    def make(tmp: Path) -> None:
        os.link(src, tmp)
        os.chmod(tmp, mode)

    try:
        _via_tmp(dest, make)
    except OSError as exc:
        if exc.errno in _CANNOT_LINK:
            return False
        raise
    return True

"""Task-directory snapshots and safe handling of task-relative paths from the wire.

Before a task runs the worker snapshots its directory; afterwards `changed_files` reports what
the task created or modified, so only those files are uploaded as outputs. Paths that arrive
from clients go through `safe_relpath` and `resolve_inside` so they cannot escape the task
directory.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

__all__ = [
    "Entry",
    "Snapshot",
    "UnsafePath",
    "changed_entries",
    "changed_files",
    "make_dir",
    "place_inside",
    "resolve_inside",
    "safe_name",
    "safe_relpath",
    "sha256_file",
    "snapshot",
]

_CHUNK = 1 << 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# More '**/' than this in one glob would blow up the variant expansion; nobody needs it.
_MAX_DOUBLE_STARS = 8


class UnsafePath(ValueError):
    """A task-relative path that could escape the task directory or is malformed."""


@dataclass(frozen=True)
class Entry:
    """What a snapshot remembers about one regular file."""

    size: int
    mtime_ns: int
    mode: int
    sha256: str | None


Snapshot = dict[str, Entry]


def safe_relpath(name: str) -> PurePosixPath:
    """Validate a task-relative path from the wire and return it normalised."""
    return PurePosixPath(*_safe_parts(name))


def _safe_parts(name: str) -> list[str]:
    """The components of a task-relative path from the wire, refused if it is unsafe."""
    if not isinstance(name, str):
        raise UnsafePath(f"path must be a string, not {type(name).__name__}")
    if not name:
        raise UnsafePath("path is empty")
    if "\x00" in name:
        raise UnsafePath(f"path {name!r} contains a NUL byte")
    if "\\" in name:
        # Refused outright: on some systems (or to some tools) it is a separator.
        raise UnsafePath(f"path {name!r} contains a backslash")
    if _CONTROL.search(name):
        raise UnsafePath(f"path {name!r} contains a control character")
    if name.startswith("/"):
        raise UnsafePath(f"path {name!r} is absolute")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"path {name!r} contains '..'")
    if not parts:
        raise UnsafePath(f"path {name!r} names the task directory itself")
    return parts


def safe_name(name: str) -> str:
    """`safe_relpath` as a string."""
    return "/".join(_safe_parts(name))


def place_inside(root: str, name: str) -> tuple[str, str]:
    """`safe_relpath` and `resolve_inside` in one, on strings (per input of every task:
    pathlib's objects cost more than the checks): the normalised relative path and where
    it is under root."""
    parts = _safe_parts(name)
    rel = "/".join(parts)
    if not _plain_below(root, parts):
        resolve_inside(Path(root), PurePosixPath(*parts))  # raises if it leads outside
    return rel, f"{root}/{rel}"


def resolve_inside(root: Path, rel: PurePosixPath) -> Path:
    """Return root / rel, refusing if existing symlinks along the way lead outside root."""
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UnsafePath(f"path {str(rel)!r} is not a plain relative path")
    target = Path(root, *rel.parts)
    if _plain_below(os.fspath(root), rel.parts):
        return target  # no symlink below root: the lexical path is where it leads
    real_root = os.path.realpath(root)
    # realpath resolves every existing component (symlinks included) and keeps the rest as is.
    real_target = os.path.realpath(target)
    if os.path.commonpath([real_root, real_target]) != real_root:
        raise UnsafePath(f"path {str(rel)!r} leads outside the task directory via a symlink")
    return target


def _plain_below(root: str, parts: Sequence[str]) -> bool:
    """Whether no existing component of `parts` under `root` is a symlink (one lstat each
    down to the first missing one; realpath of the whole would lstat every component of
    root's own path twice over)."""
    path = root
    for part in parts:
        path = f"{path}/{part}"
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return False
        except OSError:  # missing, or under a file: nothing further can lead anywhere
            return True
    return True


def make_dir(path: str | Path) -> None:
    """`path.mkdir(parents=True, exist_ok=True)` in one system call when its parent exists
    (pathlib's costs a dozen Python calls more, and an exception for each missing parent)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Yield (posix relpath, lstat) for regular files under root, never following symlinks."""
    stack: list[tuple[str, str]] = [(os.fspath(root), "")]
    while stack:
        path, prefix = stack.pop()
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            # A task may delete or chmod 000 its own directories; those files cannot be read anyway.
            continue
        for entry in entries:
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append((entry.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                yield rel, st


def snapshot(root: Path, known: dict[str, str] | None = None) -> Snapshot:
    """Record size, mtime and mode of every regular file under root (symlinks are skipped)."""
    known = known or {}
    return {
        rel: Entry(
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            mode=stat.S_IMODE(st.st_mode),
            sha256=known.get(rel),
        )
        for rel, st in _walk_files(root)
    }


def _glob_variants(pattern: str) -> list[str]:
    """Expand each '**/' into both itself (one or more dirs) and nothing (zero dirs)."""
    pieces = pattern.split("**/")
    if len(pieces) - 1 > _MAX_DOUBLE_STARS:
        raise ValueError(f"glob {pattern!r} has too many '**/' segments")
    variants = []
    for joins in itertools.product(("**/", ""), repeat=len(pieces) - 1):
        variants.append(pieces[0] + "".join(j + p for j, p in zip(joins, pieces[1:], strict=True)))
    return variants


def _matcher(globs: Sequence[str]) -> list[tuple[bool, str]]:
    """Pre-compile globs into (match_basename, fnmatch pattern) pairs."""
    compiled: list[tuple[bool, str]] = []
    for glob in globs:
        glob = glob.removeprefix("./")
        if "/" not in glob:
            compiled.append((True, glob))
        else:
            compiled.extend((False, variant) for variant in _glob_variants(glob))
    return compiled


def _matches(rel: str, compiled: list[tuple[bool, str]]) -> bool:
    """True when rel matches any compiled glob."""
    base = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(base if on_base else rel, pat) for on_base, pat in compiled)


def _differs(path: str, st: os.stat_result, prev: Entry | None) -> bool:
    """Whether a file is new or its content differs from the snapshot entry."""
    if prev is None:
        return True
    if st.st_size == prev.size and st.st_mtime_ns == prev.mtime_ns:
        return False
    if st.st_size != prev.size or prev.sha256 is None:
        return True
    # Same size, new mtime and a known hash: the file may just have been touched or rewritten.
    return sha256_file(path) != prev.sha256


def changed_files(root: Path, before: Snapshot, globs: Sequence[str] = ()) -> list[str]:
    """Sorted relpaths of regular files under root that are new or changed since `before`."""
    return [rel for rel, _ in changed_entries(root, before, globs)]


def changed_entries(
    root: Path, before: Snapshot, globs: Sequence[str] = ()
) -> list[tuple[str, os.stat_result]]:
    """`changed_files` with the lstat of each (what the walk found: no second stat)."""
    compiled = _matcher(globs)
    changed = []
    top = os.fspath(root)
    for rel, st in _walk_files(root):
        if compiled and not _matches(rel, compiled):
            continue
        if _differs(f"{top}/{rel}", st, before.get(rel)):
            changed.append((rel, st))
    return sorted(changed, key=lambda entry: entry[0])

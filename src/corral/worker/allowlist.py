"""The executable allowlist: which programs this worker agrees to run, by sha256.

The policy is `all` (anything runs) or `list` (only programs whose hash is on the worker's own
list, from `--allow sha256:HEX` and `--allow-file FILE`, or on the coordinator's list, from
`corral allow add`). The program is the file argv[0] resolves to, in the task directory or on
PATH; for a shell task it is /bin/sh itself. A worker on a loopback coordinator defaults to
`all`; a worker joining over the network defaults to `list`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .._net import is_loopback

__all__ = [
    "AllowPolicy",
    "HashCache",
    "allow_mode",
    "is_loopback_url",
    "parse_hash",
    "read_allow_file",
    "refusal",
    "resolve_program",
]

_HEX = frozenset("0123456789abcdef")


def parse_hash(text: str) -> str:
    """`sha256:HEX` or bare HEX as 64 lowercase hex digits; raises ValueError otherwise."""
    value = text.strip().lower().removeprefix("sha256:")
    if len(value) != 64 or not set(value) <= _HEX:
        raise ValueError(f"{text.strip()!r} is not sha256:<64 hex digits>")
    return value


def read_allow_file(path: Path) -> set[str]:
    """Hashes in a file, one a line (`sha256:HEX` or HEX, `#` comments and a note allowed)."""
    out = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                out.add(parse_hash(text.split()[0]))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
    return out


def is_loopback_url(url: str) -> bool:
    """Whether a coordinator URL names this machine (localhost or a loopback address)."""
    return is_loopback(urlsplit(url).hostname or "")


def allow_mode(server: str, allow_all: bool, enforce: bool, own: set[str]) -> str:
    """`all` or `list`: explicit flags first, then own hashes, then loopback means `all`."""
    if allow_all:
        return "all"
    if enforce or own:
        return "list"
    return "all" if is_loopback_url(server) else "list"


@dataclass
class AllowPolicy:
    """The worker's allowlist; `remote` is the coordinator's list, refreshed as it changes."""

    mode: str
    own: set[str] = field(default_factory=set)
    remote: set[str] = field(default_factory=set)

    def allows(self, sha256: str) -> bool:
        """Whether a program with this hash may run."""
        return self.mode == "all" or sha256 in self.own or sha256 in self.remote


def resolve_program(argv0: str, cwd: Path, path_env: str) -> Path | None:
    """The file `argv0` runs: relative to the task directory when it has a slash, else on PATH."""
    if "/" in argv0:
        candidate = Path(argv0) if argv0.startswith("/") else cwd / argv0
    else:
        found = shutil.which(argv0, path=path_env)
        if found is None:
            return None
        candidate = Path(found)
        if not candidate.is_absolute():
            candidate = cwd / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except OSError:
        return None
    return resolved if resolved.is_file() else None


class HashCache:
    """sha256 of files, remembered while their size, mtime and inode stay the same."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int, int], str]] = {}

    def sha256(self, path: Path) -> str:
        """The file's sha256, hashed once per version of the file."""
        st = path.stat()
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        hit = self._known.get(path)
        if hit and hit[0] == key:
            return hit[1]
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        value = digest.hexdigest()
        self._known[path] = (key, value)
        return value


def refusal(
    policy: AllowPolicy, argv0: str, program: Path | None, sha256: str | None
) -> str | None:
    """The error recorded on a refused task (`not_allowed: ...`), or None when it may run."""
    if policy.mode == "all":
        return None
    if program is None or sha256 is None:
        return f"not_allowed: {argv0} (not found, so it cannot be checked)"
    if policy.allows(sha256):
        return None
    return f"not_allowed: {os.fspath(program)} sha256:{sha256}"

"""A coordinator reached through a Unix socket: `unix:///path/to/socket` URLs.

A sandboxed task has no network; its worker relays its API calls through a socket in the
task's directory (worker/relay.py) and sets CORRAL_URL to `unix://` and the socket's absolute
path, as DOCKER_HOST does. The client and the worker's relay both reach a socket through
`UnixAddress`: a path over the 107 bytes a socket address may hold (a task directory deep in
a work directory) is reached through an open descriptor of its directory instead,
`/proc/self/fd/N/NAME`, which the kernel resolves like any path.

Rejected: abstract sockets (no file, no length limit) belong to a network namespace, so a
sandbox without network cannot reach them, and they have no permissions.
"""

from __future__ import annotations

import os

__all__ = ["UNIX_SCHEME", "UnixAddress", "unix_path", "unix_url"]

UNIX_SCHEME = "unix://"
_MAX = 100  # sun_path holds 108 bytes with its NUL; a margin for /proc/self/fd/NNNN/


def unix_url(path: str) -> str:
    """The URL of a coordinator reached through the socket at `path` (absolute)."""
    return UNIX_SCHEME + path


def unix_path(url: str) -> str | None:
    """The socket path of a `unix://` URL, else None."""
    if not url.startswith(UNIX_SCHEME):
        return None
    return url[len(UNIX_SCHEME) :].rstrip("/") or None


class UnixAddress:
    """A socket's path as bind and connect can take it; close it when done."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self.short = path
        if len(os.fsencode(path)) > _MAX:
            parent, name = os.path.split(path)
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            self._fd = os.open(parent or ".", flags)
            self.short = f"/proc/self/fd/{self._fd}/{name}"

    def close(self) -> None:
        """Close the directory's descriptor, if one was needed."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

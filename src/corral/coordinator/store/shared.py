"""What coordinators sharing one database share besides jobs and tasks: the interface.

Several coordinators on one PostgreSQL database serve one farm. Besides the rows every store
keeps, they must agree on secrets (the key that signs job tokens, the admin token, the TLS
CA), see the same blobs, and wake each other's held requests. The Store offers all three
(`_shared.py` writes them once for both backends); on SQLite, with one coordinator, the same
calls work and `notify` has no one to tell.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator

__all__ = ["SharedState"]


class SharedState(abc.ABC):
    """Secrets, blobs and wake-ups kept in the database (a part of Store)."""

    # what the backend's driver raises when the database fails or cannot be reached
    errors: tuple[type[Exception], ...] = ()

    @abc.abstractmethod
    def shared_value(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The value stored under `name`; the first caller's `make()` when none is yet (two
        coordinators starting at once both get the one that was written)."""

    @abc.abstractmethod
    def blobs_missing(self, hashes: Iterable[str]) -> set[str]:
        """Which of these blobs the database lacks."""

    @abc.abstractmethod
    def blob_put(self, sha256: str, size: int, chunks: Iterable[bytes]) -> None:
        """Store a blob, verified by the caller, in one transaction (a no-op when present)."""

    @abc.abstractmethod
    def blob_chunks(self, sha256: str) -> Iterator[bytes] | None:
        """A stored blob's bytes in order, or None when the database lacks it."""

    def notify(self, kinds: str) -> None:
        """Tell the other coordinators on this database that something of `kinds` happened
        (a hint: each also looks again on a timer). Nothing on a single-process backend."""
        return None

    def lead(self, name: str) -> bool:
        """Take, or keep, the one lead among coordinators for the work called `name` (the
        autoscaler): True while this coordinator holds it. Always True on a single-process
        backend; on PostgreSQL a session advisory lock on a connection of its own, lost with
        that connection (and so taken over by another coordinator when this one dies)."""
        return True

    @property
    def shared(self) -> bool:
        """Whether other coordinators may share this database (then `listen` hears them)."""
        return False

    async def listen(self, heard: Callable[[str], None]) -> None:
        """Call `heard(kinds)` for each other coordinator's `notify`, until cancelled;
        reconnects after losing the database. Returns at once when no one can notify."""
        return None

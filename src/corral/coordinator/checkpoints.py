"""Which checkpoint a task starts from, which one an attempt's failure discredits, and which
ones are kept: pure decisions over a task's saved checkpoints (the store keeps them,
store/_checkpoints.py; the worker saves and restores them, worker/checkpoints.py).

    save n ──► kept: the newest KEEP good ones (older ones, and discredited ones, go)
    lease  ──► restore_from: the newest good one, or None (start from scratch)
    failed ──► blame: the one the attempt restored, when it saved nothing newer

A checkpoint is discredited ("bad") when an attempt that restored it fails before saving a
newer one: it may be what made the attempt fail, so the next attempt starts from the one
before it, and once both are discredited, from scratch. A checkpoint is never retried forever
(HTCondor's known fault), and a lost worker discredits nothing: that was not the
checkpoint's doing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["KEEP", "Saved", "blame", "kept", "restore_from"]

KEEP = 2  # good checkpoints kept per task


@dataclass(frozen=True)
class Saved:
    """One saved checkpoint of a task: its number (larger is newer) and whether an attempt
    failed straight after restoring it."""

    n: int
    bad: bool = False


def restore_from(saved: Sequence[Saved]) -> int | None:
    """The checkpoint the next attempt starts from: the newest good one, None for scratch."""
    good = [s.n for s in saved if not s.bad]
    return max(good) if good else None


def blame(restored: int | None, saved: Sequence[Saved], succeeded: bool) -> int | None:
    """The checkpoint a finished attempt discredits, or None: the one it restored, when it
    failed and saved no newer one (an attempt that saved progress proved its start good)."""
    if succeeded or restored is None:
        return None
    if any(s.n > restored and not s.bad for s in saved):  # newer saves are good ones
        return None
    return restored if any(s.n == restored and not s.bad for s in saved) else None


def kept(saved: Sequence[Saved], keep: int = KEEP) -> set[int]:
    """The checkpoints to keep: the newest `keep` good ones, and discredited ones newer than
    all of those (so `corral show` still says why they are passed over, until a newer save)."""
    good = sorted((s.n for s in saved if not s.bad), reverse=True)[:keep]
    newest = max(good, default=0)
    return set(good) | {s.n for s in saved if s.bad and s.n > newest}

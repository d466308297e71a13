"""Lease policy: pure functions of the clock, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeasePolicy:
    """How long leases last and when a silent worker counts as lost."""

    timeout: float = 10.0
    heartbeat: float = 2.0

    def expires(self, now: float) -> float:
        """Expiry of a lease granted or extended at `now`."""
        return now + self.timeout

    def lost_before(self, now: float) -> float:
        """Workers whose last heartbeat is older than this are lost."""
        return now - self.timeout

    def next_check(self, now: float, earliest_expiry: float | None) -> float:
        """Seconds to sleep before looking for expired leases and lost workers again."""
        horizon = self.timeout if earliest_expiry is None else earliest_expiry - now
        return min(max(horizon, 0.05), self.timeout)

    def wake_for(self, expires: float, check_at: float) -> bool:
        """Whether a lease just granted, running out at `expires`, must wake the expiry loop
        that will look next at `check_at`. Rarely: it sleeps at most `timeout`, so it already
        looks by the time a lease granted now could run out (waking it after every lease
        cost six statements a lease call)."""
        return expires < check_at


def expired_to(
    worker_id: str, attempts: int, max_attempts: int, killing: bool = False
) -> tuple[str, str]:
    """The status and error of a task whose lease ran out: requeued, or failed when spent;
    killed when it was being evicted for a kill (`kill --checkpoint`): the kill stands, with
    the checkpoints it saved before."""
    if killing:
        return "killed", f"killed (worker {worker_id} lost while evicting it)"
    if attempts >= max_attempts:
        return "failed", f"worker lost on all {attempts} attempts"
    return "queued", f"worker {worker_id} lost; requeued"

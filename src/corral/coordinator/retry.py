"""Retry policy for finished attempts: a pure function of the facts, the clock passed in.

A task that asks for `retries=N` has a failed attempt (non-zero exit, or an error such as a
staging failure) re-queued up to N times, each after a growing delay (`not_before`), as long as
it has attempts left. A killed task is never retried. Without `retries` a failure is final.
"""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_BASE = 1.0  # seconds before the first retry; doubles with each retry
BACKOFF_CAP = 60.0


@dataclass(frozen=True)
class AttemptDecision:
    """What becomes of a task after an attempt: its status, retry time and recorded error."""

    status: str  # succeeded | failed | queued
    not_before: float | None
    error: str | None


def backoff(retry: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before retry number `retry` (1, 2, ...): base, 2*base, 4*base ..."""
    return float(min(cap, base * 2 ** max(retry - 1, 0)))


def effective_max_attempts(max_attempts: int, retries: int) -> int:
    """Asking for N retries allows at least N + 1 attempts."""
    return max(max_attempts, retries + 1)


def after_attempt(
    exit_code: int | None,
    error: str | None,
    attempt: int,
    max_attempts: int,
    retries: int,
    now: float,
    base: float = BACKOFF_BASE,
) -> AttemptDecision:
    """Decide the outcome of attempt number `attempt` (1-based) that ended as given."""
    if exit_code == 0 and error is None:
        return AttemptDecision("succeeded", None, None)
    if retries <= 0 or error == "killed":
        return AttemptDecision("failed", None, error)
    what = error or f"exit code {exit_code}"
    if attempt <= retries and attempt < max_attempts:
        delay = backoff(attempt, base)
        note = f"{what} on attempt {attempt}; retry {attempt} of {retries} in {delay:g} s"
        return AttemptDecision("queued", now + delay, note)
    return AttemptDecision("failed", None, f"{what}; gave up after {attempt} attempts")

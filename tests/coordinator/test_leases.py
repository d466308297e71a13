"""LeasePolicy: lease expiry, lost workers and when to look again, and what becomes of a task
whose lease ran out, as pure functions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.coordinator.leases import LeasePolicy, expired_to

FLOOR = 0.05  # next_check never sleeps less than this: no busy loop on a past expiry

times = st.floats(min_value=0, max_value=1e9, allow_nan=False)
timeouts = st.floats(min_value=FLOOR, max_value=1e4, allow_nan=False)
offsets = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False)


def test_defaults() -> None:
    policy = LeasePolicy()
    assert (policy.timeout, policy.heartbeat) == (10.0, 2.0)
    assert policy.heartbeat < policy.timeout
    with pytest.raises(AttributeError):
        policy.timeout = 1.0  # type: ignore[misc]


@given(now=times, timeout=timeouts)
def test_expiry_and_lost_are_one_timeout_either_side(now: float, timeout: float) -> None:
    policy = LeasePolicy(timeout=timeout)
    assert policy.expires(now) == now + timeout
    assert policy.lost_before(now) == now - timeout
    # a worker that heartbeat at `now` is not lost until its lease would have run out
    assert policy.lost_before(policy.expires(now)) == pytest.approx(now)


@given(now=times, timeout=timeouts)
def test_with_nothing_running_look_again_after_a_timeout(now: float, timeout: float) -> None:
    assert LeasePolicy(timeout=timeout).next_check(now, None) == timeout


@given(now=times, timeout=timeouts, offset=offsets)
def test_next_check_is_bounded(now: float, timeout: float, offset: float) -> None:
    delay = LeasePolicy(timeout=timeout).next_check(now, now + offset)
    assert FLOOR <= delay <= timeout
    assert math.isfinite(delay)


@given(now=times, timeout=timeouts, data=st.data())
def test_next_check_wakes_exactly_at_an_expiry_within_reach(
    now: float, timeout: float, data: st.DataObject
) -> None:
    offset = data.draw(st.floats(min_value=FLOOR, max_value=timeout))
    delay = LeasePolicy(timeout=timeout).next_check(now, now + offset)
    assert delay == pytest.approx(offset, abs=1e-6)  # up to the rounding of now + offset


@given(now=times, timeout=timeouts, earliest=st.none() | offsets, later=st.floats(0, 1e4))
def test_a_lease_granted_later_never_needs_to_wake_the_expiry_loop(
    now: float, timeout: float, earliest: float | None, later: float
) -> None:
    policy = LeasePolicy(timeout=timeout)
    due = None if earliest is None else now + earliest
    check_at = now + policy.next_check(now, due)
    assert not policy.wake_for(policy.expires(now + later), check_at)


def test_a_lease_running_out_before_the_next_look_wakes_the_expiry_loop() -> None:
    policy = LeasePolicy(timeout=10.0)
    assert policy.wake_for(expires=105.0, check_at=110.0)
    assert not policy.wake_for(expires=110.0, check_at=110.0)
    assert policy.wake_for(expires=105.0, check_at=math.inf)  # the loop has not started


@given(now=times, timeout=timeouts, overdue=st.floats(min_value=0, max_value=1e6))
def test_an_overdue_expiry_is_checked_almost_at_once(
    now: float, timeout: float, overdue: float
) -> None:
    assert LeasePolicy(timeout=timeout).next_check(now, now - overdue) == FLOOR


@given(now=times, timeout=timeouts, a=offsets, b=offsets)
def test_a_sooner_expiry_never_means_a_longer_sleep(
    now: float, timeout: float, a: float, b: float
) -> None:
    policy = LeasePolicy(timeout=timeout)
    soon, late = sorted((a, b))
    assert policy.next_check(now, now + soon) <= policy.next_check(now, now + late)


def test_an_expired_lease_requeues_until_the_attempts_are_spent() -> None:
    assert expired_to("w1", 1, 3) == ("queued", "worker w1 lost; requeued")
    assert expired_to("w2", 2, 3) == ("queued", "worker w2 lost; requeued")
    assert expired_to("w1", 3, 3) == ("failed", "worker lost on all 3 attempts")
    assert expired_to("w1", 1, 1) == ("failed", "worker lost on all 1 attempts")


@given(attempts=st.integers(0, 100), max_attempts=st.integers(1, 100))
def test_an_expired_task_fails_exactly_when_out_of_attempts(
    attempts: int, max_attempts: int
) -> None:
    status, error = expired_to("w", attempts, max_attempts)
    assert status == ("failed" if attempts >= max_attempts else "queued")
    assert error

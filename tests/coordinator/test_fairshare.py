"""Fair share as functions (coordinator/fairshare.py): who gets the next free slots."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.coordinator.fairshare import (
    Candidate,
    Owner,
    choose,
    decayed,
    fair_share_text,
    prefetch,
    ranked,
)


def tasks(owner: str, n: int, cost: int = 1, priority: int = 0, created: float = 0.0) -> list:
    return [Candidate(owner, priority, created, i, cost, (owner, i)) for i in range(n)]


def test_decay_halves_each_half_life() -> None:
    assert decayed(80.0, 3600.0, 3600.0) == pytest.approx(40.0)
    assert decayed(80.0, 7200.0, 3600.0) == pytest.approx(20.0)
    assert decayed(80.0, -5.0, 3600.0) == 80.0  # a clock behind never grows usage


def test_an_owner_with_no_usage_goes_before_one_with_much() -> None:
    owners = {"alice": Owner("alice", usage=5000.0, running=4)}
    chosen = choose(owners, tasks("alice", 10) + tasks("bob", 3, created=99.0), 4)
    assert chosen[:3] == [("bob", 0), ("bob", 1), ("bob", 2)]
    assert chosen[3] == ("alice", 0)


def test_within_an_owner_higher_priority_then_oldest() -> None:
    found = [
        Candidate("a", 0, 1.0, 0, 1, "old"),
        Candidate("a", 5, 9.0, 0, 1, "urgent"),
        Candidate("a", 0, 1.0, 1, 1, "old2"),
        Candidate("a", -1, 0.0, 0, 1, "later"),
    ]
    assert choose({}, found, 4) == ["urgent", "old", "old2", "later"]


def test_a_candidate_too_big_for_what_is_left_does_not_block_smaller_ones() -> None:
    found = [
        Candidate("a", 0, 1.0, 0, 1, "small-old"),
        Candidate("a", 0, 2.0, 0, 4, "big"),
        Candidate("a", 0, 3.0, 0, 2, "small-young"),
    ]
    assert choose({}, found, 4) == ["small-old", "small-young"]
    assert choose({}, found, 0) == []
    assert choose({}, [], 4) == []


def test_a_capped_owner_stops_at_its_cap_and_the_slot_goes_to_another() -> None:
    owners = {"alice": Owner("alice", running=2, cap=3)}
    chosen = choose(owners, tasks("alice", 10) + tasks("bob", 10), 6)
    assert Counter(o for o, _ in chosen) == {"alice": 1, "bob": 5}
    assert choose(owners, tasks("alice", 10), 6) == [("alice", 0)]  # a slot idles: the cap


def test_one_request_for_several_slots_spreads_them_between_equal_owners() -> None:
    chosen = choose({}, tasks("alice", 10) + tasks("bob", 10), 4)
    assert Counter(o for o, _ in chosen) == {"alice": 2, "bob": 2}


def test_the_why_text_names_who_goes_first_and_the_share_of_the_farm() -> None:
    waiting = [Owner("alice", usage=800.0), Owner("bob", usage=200.0)]
    text = fair_share_text("alice", waiting, 3600.0)
    assert text == (
        "alice has used 80% of the farm in the last hour (share 1); bob's tasks go first"
    )
    assert fair_share_text("bob", waiting, 3600.0) is None
    capped = [Owner("carol", running=2, cap=2)]
    assert fair_share_text("carol", capped, 1800.0) == (
        "carol runs 2 slots, the most allowed (--max-slots 2)"
    )
    assert [o.name for o in ranked(waiting)] == ["bob", "alice"]


owner_names = st.sampled_from(["alice", "bob", "carol", "dave"])
owner_facts = st.builds(
    Owner,
    owner_names,
    st.floats(0, 1e6),
    st.sampled_from([0.5, 1.0, 2.0, 3.0]),
    st.integers(0, 8),
    st.one_of(st.none(), st.integers(0, 10)),
)
candidates = st.lists(
    st.builds(
        lambda o, p, c, s, cost: Candidate(o, p, float(c), s, cost, (o, p, c, s, cost)),
        owner_names,
        st.integers(-2, 2),
        st.integers(0, 5),
        st.integers(0, 30),
        st.integers(1, 3),
    ),
    max_size=30,
    unique_by=lambda c: (c.owner, c.created, c.seq),
)


@given(facts=st.lists(owner_facts, max_size=4), found=candidates, capacity=st.integers(0, 12))
def test_never_over_a_cap_never_over_capacity_and_no_slot_idles_while_work_fits(
    facts: list[Owner], found: list[Candidate[tuple[object, ...]]], capacity: int
) -> None:
    owners = {o.name: o for o in facts}
    chosen = choose(owners, found, capacity)
    by_row = {c.row: c for c in found}
    taken = Counter[str]()
    for row in chosen:
        taken[by_row[row].owner] += by_row[row].cost
    assert sum(taken.values()) <= capacity
    for name, slots in taken.items():
        cap = owners[name].cap if name in owners else None
        assert cap is None or owners[name].running + slots <= cap
    # work-conserving: every task left out would not fit in the room left or under its cap
    room = capacity - sum(taken.values())
    for c in found:
        if c.row not in chosen:
            owner = owners.get(c.owner) or Owner(c.owner)
            assert c.cost > room or c.cost > owner.room(taken[c.owner])
    # within an owner, chosen in priority-then-age order (skipping only what did not fit)
    for name in taken:
        mine = [by_row[r] for r in chosen if by_row[r].owner == name]
        keys = [(-c.priority, c.created, c.seq) for c in mine]
        assert keys == sorted(keys)


@given(usage=st.floats(1.0, 1e6), capacity=st.integers(1, 8))
def test_no_usage_beats_any_usage(usage: float, capacity: int) -> None:
    owners = {"alice": Owner("alice", usage=usage)}
    chosen = choose(owners, tasks("alice", 20) + tasks("bob", 20), capacity)
    assert chosen[0][0] == "bob"


def _simulate(shares: dict[str, float], slots: int, steps: int) -> Counter[str]:
    """A farm of `slots` one-second slots, every owner always with work: each second the
    finished tasks are charged and the freed slots are leased again."""
    used = dict.fromkeys(shares, 0.0)
    running: list[str] = []
    ran = Counter[str]()
    for _ in range(steps):
        for name in running:  # every task takes one second
            used[name] += 1.0
        running = []
        owners = {n: Owner(n, used[n], shares[n]) for n in shares}
        found = [c for n in shares for c in tasks(n, slots)]
        running = [owner for owner, _ in choose(owners, found, slots)]
        ran.update(running)
    return ran


@given(slots=st.integers(1, 6), weight=st.sampled_from([2.0, 3.0]))
def test_weights_split_the_slots_in_their_ratio_over_time(slots: int, weight: float) -> None:
    ran = _simulate({"alice": weight, "bob": 1.0}, slots, 300)
    assert ran["alice"] / ran["bob"] == pytest.approx(weight, rel=0.05)


def test_prefetch_stops_for_an_owner_who_used_less_or_a_higher_priority_of_its_own() -> None:
    owners = {"alice": Owner("alice", usage=50.0), "bob": Owner("bob", usage=10.0)}
    job = tasks("alice", 5)
    assert prefetch(owners, job, tasks("bob", 1), 3) == []  # bob has used less: his turn
    assert prefetch(owners, job, [], 3) == [("alice", 0), ("alice", 1), ("alice", 2)]
    even = {"alice": Owner("alice", usage=10.0), "bob": Owner("bob", usage=10.0)}
    assert len(prefetch(even, job, tasks("bob", 1), 3)) == 3  # a tie is no better claim
    capped = {**owners, "bob": Owner("bob", usage=10.0, running=2, cap=2)}
    assert len(prefetch(capped, job, tasks("bob", 1), 3)) == 3  # bob can take no more
    urgent = [Candidate("alice", 5, 9.0, 0, 1, ("alice", "urgent"))]
    assert prefetch(owners, job, urgent, 3) == []  # her own higher priority first
    assert len(prefetch(owners, job, tasks("alice", 1, created=9.0), 3)) == 3  # same priority
    assert prefetch(owners, [], tasks("bob", 1), 3) == []

"""The Store contract for fair share and priorities (issue 16), on every backend: the lease
orders owners by usage per share, keeps caps, orders an owner's tasks by priority; usage is
charged when attempts end, decays, and adds up across coordinators sharing a database."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from test_store_contract import Backend, ok, spec, submit

from corral.coordinator.store import NewTask, Store

H = 3600.0


def _owners(store: Store, leased: list) -> Counter[str]:
    return Counter(store.job_owner(x.job_id) for x in leased)


def test_an_owner_who_has_used_the_farm_waits_behind_one_who_has_not(store: Store) -> None:
    submit(store, "a", 10, now=1.0, owner="alice")
    store.register_worker("w1", "w1", 2, {}, 1.0)
    first = store.lease("w1", 2, 10.0, 100.0, 100)
    assert _owners(store, first) == {"alice": 2}
    assert store.finish_many("w1", [(x.task_id, x.lease_id, ok()) for x in first], 30.0)
    # 2 tasks x 20 s, charged when they ended
    assert store.fair_share(30.0, ["alice"])["alice"].usage == pytest.approx(40.0)
    submit(store, "b", 3, now=31.0, owner="bob")  # later, but bob has used nothing
    nxt = store.lease("w1", 2, 32.0, 100.0, 100)
    assert _owners(store, nxt) == {"bob": 2}
    assert store.fair_share(32.0)["bob"].running == 2
    assert set(store.fair_share(32.0)) == {"alice", "bob"}  # by default, those with queued work
    store.lease("w1", 8, 33.0, 100.0, 100)
    assert set(store.fair_share(34.0)) == {"alice"}


def test_running_attempts_count_before_they_finish(store: Store) -> None:
    submit(store, "a", 4, owner="alice")
    store.register_worker("w1", "w1", 2, {}, 1.0)
    store.lease("w1", 2, 10.0, 100.0, 100)
    alice = store.fair_share(15.0, ["alice"])["alice"]
    assert (alice.running, alice.usage) == (2, pytest.approx(10.0))  # 2 slots x 5 s so far
    submit(store, "b", 4, now=16.0, owner="bob")
    assert _owners(store, store.lease("w1", 2, 17.0, 100.0, 100)) == {"bob": 2}


def test_usage_decays_with_the_half_life(store: Store) -> None:
    store.fair_share_half_life = H
    submit(store, "a", 1, owner="alice")
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (x,) = store.lease("w1", 1, 0.0, 1e9, 100)
    assert store.finish(x.task_id, x.lease_id, ok(), 100.0)
    facts = store.fair_share(100.0 + H, ["alice"])
    assert facts["alice"].usage == pytest.approx(50.0)
    # a later charge decays what the row held first: 50 + 10
    submit(store, "a2", 1, now=H, owner="alice")
    (y,) = store.lease("w1", 1, 90.0 + H, 1e9, 100)
    assert store.finish(y.task_id, y.lease_id, ok(), 100.0 + H)
    assert store.fair_share(100.0 + H, ["alice"])["alice"].usage == pytest.approx(60.0)


def test_expired_and_killed_running_attempts_are_charged(store: Store) -> None:
    submit(store, "a", 2, owner="alice", max_attempts=1)
    store.register_worker("w1", "w1", 2, {}, 1.0)
    a, b = store.lease("w1", 2, 10.0, 20.0, 100)
    store.kill([a.task_id], 15.0)  # 5 s
    store.expire(20.0)  # b ran out: 10 s
    alice = store.fair_share(20.0, ["alice"])["alice"]
    assert (alice.usage, alice.running) == (pytest.approx(15.0, rel=1e-3), 0)  # 5 s decayed


def test_a_cap_holds_an_owners_running_slots_and_others_take_the_rest(store: Store) -> None:
    store.set_owner_share("alice", None, 2)
    submit(store, "a", 10, owner="alice")
    submit(store, "b", 10, now=2.0, owner="bob")
    store.register_worker("w1", "w1", 8, {}, 1.0)
    assert _owners(store, store.lease("w1", 8, 10.0, 100.0, 100)) == {"alice": 2, "bob": 6}
    assert _owners(store, store.lease("w1", 8, 11.0, 100.0, 100)) == {"bob": 4}
    store.set_owner_share("alice", None, 0)  # 0 lifts the cap
    assert _owners(store, store.lease("w1", 8, 12.0, 100.0, 100)) == {"alice": 8}


def test_a_capped_owner_alone_still_stops_at_its_cap(store: Store) -> None:
    store.set_owner_share("alice", 2.0, 3)
    submit(store, "a", 10, owner="alice")
    store.register_worker("w1", "w1", 8, {}, 1.0)
    assert len(store.lease("w1", 8, 10.0, 100.0, 100)) == 3
    assert store.lease("w1", 8, 11.0, 100.0, 100) == []


def test_shares_and_caps_are_kept_until_changed(store: Store) -> None:
    assert store.owner_shares() == {}
    store.set_owner_share("alice", 2.0, None)
    store.set_owner_share("alice", None, 4)
    store.set_owner_share("bob", None, None)
    assert store.owner_shares() == {"alice": (2.0, 4), "bob": (1.0, None)}
    facts = store.fair_share(1.0, ["alice", "carol"])
    assert (facts["alice"].share, facts["alice"].cap) == (2.0, 4)
    assert (facts["carol"].share, facts["carol"].cap, facts["carol"].usage) == (1.0, None, 0.0)


def test_weights_split_a_busy_farm_two_to_one(store: Store) -> None:
    store.set_owner_share("alice", 2.0, None)
    submit(store, "a", 200, owner="alice")
    submit(store, "b", 200, owner="bob")
    store.register_worker("w1", "w1", 3, {}, 1.0)
    ran = Counter[str]()
    now = 10.0
    for _ in range(40):  # every task takes one second; the freed slots are leased again
        leased = store.lease("w1", 3, now, now + 100.0, 100)
        ran += _owners(store, leased)
        now += 1.0
        store.finish_many("w1", [(x.task_id, x.lease_id, ok()) for x in leased], now)
    assert ran["alice"] / ran["bob"] == pytest.approx(2.0, rel=0.1)


def test_priority_orders_an_owners_queue_and_a_task_may_set_its_own(store: Store) -> None:
    submit(store, "old", 3, now=1.0, owner="alice")
    store.create_job(
        "new", "new", "alice", 2.0, [NewTask(f"new-t{i}", i, spec()) for i in range(2)], False, 5
    )
    store.add_tasks("new", 3.0, [NewTask("new-t2", 2, spec(priority=-1))])
    assert store.get_job("new").priority == 5
    store.register_worker("w1", "w1", 6, {}, 1.0)
    order = [x.task_id for x in store.lease("w1", 6, 10.0, 100.0, 100)]
    assert order == ["new-t0", "new-t1", "old-t0", "old-t1", "old-t2", "new-t2"]


def test_priority_does_not_jump_another_owners_turn(store: Store) -> None:
    store.create_job("a", "a", "alice", 1.0, [NewTask("a0", 0, spec())], False, 100)
    submit(store, "b", 1, now=2.0, owner="bob")
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (first,) = store.lease("w1", 1, 10.0, 100.0, 100)
    assert store.finish(first.task_id, first.lease_id, ok(), 20.0)
    submit(store, "a2", 1, now=21.0, owner="alice", priority=1000)
    submit(store, "b2", 1, now=21.0, owner="bob")
    (second,) = store.lease("w1", 1, 22.0, 100.0, 100)
    assert store.job_owner(second.job_id) != store.job_owner(first.job_id)


def test_coordinators_sharing_a_database_add_up_their_charges(
    store: Store, backend: Backend
) -> None:
    ids = submit(store, "a", 40, owner="alice")
    other = backend.open()
    store.register_worker("w1", "w1", 20, {}, 1.0)
    store.register_worker("w2", "w2", 20, {}, 1.0)
    mine = store.lease("w1", 20, 10.0, 100.0, 100)
    theirs = other.lease("w2", 20, 10.0, 100.0, 100)
    assert len({x.task_id for x in mine + theirs}) == len(ids)
    done = threading.Barrier(2)

    def finish(s: Store, worker: str, leased: list) -> None:
        done.wait()
        for x in leased:  # one charge a result, racing the other coordinator's
            s.finish(x.task_id, x.lease_id, ok(), 11.0)

    threads = [
        threading.Thread(target=finish, args=(store, "w1", mine)),
        threading.Thread(target=finish, args=(other, "w2", theirs)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert store.fair_share(11.0, ["alice"])["alice"].usage == pytest.approx(40.0)


def test_prefetch_of_a_job_stops_where_another_owner_s_turn_begins(store: Store) -> None:
    submit(store, "a", 10, owner="alice")
    store.register_worker("w1", "w1", 2, {}, 1.0)
    store.lease("w1", 2, 10.0, 100.0, 100)  # alice's, running
    assert len(store.lease("w1", 4, 11.0, 100.0, 100, job_id="a")) == 4  # nobody else waits
    submit(store, "b", 3, now=12.0, owner="bob")
    assert store.lease("w1", 4, 13.0, 100.0, 100, job_id="a") == []  # bob goes first
    assert _owners(store, store.lease("w1", 4, 13.0, 100.0, 100)) == {"bob": 3, "alice": 1}


def test_prefetch_of_a_job_never_jumps_a_higher_priority_one(store: Store) -> None:
    submit(store, "low", 5, owner="alice")
    store.register_worker("w1", "w1", 2, {}, 1.0)
    store.lease("w1", 1, 10.0, 100.0, 100)
    store.create_job("high", "high", "alice", 11.0, [NewTask("h0", 0, spec())], False, 9)
    assert store.lease("w1", 3, 12.0, 100.0, 100, job_id="low") == []
    assert [x.task_id for x in store.lease("w1", 1, 12.0, 100.0, 100)] == ["h0"]
    assert len(store.lease("w1", 3, 13.0, 100.0, 100, job_id="low")) == 3


def test_usage_shares_and_caps_outlive_the_store_that_wrote_them(
    store: Store, backend: Backend
) -> None:
    store.set_owner_share("alice", 3.0, 5)
    submit(store, "a", 1, owner="alice")
    store.register_worker("w1", "w1", 1, {}, 1.0)
    (x,) = store.lease("w1", 1, 10.0, 100.0, 100)
    assert store.finish(x.task_id, x.lease_id, ok(), 17.0)
    store.close()
    again = backend.open().fair_share(17.0, ["alice"])["alice"]
    assert (again.usage, again.share, again.cap) == (pytest.approx(7.0), 3.0, 5)

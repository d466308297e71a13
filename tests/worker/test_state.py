"""The worker state (state.py): events in, decisions out; no sockets, no processes, no clock."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.protocol import Assignment, InputRef, TaskSpec
from corral.worker import Ask, WorkerState
from corral.worker.prefetch import GIVE_BACK, HORIZON, MAX_PER_SLOT
from corral.worker.state import STORED_MAX


def blob(data: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(data).hexdigest(), data


def task(
    task_id: str,
    cpus: int = 1,
    inline: dict[str, bytes] | None = None,
    job: str = "j1",
    lease: str = "",
) -> Assignment:
    inline = inline or {}
    inputs = {f"in{i}": InputRef(sha, len(data)) for i, (sha, data) in enumerate(inline.items())}
    spec = TaskSpec(["true"], inputs=inputs, requires={"cpus": str(cpus)} if cpus > 1 else {})
    return Assignment(task_id, job, lease or f"l-{task_id}", 1, 0.0, spec, inline=inline)


def ran_short_tasks(state: WorkerState, n: int = 3, seconds: float = 0.001) -> None:
    """Let `n` quick tasks run to the end, so the mean run time allows prefetch."""
    now = 0.0
    for i in range(n):
        a = task(f"warm{i}", job="short")
        state.granted(a, now)
        assert state.try_start(a.task_id, now) == "started"
        now += seconds
        state.finished(a, now, ran=True)


# free slots and lease calls
def test_a_fresh_worker_asks_for_its_slots_and_nothing_ahead() -> None:
    assert WorkerState(4).lease_ask(0.0) == Ask(4, 0, "")


def test_held_tasks_take_their_cpus_in_slots_waiting_or_not() -> None:
    state = WorkerState(4)
    state.granted(task("a", cpus=3), 0.0)
    assert state.lease_ask(0.0) == Ask(1, 0, "")  # waiting: its slots are held all the same
    state.granted(task("b"), 0.0)
    assert state.held_slots() == 4 and state.lease_ask(0.0) is None


def test_a_task_asking_for_more_than_the_slots_still_runs_alone() -> None:
    state = WorkerState(2)
    state.granted(task("big", cpus=8), 0.0)
    assert state.try_start("big", 0.0) == "started"
    state.granted(task("small"), 0.0)
    assert state.try_start("small", 0.0) == "waiting"


def test_a_waiting_task_starts_once_the_slot_frees() -> None:
    state = WorkerState(1)
    a, b = task("a"), task("b")
    state.granted(a, 0.0)
    state.granted(b, 0.0)
    assert state.try_start("a", 0.0) == "started"
    assert state.try_start("b", 0.0) == "waiting"
    assert state.give_back_in("b", 1.0) == GIVE_BACK - 1.0
    state.finished(a, 1.0, ran=True)
    assert state.try_start("b", 1.0) == "started"


def test_a_task_with_no_slot_for_give_back_seconds_goes_back() -> None:
    state = WorkerState(1)
    state.granted(task("a"), 0.0)
    state.granted(task("b"), 0.0)
    state.try_start("a", 0.0)
    assert state.try_start("b", GIVE_BACK - 0.01) == "waiting"
    assert state.try_start("b", GIVE_BACK) == "expired"
    held = state.tasks["b"]
    assert held.released and not held.presented
    assert state.try_start("b", GIVE_BACK) == "gone"
    assert state.leases() == ["l-a"]


# blocked tasks lend their slots (client/_current.py)
def test_a_blocked_task_lends_its_slots() -> None:
    state = WorkerState(1)
    parent, child = task("parent"), task("child")
    state.granted(parent, 0.0)
    state.try_start("parent", 0.0)
    assert state.lease_ask(0.0) is None
    assert state.set_blocked(["parent"]) is True
    assert state.set_blocked(["parent"]) is False  # no change: no recount
    assert state.lease_ask(0.0) == Ask(1, 0, "")
    state.granted(child, 0.0)
    assert state.try_start("child", 0.0) == "started"
    assert state.set_blocked([]) is True  # the wait ended: both run, for a moment
    assert state.busy_slots() == 2 and state.lease_ask(0.0) is None
    state.finished(child, 1.0, ran=True)
    assert state.busy_slots() == 1 and state.blocked == set()


def test_blocked_slots_let_a_waiting_task_start() -> None:
    state = WorkerState(2)
    for t in ("a", "b", "c"):
        state.granted(task(t), 0.0)
    state.try_start("a", 0.0)
    state.try_start("b", 0.0)
    assert state.try_start("c", 0.0) == "waiting"
    state.set_blocked(["a"])
    assert state.try_start("c", 0.0) == "started"


# prefetch (prefetch.py decides the room; the state supplies the facts)
def test_quick_tasks_make_room_ahead_for_their_job() -> None:
    state = WorkerState(2)
    ran_short_tasks(state)
    assert state.lease_ask(1.0) == Ask(2 + 2 * MAX_PER_SLOT, 2 * MAX_PER_SLOT, "short")


def test_a_task_running_long_stops_prefetch() -> None:
    state = WorkerState(2)
    ran_short_tasks(state)
    a = task("long")
    state.granted(a, 1.0)
    state.try_start("long", 1.0)
    ahead = 2 * MAX_PER_SLOT
    assert state.lease_ask(1.0 + HORIZON / 2) == Ask(1 + ahead, ahead, "short")
    assert state.lease_ask(1.0 + 2 * HORIZON) == Ask(1, 0, "")


def test_desktop_mode_never_leases_ahead() -> None:
    state = WorkerState(2, prefetch=False)
    ran_short_tasks(state)
    assert state.lease_ask(1.0) == Ask(2, 0, "")


def test_with_tasks_waiting_ask_again_only_once_half_the_room_is_free() -> None:
    state = WorkerState(1)
    ran_short_tasks(state)  # room for MAX_PER_SLOT (8) ahead of the one slot
    held = [task(f"t{i}") for i in range(MAX_PER_SLOT)]
    for a in held:
        state.granted(a, 1.0)
    state.try_start("t0", 1.0)
    assert state.waiting() == 7 and state.lease_ask(1.0) is None  # room for 1 of 9
    for i in range(2):  # room for 2, then 3: under half
        state.finished(held[i], 1.0, ran=True)
        state.try_start(f"t{i + 1}", 1.0)
        assert state.lease_ask(1.0) is None
    state.finished(held[2], 1.0, ran=True)
    assert state.lease_ask(1.0) == Ask(4, MAX_PER_SLOT, "j1")  # the job that ran last


def test_run_times_count_only_tasks_that_ran_to_the_end() -> None:
    state = WorkerState(1)
    a = task("a", job="j9")
    state.granted(a, 0.0)
    state.try_start("a", 0.0)
    state.finished(a, 5.0, ran=False)  # abandoned: the coordinator was unreachable
    assert state.times.mean is None and state.short_job == ""
    b = task("b", job="j9")
    state.granted(b, 5.0)
    state.try_start("b", 6.0)
    state.finished(b, 6.5, ran=True)
    assert state.times.mean == 0.5 and state.short_job == "j9"


# cancelled, released, drained
def test_a_cancelled_task_is_not_presented_but_holds_its_slots_until_it_ends() -> None:
    state = WorkerState(1)
    a = task("a")
    state.granted(a, 0.0)
    state.try_start("a", 0.0)
    assert state.cancel(["l-a", "l-unknown"]) == ["a"]
    assert state.leases() == [] and state.presented() == []
    assert state.lease_ask(0.0) is None  # its process is still being killed
    held = state.finished(a, 1.0, ran=True)
    assert held is not None and held.cancelled and state.lease_ask(1.0) == Ask(1, 0, "")


def test_a_cancelled_waiting_task_never_starts() -> None:
    state = WorkerState(1)
    state.granted(task("a"), 0.0)
    state.cancel(["l-a"])
    assert state.try_start("a", 0.0) == "gone"


# evicted (eviction.py)
def test_an_evicted_running_task_stays_presented_until_its_process_has_ended() -> None:
    state = WorkerState(2)
    state.granted(task("a"), 0.0)
    state.try_start("a", 0.0)
    assert state.evict(["l-a", "l-unknown"], "owner", 5.0, 10.0) == ["a"]
    held = state.tasks["a"]
    assert (held.reason, held.evict_by, held.released) == ("owner", 15.0, False)
    # its lease stays live for the checkpoint to be recorded; the desktop lets go of it
    assert state.leases() == ["l-a"] and state.evicting() == ["l-a"] and state.lent() == []
    assert state.evict_in("a", 12.0) == 3.0 and state.evict_in("a", 20.0) == 0.0
    assert state.evicted("a") is True
    assert held.released and state.leases() == [] and state.evicting() == []
    assert state.evicted("a") is False and state.evicted("nope") is False


def test_a_second_eviction_keeps_the_first_deadline_and_reason_unless_sooner() -> None:
    state = WorkerState(1)
    state.granted(task("a"), 0.0)
    state.try_start("a", 0.0)
    assert state.evict(["l-a"], "evicted", 0.0, 30.0) == ["a"]
    assert state.evict(["l-a"], "shutdown", 1.0, 60.0) == []  # already being terminated
    assert (state.tasks["a"].evict_by, state.tasks["a"].reason) == (30.0, "evicted")
    state.evict(["l-a"], "shutdown", 2.0, 5.0)
    assert state.tasks["a"].evict_by == 7.0


def test_an_evicted_waiting_task_goes_back_at_once_and_never_starts() -> None:
    state = WorkerState(1)
    for t in ("a", "b"):
        state.granted(task(t), 0.0)
    state.try_start("a", 0.0)
    assert state.evict(["l-a", "l-b"], "shutdown", 0.0, 10.0) == ["a"]
    b = state.tasks["b"]
    assert b.released and b.reason == "shutdown" and b.evict_by is None
    assert state.try_start("b", 0.0) == "gone" and state.evicting() == ["l-a"]


def test_a_cancelled_task_is_not_evicted_and_an_evicting_one_can_still_be_cancelled() -> None:
    state = WorkerState(2)
    for t in ("a", "b"):
        state.granted(task(t), 0.0)
        state.try_start(t, 0.0)
    state.cancel(["l-a"])
    assert state.evict(["l-a", "l-b"], "evicted", 0.0, 10.0) == ["b"]
    state.cancel(["l-b"])  # killed outright during its grace: no checkpoint, no give-back
    assert state.evicted("b") is False and not state.tasks["b"].released
    assert state.evicting() == []


def test_drain_gives_back_the_waiting_tasks_and_asks_for_nothing() -> None:
    state = WorkerState(1)
    ran_short_tasks(state)
    for t in ("a", "b", "c"):
        state.granted(task(t), 1.0)
    state.try_start("a", 1.0)
    state.cancel(["l-c"])
    assert state.drain() == ["b"]  # c was cancelled already: nothing to give back
    assert state.tasks["b"].released and not state.tasks["a"].released
    assert state.leases() == ["l-a"] and state.lease_ask(1.0) is None
    assert state.try_start("b", 1.0) == "gone"


def test_an_old_attempt_ending_leaves_a_new_attempt_of_the_task_held() -> None:
    state = WorkerState(2)
    old, new = task("a", lease="l1"), task("a", lease="l2")
    state.granted(old, 0.0)
    state.granted(new, 1.0)
    assert state.finished(old, 2.0, ran=True) is None
    assert state.leases() == ["l2"]


# inline blobs
def test_inline_blobs_stay_while_a_task_that_came_with_them_is_held() -> None:
    state = WorkerState(2)
    x, y = blob(b"shared function"), blob(b"a's own call")
    a, b = task("a", inline=dict([x, y])), task("b", inline=dict([x]))
    state.granted(a, 0.0)
    state.granted(b, 0.0)
    assert state.inline_held() == {x[0], y[0]}
    state.finished(a, 1.0, ran=True)
    assert state.inline(x[0]) == x[1] and state.inline(y[0]) is None
    state.finished(b, 2.0, ran=True)
    assert state.inline_held() == set()


def test_a_task_ending_between_anothers_grant_and_its_staging_keeps_its_inputs() -> None:
    # A runs alone; B's grant arrives; A finishes before B has staged its inputs. With one
    # dict cleared whenever the worker looked idle, B then fetched its input with GET /blobs.
    state = WorkerState(1)
    fn = blob(b"the function, the same for every task")
    call_a, call_b = blob(b"call a"), blob(b"call b")
    a = task("a", inline=dict([fn, call_a]))
    state.granted(a, 0.0)
    assert state.try_start("a", 0.0) == "started"
    b = task("b", inline=dict([fn, call_b]))
    state.granted(b, 0.1)  # granted: not started (A holds the only slot)
    state.finished(a, 0.2, ran=True)  # A's asyncio task ends before B's runs
    assert state.try_start("b", 0.2) == "started"
    assert state.inline(fn[0]) == fn[1] and state.inline(call_b[0]) == call_b[1]
    assert state.inline(call_a[0]) is None  # no held task needs it any more


def test_a_task_cancelled_or_released_keeps_its_inline_blobs_until_it_ends() -> None:
    state = WorkerState(1)
    x = blob(b"x")
    a = task("a", inline=dict([x]))
    state.granted(a, 0.0)
    state.cancel(["l-a"])
    assert state.inline(x[0]) == x[1]
    state.finished(a, 0.0, ran=False)
    assert state.inline(x[0]) is None


# blobs the coordinator holds
def test_stored_hashes_are_forgotten_all_at_once_past_the_cap() -> None:
    state = WorkerState(1)
    state.remember_stored(f"{i:064x}" for i in range(STORED_MAX + 1))
    assert len(state.stored) == STORED_MAX + 1
    state.remember_stored(["f" * 64])
    assert state.stored == {"f" * 64}


# any order of events keeps the books straight
_EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            ["grant", "start", "finish", "cancel", "evict", "evicted", "block", "drain"]
        ),
        st.integers(0, 5),  # which task
        st.integers(1, 3),  # its cpus, when granted
        st.floats(0.0, 1.0),  # time passing
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_EVENTS)
def test_any_sequence_of_events_keeps_the_invariants(
    events: list[tuple[str, int, int, float]],
) -> None:
    state = WorkerState(3)
    blobs = [blob(bytes([i])) for i in range(3)]
    now, leases = 0.0, 0
    for kind, i, cpus, dt in events:
        now += dt
        tid = f"t{i}"
        held = state.tasks.get(tid)
        if kind == "grant" and held is None and not state.draining:
            leases += 1
            inline = dict(blobs[i % 3 : i % 3 + 2])
            state.granted(task(tid, cpus, inline, lease=f"l{leases}"), now)
        elif kind == "start" and held is not None:
            busy, waiting = state.busy_slots(), held.started is None
            step = state.try_start(tid, now)
            if step == "started" and waiting:  # it starts now: it fits beside the others
                assert busy == 0 or busy + held.need <= state.slots
        elif kind == "finish" and held is not None:
            state.finished(held.assignment, now, ran=held.started is not None)
        elif kind == "cancel" and held is not None:
            state.cancel([held.assignment.lease_id])
        elif kind == "evict" and held is not None:
            state.evict([held.assignment.lease_id], "owner", now, cpus)
        elif kind == "evicted":
            state.evicted(tid)
        elif kind == "block":
            state.set_blocked([tid] if held is not None and held.started is not None else [])
        elif kind == "drain":
            state.drain()
        needed = {sha for h in state.tasks.values() for sha in h.assignment.inline}
        assert state.inline_held() == needed
        assert state.busy_slots() <= state.held_slots()
        assert set(state.leases()) <= {h.assignment.lease_id for h in state.tasks.values()}
        ask = state.lease_ask(now)
        if ask is not None:
            assert 0 < ask.max <= state.slots + ask.prefetch and not state.draining
        if state.draining:
            assert all(h.started is not None or not h.presented for h in state.tasks.values())
        # only started tasks are evicting, and an evicting one is presented
        assert set(state.evicting()) <= set(state.leases())
        assert all(h.started is not None for h in state.tasks.values() if h.evict_by is not None)

"""The autoscaling policy (issue 16): pure, so tested with facts and no processes."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.coordinator.scaling import (
    Decision,
    Launch,
    Offer,
    Provider,
    QueueClass,
    WorkerState,
    decide,
    describe,
)

NOW = 10_000.0
CPU = Provider("local", Offer(slots=4), max=4, idle_timeout=60, max_launches=10)
GPU = Provider(
    "ssh:gpu-hosts", Offer(slots=2, labels={"gpu": "yes"}), max=2, idle_timeout=60, max_launches=10
)


def idle(
    id: str, provider: str | None = "local", since: float = 0.0, slots: int = 4
) -> WorkerState:
    return WorkerState(id, provider, busy=0, slots=slots, idle_since=since)


def busy(id: str, provider: str | None = "local", n: int = 4, slots: int = 4) -> WorkerState:
    return WorkerState(id, provider, busy=n, slots=slots, idle_since=None)


def run(
    queue: Sequence[QueueClass] = (),
    workers: Sequence[WorkerState] = (),
    providers: Sequence[Provider] = (CPU,),
    pending: Sequence[Launch] = (),
) -> Decision:
    return decide(queue, workers, providers, pending, NOW)


def test_nothing_to_do() -> None:
    assert run() == Decision({}, (), (), ())


def test_scales_up_for_the_queue_by_whole_workers() -> None:
    got = run([QueueClass({}, 9)])
    assert got.launches == {"local": 3}
    assert got.reasons == (
        "9 tasks need no particular worker; provider local can start 4 more: starting 3",
    )


def test_free_slots_are_used_before_launching() -> None:
    assert run([QueueClass({}, 4)], [idle("w1", since=NOW)]).launches == {}
    assert run([QueueClass({}, 5)], [idle("w1", since=NOW)]).launches == {"local": 1}


def test_no_double_launch_while_a_launch_or_a_starting_worker_is_pending() -> None:
    pending = [Launch("l1", "local", NOW - 5)]
    assert run([QueueClass({}, 4)], pending=pending).launches == {}
    assert run([QueueClass({}, 6)], pending=pending).launches == {"local": 1}
    starting = WorkerState("w1", "local", 0, 4, None, status="launching")
    assert run([QueueClass({}, 4)], [starting]).launches == {}


def test_respects_max_counting_running_and_launching_workers() -> None:
    workers = [busy("w1"), busy("w2"), WorkerState("w3", "local", 2, 4, None, status="draining")]
    got = run([QueueClass({}, 100)], workers, pending=[Launch("l1", "local", NOW)])
    assert got.launches == {}
    assert "provider local can start no more now" in got.reasons[0]


def test_growth_rate_limits_launches_per_decision() -> None:
    slow = Provider("local", Offer(slots=1), max=100, max_launches=3)
    assert run([QueueClass({}, 50)], providers=[slow]).launches == {"local": 3}


def test_scales_up_only_for_tasks_some_provider_can_run() -> None:
    got = run([QueueClass({"label.gpu": "yes"}, 3)])
    assert got.launches == {}
    assert got.reasons == ("3 tasks need label gpu=yes; no provider's workers could run them",)
    too_big = run([QueueClass({"cpus": "8"}, 1)])
    assert too_big.launches == {}


def test_picks_the_provider_that_fits_and_says_why() -> None:
    gpu_at_one = Provider("ssh:gpu-hosts", GPU.offer, max=1)
    got = run([QueueClass({"label.gpu": "yes"}, 3)], providers=[CPU, gpu_at_one])
    assert got.launches == {"ssh:gpu-hosts": 1}
    assert got.reasons == (
        "3 tasks need label gpu=yes; provider ssh:gpu-hosts can start 1 more: starting 1",
    )


def test_prefers_the_provider_needing_fewest_launches() -> None:
    small = Provider("small", Offer(slots=1), max=10, max_launches=10)
    big = Provider("big", Offer(slots=8), max=10, max_launches=10)
    assert run([QueueClass({}, 8)], providers=[small, big]).launches == {"big": 1}


def test_overflow_goes_to_the_next_provider() -> None:
    a = Provider("a", Offer(slots=2), max=1)
    b = Provider("b", Offer(slots=1), max=5)
    assert run([QueueClass({}, 4)], providers=[a, b]).launches == {"a": 1, "b": 2}


def test_launched_workers_serve_other_classes_too() -> None:
    got = run([QueueClass({"label.gpu": "yes"}, 1), QueueClass({}, 1)], providers=[GPU])
    assert got.launches == {"ssh:gpu-hosts": 1}


def test_min_memory_is_matched_by_the_scheduler() -> None:
    small = Provider("small", Offer(slots=4, memory=2 * 2**30), max=4)
    large = Provider("large", Offer(slots=4, memory=64 * 2**30), max=4)
    got = run([QueueClass({"min_memory": "16G"}, 2)], providers=[small, large])
    assert got.launches == {"large": 1}


def test_short_tasks_wait_for_busy_slots_rather_than_a_new_worker() -> None:
    slow_start = Provider("local", Offer(slots=4), max=4, startup=120)
    workers = [busy("w1")]
    assert run([QueueClass({}, 8, expected_seconds=1.0)], workers, [slow_start]).launches == {}
    got = run([QueueClass({}, 8, expected_seconds=600.0)], workers, [slow_start])
    assert got.launches == {"local": 2}


def test_min_kept_with_no_queue() -> None:
    floor = Provider("local", Offer(slots=4), max=4, min=2)
    got = run(providers=[floor])
    assert got.launches == {"local": 2}
    assert got.reasons == ("provider local keeps at least 2 workers: starting 2",)
    assert run(workers=[idle("w1")], providers=[floor], pending=[Launch("l", "local", NOW)]) == (
        Decision({}, (), (), ())
    )


def test_drains_idle_provider_workers_past_idle_timeout_only() -> None:
    workers = [
        idle("old", since=NOW - 100),
        idle("fresh", since=NOW - 10),
        idle("mine", provider=None, since=0),
        busy("b"),
    ]
    got = run(workers=workers)
    assert got.drain == ("old",)
    assert got.reasons == (
        "worker old of provider local idle for 100 s (idle_timeout 60 s) and not needed: draining",
    )


def test_an_idle_worker_the_queue_needs_is_kept() -> None:
    assert run([QueueClass({}, 1)], [idle("old", since=0)]).drain == ()


def test_an_idle_worker_the_queue_cannot_use_is_drained() -> None:
    got = run([QueueClass({"label.gpu": "yes"}, 1)], [idle("old", since=0)], [CPU, GPU])
    assert got.drain == ("old",) and got.launches == {"ssh:gpu-hosts": 1}


def test_drain_stops_at_min() -> None:
    floor = Provider("local", Offer(slots=4), max=4, min=1, idle_timeout=60)
    got = run(workers=[idle("a", since=0), idle("b", since=50)], providers=[floor])
    assert got.drain == ("a",)


def test_launches_that_do_not_join_in_time_are_given_up_and_replaced() -> None:
    late = Provider("local", Offer(slots=4), max=4, join_timeout=300)
    pending = [Launch("slow", "local", NOW - 301), Launch("ok", "local", NOW - 299)]
    got = run([QueueClass({}, 8)], providers=[late], pending=pending)
    assert got.give_up == ("slow",)
    assert got.launches == {"local": 1}
    assert got.reasons[0] == "launch slow on provider local did not join within 300 s: given up"
    orphan = run(pending=[Launch("x", "gone", NOW)])
    assert orphan.give_up == ("x",)


def test_describe() -> None:
    assert describe({}) == "no particular worker"
    assert describe({"label.gpu": "yes", "min_memory": "8G"}) == "label gpu=yes, min_memory=8G"


# properties over random farms

names = st.sampled_from(["a", "b", "c"])
providers_st = st.lists(
    st.builds(
        Provider,
        name=names,
        offer=st.builds(
            Offer,
            slots=st.integers(1, 8),
            labels=st.dictionaries(st.sampled_from(["gpu", "zone"]), st.just("yes"), max_size=2),
        ),
        max=st.integers(0, 6),
        min=st.integers(0, 3),
        idle_timeout=st.floats(0, 200),
        max_launches=st.integers(1, 6),
        join_timeout=st.floats(1, 500),
        startup=st.floats(0, 100),
    ),
    max_size=3,
    unique_by=lambda p: p.name,
)
workers_st = st.lists(
    st.builds(
        lambda i, provider, busy_, extra, idle, status: WorkerState(
            f"w{i}",
            provider,
            busy_,
            busy_ + extra,
            NOW - idle if busy_ == 0 else None,
            status,
        ),
        st.integers(0, 10**6),
        st.none() | names,
        st.integers(0, 4),
        st.integers(0, 4),
        st.floats(0, 400),
        st.sampled_from(["online", "launching", "draining"]),
    ),
    max_size=8,
    unique_by=lambda w: w.id,
)
queue_st = st.lists(
    st.builds(
        QueueClass,
        requires=st.lists(
            st.sampled_from([("label.gpu", "yes"), ("label.zone", "yes"), ("cpus", "2")]),
            max_size=2,
        ).map(dict),
        tasks=st.integers(1, 40),
        expected_seconds=st.none() | st.floats(0, 300),
    ),
    max_size=4,
)
pending_st = st.lists(
    st.builds(Launch, st.text("xyz", min_size=1, max_size=4), names, st.floats(NOW - 600, NOW)),
    max_size=4,
    unique_by=lambda launch: launch.id,
)


def _counted(name: str, workers: list[WorkerState], live: list[Launch]) -> int:
    return sum(w.provider == name for w in workers) + sum(x.provider == name for x in live)


@settings(max_examples=300, deadline=None)
@given(queue_st, workers_st, providers_st, pending_st)
def test_limits_hold(
    queue: list[QueueClass],
    workers: list[WorkerState],
    providers: list[Provider],
    pending: list[Launch],
) -> None:
    got = decide(queue, workers, providers, pending, NOW)
    by_id = {w.id: w for w in workers}
    live = [x for x in pending if x.id not in got.give_up]
    for p in providers:
        n = got.launches.get(p.name, 0)
        assert n <= p.max_launches
        if n:
            assert _counted(p.name, workers, live) + n <= p.max
        active = sum(w.provider == p.name and w.status != "draining" for w in workers)
        active += sum(x.provider == p.name for x in live)
        kept = active + n - sum(by_id[d].provider == p.name for d in got.drain)
        assert kept >= min(p.min, active)  # draining never goes below min
    for d in got.drain:
        w = by_id[d]
        assert w.busy == 0 and w.status == "online" and w.provider in {p.name for p in providers}
        assert w.idle_since is not None
    for x in pending:
        p = next((p for p in providers if p.name == x.provider), None)
        timed_out = p is None or NOW - x.started > p.join_timeout
        assert (x.id in got.give_up) == timed_out
    assert set(got.launches) <= {p.name for p in providers}


@settings(max_examples=300, deadline=None)
@given(queue_st, workers_st, providers_st)
def test_applying_a_decision_and_deciding_again_launches_no_more(
    queue: list[QueueClass], workers: list[WorkerState], providers: list[Provider]
) -> None:
    fast = [
        Provider(p.name, p.offer, p.max, p.min, p.idle_timeout, 100, p.join_timeout)
        for p in providers
    ]
    first = decide(queue, workers, fast, [], NOW)
    pending = [
        Launch(f"{name}-{i}", name, NOW) for name, n in first.launches.items() for i in range(n)
    ]
    second = decide(queue, workers, fast, pending, NOW)
    assert second.launches == {}


@given(queue_st, workers_st)
def test_no_launch_when_no_provider_fits_and_none_has_a_min(
    queue: list[QueueClass], workers: list[WorkerState]
) -> None:
    tiny = Provider("a", Offer(slots=1, labels={"other": "x"}), max=5)
    particular = [q for q in queue if "label.gpu" in q.requires or "cpus" in q.requires]
    assert decide(particular, workers, [tiny], [], NOW).launches == {}

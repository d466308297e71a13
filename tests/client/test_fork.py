"""Tasks that fork tasks and dependencies, on real farms (issue 5).

A recursive Fibonacci written with `corral.current()` fans out into its own job and waits on
its children; it must finish on a single slot (the blocked parent's slot is lent to its
children) as well as on four. Dependencies hold tasks in order and propagate failure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import cloudpickle
import pytest

import corral
from corral.client import CorralError, TaskFailed

from .conftest import WORKER_ARGS, Farm

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(100)


def fib(n: int) -> int:
    if n < 2:
        return n
    import corral

    here = corral.current()
    a, b = here.submit(fib, n - 1), here.submit(fib, n - 2)
    return int(a.result() + b.result())


@pytest.mark.parametrize(("slots", "n", "tasks"), [(1, 4, 9), (4, 5, 15)])
def test_recursive_fibonacci_forks_into_its_own_job(
    farm: Callable[..., Farm], slots: int, n: int, tasks: int
) -> None:
    f = farm(workers=1, slots=slots, args=WORKER_ARGS)
    with f.client() as client:
        future = client.submit(fib, n)
        assert future.result(timeout=80) == [0, 1, 1, 2, 3, 5, 8][n]
        job = client.job(str(future.job_id))
        assert job.total == tasks  # every call of fib is a task of the one job
        assert f.wait_job(client, job.id).status == "succeeded"


def test_current_outside_a_task_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_JOB_ID", raising=False)
    with pytest.raises(CorralError, match="only inside a running corral task"):
        corral.current()


def test_diamond_runs_in_order_and_failure_propagates(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1, slots=4, args=WORKER_ARGS)
    with f.client() as client:
        nap = ["sh", "-c", "sleep 0.3"]
        a = client.submit_command(nap)
        b, c = client.submit_command(nap, after=[a]), client.submit_command(nap, after=[a])
        d = client.submit_command(["true"], after=[b, c.result(timeout=30).id])
        ta, tb, tc, td = (x.result(timeout=30) for x in (a, b, c, d))
        assert td.after == sorted(td.after, key=[tb.id, tc.id].index)
        assert tb.started >= ta.finished and tc.started >= ta.finished
        assert td.started >= max(tb.finished, tc.finished)

        bad = client.submit_command(["sh", "-c", "exit 3"])
        left = client.submit_command(["true"], after=[bad])
        right = client.submit_command(["true"], after=[bad])
        last = client.submit_command(["true"], after=[left, right])
        with pytest.raises(TaskFailed):
            bad.result(timeout=30)
        for dependent in (left, right, last):
            with pytest.raises(TaskFailed, match="dependency_failed"):
                dependent.result(timeout=30)


def test_a_shell_task_forks_through_the_cli_on_one_slot(farm: Callable[..., Farm]) -> None:
    f = farm(workers=1, slots=1, args=WORKER_ARGS)
    cli = f"{sys.executable} -m corral submit --job $CORRAL_JOB_ID --wait"
    line = f"{cli} -- echo child1 && {cli} --shell -- 'echo child2 >&2' && echo parent"
    with f.client() as client:
        parent = client.submit_command([line], shell=True).result(timeout=60)
        assert parent.status == "succeeded"
        tasks = client.tasks(parent.job_id)
        assert [t.argv for t in tasks] == [[line], ["echo", "child1"], ["echo child2 >&2"]]
        assert all(t.status == "succeeded" for t in tasks)


def add(a: int, b: int) -> int:
    return a + b


def boom() -> int:
    raise ValueError("no")


def test_futures_as_arguments_pass_their_results(wide_farm: Farm) -> None:
    with wide_farm.client() as client:
        x = client.submit(add, 1, 2)
        y = client.submit(add, x, 10)
        z = client.submit_with({"after": [y]}, add, y, b=x)
        assert (z.result(timeout=60), y.result(), x.result()) == (16, 13, 3)
        task = client.task(str(z.task_id))
        assert set(task.after) == {x.task_id, y.task_id}
        assert task.started is not None and task.started >= client.task(str(y.task_id)).finished

        bad = client.submit(add, client.submit(boom), 1)
        with pytest.raises(TaskFailed, match="dependency_failed"):
            bad.result(timeout=60)

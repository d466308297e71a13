"""corral.Executor keeps the promises of the standard library's executors, on a real farm.

Each test starts a real coordinator and worker processes (tests/integration/conftest.py);
the functions below are pickled by value, as a script's would be.
"""

from __future__ import annotations

import concurrent.futures as cf
import sys
import threading
import time
from collections.abc import Iterator

import cloudpickle
import pytest

from corral import Executor
from corral.client import RemoteTraceback, SerializationError

from .conftest import Farm, wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])
pytestmark = pytest.mark.timeout(90)


def add(a: int, b: int = 0, *, c: int = 0) -> int:
    return a + b + c


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise KeyError(f"refusing {x}")
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture
def executor(wide_farm: Farm) -> Iterator[Executor]:
    """An executor on a farm with one worker of eight slots."""
    ex = Executor(wide_farm.client())
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture
def one_slot(narrow_farm: Farm) -> Iterator[tuple[Farm, Executor]]:
    """A farm with a single slot, so a second task stays queued behind the first."""
    ex = Executor(narrow_farm.client())
    try:
        yield narrow_farm, ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def test_submit_with_positional_and_keyword_arguments(executor: Executor) -> None:
    assert executor.submit(add, 1, 2, c=3).result(30) == 6
    assert executor.submit(add, a=4, c=1).result(30) == 5
    # `fn` is positional-only, so a keyword argument of that name reaches the function
    assert executor.submit(dict, fn=1).result(30) == {"fn": 1}
    seen: list[int] = []
    future = executor.submit(square, 9)
    future.add_done_callback(lambda f: seen.append(f.result()))
    assert isinstance(future, cf.Future) and future.result(30) == 81
    wait_for(lambda: seen == [81], 5, what="the done callback")


def test_map_equals_builtin_map_with_and_without_chunksize(executor: Executor) -> None:
    assert list(executor.map(square, range(7))) == list(map(square, range(7)))
    assert list(executor.map(square, range(8), chunksize=3)) == list(map(square, range(8)))
    # several iterables stop at the shortest, as zip and map do
    assert list(executor.map(pow, [2, 3, 4], [5, 6])) == list(map(pow, [2, 3, 4], [5, 6]))
    assert list(executor.map(square, [])) == []


@pytest.mark.parametrize("chunksize", [1, 2])
def test_map_raises_the_remote_exception_at_its_position(
    executor: Executor, chunksize: int
) -> None:
    results = executor.map(fail_on, range(6), [3] * 6, chunksize=chunksize)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(KeyError, match="refusing 3") as info:
        next(results)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "in fail_on" in cause.tb
    assert any("raised remotely in corral task" in note for note in info.value.__notes__)


def test_map_timeout(executor: Executor) -> None:
    started = time.monotonic()
    results = executor.map(nap, [3.0, 3.0], timeout=1.0)
    with pytest.raises(cf.TimeoutError):
        next(results)
    assert time.monotonic() - started < 5


def test_as_completed_and_wait_first_completed(executor: Executor) -> None:
    slow, fast = executor.submit(nap, 2.0), executor.submit(nap, 0.1)
    done, not_done = cf.wait([slow, fast], timeout=30, return_when=cf.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    order = list(cf.as_completed([slow, fast], timeout=30))
    assert order == [fast, slow] and slow.result() == 2.0


def test_cancel_of_a_queued_future_kills_its_task(one_slot: tuple[Farm, Executor]) -> None:
    farm, ex = one_slot
    blocker = ex.submit(nap, 2.0)
    wait_for(blocker.running, 20, what="the first task to run")
    queued = ex.submit(square, 3)
    wait_for(lambda: queued.task_id, 10, what="the second task to be submitted")
    assert not blocker.cancel()  # running: too late, as with the standard executors
    assert queued.cancel() and queued.cancelled()
    client = farm.client()
    assert queued.task_id is not None
    assert farm.wait_task(client, queued.task_id, {"killed"}).status == "killed"
    assert blocker.result(30) == 2.0


def test_shutdown_waits_and_refuses_new_work(executor: Executor) -> None:
    future = executor.submit(nap, 0.5)
    executor.shutdown(wait=True)
    assert future.done() and future.result() == 0.5
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(square, 1)


def test_shutdown_with_cancel_futures_cancels_what_is_queued(
    one_slot: tuple[Farm, Executor],
) -> None:
    farm, ex = one_slot
    blocker = ex.submit(nap, 1.5)
    wait_for(blocker.running, 20, what="the first task to run")
    queued = [ex.submit(square, i) for i in range(3)]
    wait_for(lambda: all(f.task_id for f in queued), 10, what="the queued tasks to be submitted")
    ex.shutdown(wait=True, cancel_futures=True)
    assert blocker.result() == 1.5
    assert all(f.cancelled() for f in queued)
    client = farm.client()
    for f in queued:
        assert f.task_id is not None
        assert farm.wait_task(client, f.task_id, {"killed"}).status == "killed"


def test_context_manager_waits_for_its_futures(wide_farm: Farm) -> None:
    with Executor(wide_farm.client()) as ex:
        futures = [ex.submit(nap, 0.3), ex.submit(square, 5)]
    assert all(fut.done() for fut in futures) and futures[1].result() == 25


def test_an_unpicklable_function_fails_at_submit_in_the_caller(executor: Executor) -> None:
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="cannot be pickled"):
        executor.submit(lambda: lock)
    with pytest.raises(TypeError):
        executor.submit(square, lock)


def test_a_large_argument_shared_by_tasks_is_one_blob(executor: Executor) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: shipped as its own content-addressed file
    futures = [executor.submit(len, big) for _ in range(3)]
    assert [f.result(30) for f in futures] == [len(big)] * 3
    client = executor.client
    args = [
        {ref.sha256 for name, ref in client.task(str(f.task_id)).inputs.items() if "arg" in name}
        for f in futures
    ]
    assert len(args[0]) == 1 and args[0] == args[1] == args[2]

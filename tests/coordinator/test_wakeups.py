"""Wake-ups between coordinators: announcements coalesced, heard ones fired, lost ones
covered by the re-check; and PostgreSQL's NOTIFY carrying them between two real stores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from test_store_contract import Backend

from corral._signal import Broadcast
from corral.coordinator.store import Store
from corral.coordinator.wakeups import Wakeups


class _Told:
    """The part of a Store the Wakeups use, recording what it was asked to announce."""

    def __init__(self, shared: bool = True) -> None:
        self.shared = shared
        self.sent: list[str] = []

    def notify(self, kinds: str) -> None:
        self.sent.append(kinds)

    async def listen(self, heard: Callable[[str], None]) -> None:
        await asyncio.Event().wait()  # hears nothing: a pooler that drops notifications


def _wakeups(store: _Told, recheck: float = 1.0) -> Wakeups:
    return Wakeups(store, recheck)  # type: ignore[arg-type]


def test_a_burst_of_fires_is_one_announcement_per_turn_of_the_loop() -> None:
    told = _Told()

    async def go() -> None:
        w = _wakeups(told)
        w.work.fire()
        w.work.fire()
        w.events.fire()
        w.wake_worker("w1")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        w.work.fire()
        await asyncio.sleep(0)

    asyncio.run(go())
    assert told.sent == ["e k:w1 w", "w"]


def test_a_single_coordinator_announces_nothing_and_never_rechecks() -> None:
    told = _Told(shared=False)
    w = _wakeups(told)
    assert w.recheck == 0.0
    w.work.fire()
    assert told.sent == []


def test_what_another_coordinator_announced_wakes_the_waiters_here() -> None:
    told = _Told()

    async def go() -> list[bool]:
        w = _wakeups(told)
        mine = w.workers.setdefault("w1", Broadcast())
        other = w.workers.setdefault("w2", Broadcast())
        waits = [
            asyncio.create_task(w.work.wait(1.0)),
            asyncio.create_task(w.events.wait(1.0)),
            asyncio.create_task(mine.wait(1.0)),
            asyncio.create_task(other.wait(0.2)),
        ]
        await asyncio.sleep(0)
        w.heard("w e k:w1")
        return list(await asyncio.gather(*waits))

    assert asyncio.run(go()) == [True, True, True, False]
    assert told.sent == []  # heard ones are not announced again (no echo between two)


def test_a_lost_announcement_is_made_up_for_by_the_recheck() -> None:
    told = _Told()

    async def go() -> bool:
        w = _wakeups(told, recheck=0.05)
        w.start()
        try:
            return await w.work.wait(2.0)  # nobody fires it: only the re-check can
        finally:
            await w.stop()

    assert asyncio.run(go()) is True


def test_notify_on_one_store_is_heard_by_another_on_the_same_database(
    backend: Backend, store: Store
) -> None:
    if backend.kind != "postgres":
        pytest.skip("SQLite has one coordinator: no one to tell")
    other = backend.open()
    assert store.shared and other.shared

    async def go() -> tuple[list[str], list[str]]:
        heard_there: list[str] = []
        heard_here: list[str] = []
        listening = [
            asyncio.create_task(other.listen(heard_there.append)),
            asyncio.create_task(store.listen(heard_here.append)),
        ]
        try:
            for _ in range(100):  # until both LISTENs are in place
                store.notify("w")
                await asyncio.sleep(0.05)
                if heard_there:
                    break
            heard_there.clear()
            other.notify("k:abc e")
            store.notify("w k*")
            for _ in range(100):
                if heard_there and heard_here:
                    break
                await asyncio.sleep(0.05)
        finally:
            for task in listening:
                task.cancel()
            await asyncio.gather(*listening, return_exceptions=True)
        return heard_there, heard_here

    there, here = asyncio.run(go())
    assert "w k*" in there and "k:abc e" not in there  # its own are skipped
    assert "k:abc e" in here and "w" not in here

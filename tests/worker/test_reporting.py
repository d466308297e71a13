"""The worker's outbox (reporting.py): where a result is, and when its directory goes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from corral.protocol import ResultsReply, TaskResult
from corral.worker import reporting
from corral.worker.reporting import Outbox


def outbox(removed: list[Path], stored: list[str], busy: bool = False) -> Outbox:
    return Outbox(removed.append, stored.extend, lambda: busy)


def test_a_directory_goes_only_once_its_result_is_answered() -> None:
    removed: list[Path] = []
    stored: list[str] = []
    box = outbox(removed, stored)
    box.put("t1", TaskResult("l1", 0, inline={"a" * 64: b"x"}), Path("d1"))
    box.put("t2", TaskResult("l2", 1), Path("d2"))
    assert sorted(box.leases()) == ["l1", "l2"]
    sent = box.take()
    assert set(sent) == {"t1", "t2"} and box.take() == {}
    assert sorted(box.leases()) == ["l1", "l2"]  # still presented while on the wire
    assert removed == []
    box.answered(sent, ["t2"], {})
    assert removed == [Path("d1"), Path("d2")] and stored == ["a" * 64]
    assert box.leases() == []


def test_a_failed_request_queues_its_results_again() -> None:
    removed: list[Path] = []
    box = outbox(removed, [])
    box.put("t1", TaskResult("l1", 0), Path("d1"))
    box.give_back(box.take())
    assert "t1" in box and removed == []
    assert box.take().keys() == {"t1"}


def test_a_heartbeat_calling_a_lease_stale_drops_its_result_even_on_the_wire() -> None:
    removed: list[Path] = []
    box = outbox(removed, [])
    box.put("t1", TaskResult("l1", 0), Path("d1"))
    box.put("t2", TaskResult("l2", 0), Path("d2"))
    on_the_wire = box.take()
    box.drop_stale(["l1"])
    assert removed == [Path("d1")]
    box.give_back(on_the_wire)  # the request failed: only t2 goes again
    assert set(box.take()) == {"t2"}


def test_a_heartbeat_crossing_a_result_on_the_wire_is_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = outbox([], [])
    box.put("t1", TaskResult("l1", 0), Path("d1"))
    box.take()  # t1 is on the wire: the coordinator most likely recorded it already
    box.put("t2", TaskResult("l2", 0), Path("d2"))  # t2 was never sent: its lease was lost
    with caplog.at_level(logging.INFO, logger="corral.worker"):
        box.drop_stale(["l1", "l2"])
    levels = {r.getMessage().split()[2]: r.levelno for r in caplog.records}
    assert levels == {"t1": logging.INFO, "t2": logging.WARNING}


def test_a_heartbeat_after_a_lost_answer_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    # a drain cancels the held lease call that carried t1: the coordinator recorded it, the
    # worker queued it again, and the next heartbeat calls its lease stale
    box = outbox([], [])
    box.put("t1", TaskResult("l1", 0), Path("d1"))
    box.give_back(box.take())
    with caplog.at_level(logging.INFO, logger="corral.worker"):
        box.drop_stale(["l1"])
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert box.take() == {} and box.leases() == []


def test_send_reports_and_refused_ones_store_no_blobs() -> None:
    removed: list[Path] = []
    stored: list[str] = []
    box = outbox(removed, stored)
    box.put("t1", TaskResult("l1", 0, inline={"b" * 64: b"y"}), Path("d1"))

    async def refuse(results: dict[str, TaskResult]) -> ResultsReply:
        return ResultsReply(refused={t: "bad" for t in results})

    async def unreachable(results: dict[str, TaskResult]) -> None:
        return None

    assert asyncio.run(box.send(unreachable)) is False and "t1" in box
    assert asyncio.run(box.send(refuse)) is True
    assert removed == [Path("d1")] and stored == []


def test_a_stale_answer_to_a_resent_result_is_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    box = outbox([], [])
    box.put("t1", TaskResult("l1", 0), Path("d1"))
    box.put("t2", TaskResult("l2", 0), Path("d2"))
    first = box.take()
    box.give_back({"t1": first["t1"]})  # its request failed: perhaps it was recorded
    with caplog.at_level(logging.INFO, logger="corral.worker"):
        box.answered({**box.take(), "t2": first["t2"]}, ["t1", "t2"], {})
    levels = {r.getMessage().split()[2]: r.levelno for r in caplog.records}
    assert levels == {"t1": logging.INFO, "t2": logging.WARNING}


def test_one_request_carries_a_bounded_amount_of_inline_content(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reporting, "TAKE_BYTES", 250)
    box = outbox([], [])
    for i in range(5):
        box.put(f"t{i}", TaskResult(f"l{i}", 0, inline={f"{i}" * 64: b"x" * 100}), Path(f"d{i}"))
    assert list(box.take()) == ["t0", "t1"]  # oldest first, 200 bytes
    assert box.ready.is_set()  # the rest goes with the next request
    assert list(box.take()) == ["t2", "t3"]
    assert list(box.take()) == ["t4"]
    huge = TaskResult("l9", 0, inline={"9" * 64: b"y" * 1000})
    box.put("t9", huge, Path("d9"))
    assert list(box.take()) == ["t9"]  # one result always goes, whatever its size

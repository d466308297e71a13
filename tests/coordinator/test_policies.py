"""Pure decisions: retry policy, version specs, requirement checks, slots and `why`."""

from __future__ import annotations

from typing import Any

import pytest

from corral.coordinator.retry import after_attempt, backoff, effective_max_attempts
from corral.coordinator.scheduler import (
    fits,
    never_met,
    pending_reason,
    programs_to_probe,
    requirement_problem,
    slots_needed,
    unmet,
    version_matches,
)
from corral.protocol import Worker, format_size, parse_size


def test_success_is_final() -> None:
    d = after_attempt(0, None, 1, 3, 2, now=100.0)
    assert (d.status, d.not_before, d.error) == ("succeeded", None, None)


def test_failure_without_retries_is_final_and_keeps_the_error() -> None:
    assert after_attempt(1, None, 1, 3, 0, 100.0).status == "failed"
    assert after_attempt(None, "limit_exceeded: wall_time", 1, 3, 0, 0).error == (
        "limit_exceeded: wall_time"
    )


def test_failures_are_retried_with_growing_backoff_then_stop() -> None:
    first = after_attempt(3, None, 1, 4, 3, now=100.0)
    assert first.status == "queued" and first.not_before == 101.0
    assert "exit code 3 on attempt 1; retry 1 of 3" in (first.error or "")
    assert after_attempt(3, None, 2, 4, 3, now=100.0).not_before == 102.0
    assert after_attempt(3, None, 3, 4, 3, now=100.0).not_before == 104.0
    last = after_attempt(3, None, 4, 4, 3, now=100.0)
    assert last.status == "failed" and last.error == "exit code 3; gave up after 4 attempts"


def test_max_attempts_caps_retries_and_kills_are_never_retried() -> None:
    assert after_attempt(1, None, 2, 2, 5, 0).status == "failed"
    assert after_attempt(None, "killed", 1, 3, 2, 0).status == "failed"
    assert effective_max_attempts(3, 5) == 6 and effective_max_attempts(3, 1) == 3


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(30) == 60


@pytest.mark.parametrize(
    ("spec", "version", "ok"),
    [
        ("3.11", "3.11.4", True),
        ("3.11", "3.12.0", False),
        ("3", "3.12.0", True),
        ("==3.11", "3.11.9", True),
        (">=3.11", "3.12.1", True),
        (">=3.11", "3.10.8", False),
        (">3.11", "3.11.5", False),
        (">3.11", "3.12.0", True),
        ("<3.12", "3.11.9", True),
        ("<3.12", "3.12.0", False),
        ("<=3.12", "3.12.7", True),
        (">=3.10,<3.13", "3.12.0", True),
        (">=3.10,<3.13", "3.13.0", False),
        ("!=3.12", "3.12.1", False),
        ("3.11", "unknown", False),
    ],
)
def test_version_specs(spec: str, version: str, ok: bool) -> None:
    assert version_matches(spec, version) is ok


CAPS: dict[str, Any] = {
    "os": "linux",
    "arch": "x86_64",
    "cpus": 8,
    "slots": 4,
    "memory_free": 4 * 1024**3,
    "disk_free": 10 * 1024**3,
    "gpus": 0,
    "python": "3.11.4",
    "programs": {"povray": "/usr/bin/povray"},
    "programs_missing": ["blender"],
    "labels": {"site": "lab"},
    "env": {"CUDA_HOME": "/opt/cuda"},
}


@pytest.mark.parametrize(
    ("requires", "ok"),
    [
        ({"programs": "povray"}, True),
        ({"programs": "povray,blender"}, False),
        ({"label.site": "lab"}, True),
        ({"label.site": "home"}, False),
        ({"env.CUDA_HOME": "*"}, True),
        ({"env.CUDA_HOME": "/opt/cuda"}, True),
        ({"env.MISSING": "*"}, False),
        ({"python": ">=3.11"}, True),
        ({"python": ">=3.12"}, False),
        ({"min_memory": "2G"}, True),
        ({"min_memory": "5G"}, False),
        ({"min_disk": "10G"}, True),
        ({"cpus": "4"}, True),
        ({"cpus": "5"}, False),
        ({"os": "linux", "arch": "x86_64", "min_cpus": "8"}, True),
        ({"gpus": "1"}, False),
    ],
)
def test_requirements_match_capabilities(requires: dict[str, str], ok: bool) -> None:
    assert fits(requires, CAPS) is ok
    assert bool(unmet(requires, CAPS)) is not ok


def test_requirement_values_are_checked() -> None:
    assert requirement_problem("python", ">=3.10") is None
    assert "version clause" in (requirement_problem("python", "~banana") or "")
    assert "whole number" in (requirement_problem("cpus", "two") or "")
    assert requirement_problem("cpus", "0") == "cpus must be at least 1"
    assert "not a size" in (requirement_problem("min_memory", "lots") or "")
    assert "unknown requirement" in (requirement_problem("colour") or "")
    assert requirement_problem("label.site", "lab") is None
    assert requirement_problem("label.", "x") is not None


def test_sizes() -> None:
    assert parse_size("500M") == 500 * 1024**2
    assert parse_size("2G") == parse_size("2GiB") == parse_size("2gb") == 2 * 1024**3
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("2 apples")
    with pytest.raises(ValueError, match="too large"):  # a float's infinity: not OverflowError
        parse_size("9" * 400)
    assert "too large" in (requirement_problem("min_memory", "9" * 400) or "")
    assert format_size(1536) == "1.5 KB" and format_size(10) == "10 B"


def test_slots_needed_and_programs_to_probe() -> None:
    assert slots_needed({}) == 1 and slots_needed({"cpus": "3"}) == 3
    classes = [{"programs": "povray,convert"}, {"programs": "blender"}, {"os": "linux"}]
    assert programs_to_probe(classes, CAPS) == ["convert"]


def worker(name: str, status: str = "online", used: int = 0, **caps: Any) -> Worker:
    merged = {**CAPS, "programs_missing": ["povray", "blender"], "programs": {}, **caps}
    return Worker(name, name, merged["slots"], used, status, merged, 0.0, 0.0)  # type: ignore[arg-type]


def test_why_names_a_program_no_worker_has() -> None:
    workers = [worker("a"), worker("b"), worker("c")]
    reason = pending_reason({"programs": "povray"}, workers, now=0)
    assert reason == "no connected worker has program povray (3 workers checked)"


def test_why_waits_for_workers_that_have_not_looked_yet() -> None:
    fresh = worker("a", programs_missing=[])
    reason = pending_reason({"programs": "povray"}, [fresh], now=0)
    assert reason.startswith("waiting for workers to look for program povray")


def test_why_names_labels_env_and_mixed_failures() -> None:
    ws = [worker("a"), worker("b", labels={"site": "home"})]
    assert pending_reason({"label.site": "cloud"}, ws, 0) == (
        "no connected worker has label site=cloud (2 workers checked)"
    )
    assert pending_reason({"env.X": "*"}, ws, 0).startswith("no connected worker exposes env X")
    mixed = pending_reason(
        {"label.site": "lab", "python": ">=3.12"},
        [worker("a", python="3.12.1", labels={}), worker("b")],
        0,
    )
    assert mixed.startswith("no connected worker meets all requirements (2 workers checked)")


def test_why_reports_busy_slots_and_capacity() -> None:
    ws = [worker("a", used=4), worker("b", used=4), worker("c", labels={})]
    assert pending_reason({"label.site": "lab"}, ws, 0) == (
        "all 8 matching slots are busy (2 matching workers)"
    )
    ws = [worker("a", used=3), worker("b", used=2)]
    assert pending_reason({"cpus": "3"}, ws, 0).startswith("needs 3 free slots on one worker")
    assert pending_reason({}, ws, 0).startswith("next in line: 3 of 8 matching slots are free")


def test_why_with_no_workers_or_a_pending_retry() -> None:
    assert pending_reason({}, [], 0) == "no worker is connected"
    assert pending_reason({}, [worker("a", status="draining")], 0) == (
        "no worker is connected (1 draining)"
    )
    assert pending_reason({}, [worker("a")], now=10, not_before=40).startswith("waiting 30 s")


def test_a_requirement_no_worker_could_ever_meet_is_named() -> None:
    ws = [worker("a", slots=1, labels={}), worker("b", slots=1, labels={"site": "lab"})]
    assert never_met({"cpus": "2"}, ws) == "no worker has 2 slots for a task with cpus=2"
    assert never_met({"label.site": "cloud"}, ws) == "no worker has label site=cloud"
    assert never_met({"cpus": "1", "label.site": "lab"}, ws) is None
    # each requirement met by some worker, but not all by one
    both = {"label.site": "lab", "python": ">=3.12"}
    split = [worker("a", python="3.12.1", labels={}), worker("b", python="3.10.0")]
    assert never_met(both, split) == "no one worker meets all the requirements at once"
    # nobody to judge by; a program not looked for yet
    assert never_met({"cpus": "8"}, []) is None
    assert never_met({"programs": "povray"}, [worker("a", programs_missing=[])]) is None
    assert never_met({"programs": "povray"}, ws) == "no worker has program povray"


def test_why_puts_fair_share_first_and_keeps_the_placement_reason() -> None:
    ws = [worker("a", used=4)]
    held = "alice has used 80% of the farm in the last hour (share 1); bob's tasks go first"
    assert pending_reason({}, ws, 0, fair_share=held) == (
        held + "; all 4 matching slots are busy (1 matching worker)"
    )
    assert pending_reason({}, ws, now=10, not_before=40, fair_share=held).startswith("waiting 30 s")

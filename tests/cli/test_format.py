"""The CLI's formatting helpers and id choice (cli/_format.py, cli/_ids.py): pure, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.cli._common import Fail
from corral.cli._format import Column, ago, duration, failure_reason, last_line, render, short, size
from corral.cli._ids import Candidate, choose
from corral.protocol import Task


def test_times_and_sizes() -> None:
    assert [duration(s) for s in (0, 3.7, 59, 60, 119, 3600, 3900, 86400 * 3)] == [
        "0 s",
        "3 s",
        "59 s",
        "1 min",
        "1 min",
        "1 h",
        "1 h 5 min",
        "3 d",
    ]
    assert ago(97.0, 100.0) == "3 s ago" and ago(None, 1.0) == ""
    assert ago(100.0 + 7200, 100.0) == "in 2 h"
    assert size(1.2 * 1024**3) == "1.2 GB" and size(512 << 20) == "512 MB" and size(None) == ""
    assert short("3dce" * 8) == "3dce3dce3dce" and short(None) == ""
    assert last_line(b"one\ntwo  \n\n") == "two" and last_line(b"") == ""


def failed(**kw: object) -> Task:
    base: dict[str, object] = {
        "id": "t",
        "job_id": "j",
        "seq": 0,
        "name": "",
        "status": "failed",
        "argv": ["x"],
        "env": {},
        "inputs": {},
        "outputs": [],
        "requires": {},
        "limits": {},
        "shell": False,
        "attempts": 1,
        "max_attempts": 3,
        "worker_id": None,
        "exit_code": None,
        "error": None,
        "stdout": None,
        "stderr": None,
        "manifest": {},
        "created": 0.0,
        "started": None,
        "finished": None,
    }
    return Task(**{**base, **kw})  # type: ignore[arg-type]


def test_failure_reasons() -> None:
    memory = failed(
        error="limit_exceeded: memory", peak_memory=512 << 20, limits={"memory": 256 << 20}
    )
    assert failure_reason(memory) == "limit_exceeded: memory (peak 512 MB of 256 MB)"
    wall = failed(error="limit_exceeded: wall_time", limits={"wall_time": 90})
    assert failure_reason(wall) == "limit_exceeded: wall_time (limit 1 min)"
    # the worker says the sizes of output_size itself: shown as they are
    said = "limit_exceeded: output_size (12.0 MB in 2 files of 10.0 MB; largest: a 11.0 MB)"
    out = failed(error=said, limits={"output_size": 10 << 20})
    assert failure_reason(out) == said
    assert failure_reason(failed(error="not_allowed: /usr/bin/foo")) == "not_allowed: /usr/bin/foo"
    assert failure_reason(failed(exit_code=3), "boom") == "exit 3: boom"
    assert failure_reason(failed(exit_code=3)) == "exit 3"
    assert failure_reason(failed(status="killed", error="killed")) == "killed"


COLUMNS = (
    Column("id"),
    Column("name", flex=True),
    Column("status"),
    Column("extra", rank=2),
    Column("more", rank=1, right=True),
)


def test_a_table_drops_columns_then_cuts_the_flexible_one() -> None:
    rows = [("3dce3dce3dce", "n" * 70, "succeeded", "x" * 20, 12345)]
    narrow = render(COLUMNS, rows, 80)
    assert narrow[0].split() == ["id", "name", "status"] and len(narrow[1]) <= 80
    assert "…" in narrow[1] and narrow[1].endswith("succeeded")
    wide = render(COLUMNS, rows, 200)
    assert wide[0].split() == ["id", "name", "status", "extra", "more"]
    assert wide[1].endswith("12345")


@given(
    rows=st.lists(st.tuples(st.text(max_size=40), st.text(max_size=90), st.text(max_size=12))),
    width=st.integers(20, 200),
)
def test_no_line_is_wider_than_the_terminal(rows: list[tuple[str, str, str]], width: int) -> None:
    columns = (Column("id"), Column("name", flex=True), Column("status", rank=1))
    assert all(len(line) <= width for line in render(columns, rows, width))


JOBS = [Candidate("3dce" + "0" * 28, "job", "first"), Candidate("3dce" + "9" * 28, "job", "twin")]


def test_choosing_by_prefix() -> None:
    assert choose("3dce0", JOBS, "job", "hint").label == "first"
    assert choose("3dce" + "9" * 28, JOBS, "job", "hint").label == "twin"
    with pytest.raises(Fail, match="ambiguous: it matches job 3dce00000000 first; job 3dce"):
        choose("3dce", JOBS, "job", "hint")
    with pytest.raises(Fail, match="too short"):
        choose("3dc", JOBS[:1], "job", "hint")
    with pytest.raises(Fail, match="no job 4444; hint"):
        choose("4444", JOBS, "job", "hint")
    named = [Candidate("tok_1", "token", "ci", ("ci",)), Candidate("tok_2", "token", "laptop")]
    assert choose("ci", named, "token", "hint").id == "tok_1"  # a name, however short

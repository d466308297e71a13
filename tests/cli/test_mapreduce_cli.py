"""`corral mapreduce`: usage errors in one line (exit 2), and local runs of the examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import cli

EXAMPLES = Path(__file__).parents[2] / "examples" / "mapreduce"


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    root = tmp_path / "texts"
    root.mkdir()
    (root / "a.txt").write_text("the cat\nthe dog\n")
    (root / "b.txt").write_text("a dog and the end\n")
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "streaming mode needs --mapper and --input"),
        (["nope.py:X"], "nope.py does not exist"),
        (["wordcount"], "name a class as FILE.py:ClassName"),
        ([f"{EXAMPLES / 'wordcount.py'}:Missing"], "has no MapReduce subclass named Missing"),
        ([f"{EXAMPLES / 'wordcount.py'}:WordCount", "--mapper", "cat"], "not both"),
        (["--mapper", "cat", "--input", "no/such/dir"], "--input no/such/dir does not exist"),
        (["--mapper", "cat", "--input", ".", "--file", "gone.py"], "gone.py does not exist"),
        (["--mapper", " ", "--input", "."], "the mapper command is empty"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["mapreduce", "--local", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_class_and_streaming_modes_agree_locally(texts: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    job = runner.invoke(
        cli,
        ["mapreduce", "--local", f"{EXAMPLES / 'wordcount.py'}:WordCount", "--input", str(texts)],
    )
    assert job.exit_code == 0, job.output
    counted = dict(json.loads(line) for line in job.stdout.splitlines())
    assert counted == {"the": 3, "cat": 1, "dog": 2, "a": 1, "and": 1, "end": 1}
    out = tmp_path / "counts"
    streaming = [
        "mapreduce", "--local", "--mapper", "python3 mapper.py", "--reducer",
        "python3 reducer.py", "--input", str(texts), "--file", str(EXAMPLES / "mapper.py"),
        "--file", str(EXAMPLES / "reducer.py"), "--reducers", "2", "--out", str(out),
    ]  # fmt: skip
    result = runner.invoke(cli, streaming)
    assert result.exit_code == 0, result.output
    lines = [line for part in sorted(out.iterdir()) for line in part.read_text().splitlines()]
    assert {k: int(v) for k, v in (line.split("\t") for line in lines)} == counted
    again = runner.invoke(cli, streaming)
    assert again.exit_code == 2 and "already exists" in again.output

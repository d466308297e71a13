"""CLI pieces of issue 3: flags parse or fail in one line, job files take retries and the
nested requirement forms, and `why` wording."""

from __future__ import annotations

from click.testing import CliRunner

from corral.cli import cli
from corral.jobfile import JobFileError, parse_jobfile
from corral.protocol import Task, explain, flatten_requires


def test_worker_refuses_a_bad_cache_size_in_one_line() -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--server", "http://127.0.0.1:9", "--cache-size", "lots"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "corral: --cache-size: 'lots' is not a size; write e.g. 4096, 500M or 2G"
    ]


def test_submit_refuses_negative_retries() -> None:
    result = CliRunner().invoke(cli, ["submit", "--retries", "-1", "--", "true"])
    assert result.exit_code == 2


def test_job_files_take_retries_and_nested_requirements() -> None:
    text = """
[defaults]
retries = 2
requires = { programs = ["povray", "convert"], labels = { site = "lab" } }

[[tasks]]
argv = ["render"]
requires = { env = { CUDA_HOME = "*" }, python = ">=3.11", cpus = 2 }

[[tasks]]
argv = ["other"]
retries = 0
"""
    first, second = parse_jobfile(text, "toml", "job.toml").tasks
    assert first.retries == 2 and second.retries == 0
    assert first.requires == {
        "programs": "povray,convert",
        "label.site": "lab",
        "env.CUDA_HOME": "*",
        "python": ">=3.11",
        "cpus": "2",
    }


def test_job_files_refuse_bad_retries() -> None:
    try:
        parse_jobfile('[[tasks]]\nargv = ["a"]\nretries = -1\n', "toml", "j.toml")
    except JobFileError as exc:
        assert (
            str(exc) == "j.toml:3: tasks[0].retries: must be a whole number of at least 0, not -1"
        )
    else:
        raise AssertionError("accepted")


def test_flatten_requires() -> None:
    assert flatten_requires({"labels": {"a": "b"}, "min_memory": "2G", "gpus": 1}) == {
        "label.a": "b",
        "min_memory": "2G",
        "gpus": "1",
    }


def task(**kw: object) -> Task:
    fields: dict[str, object] = dict(
        id="t", job_id="j", seq=0, name="", status="queued", argv=["x"], env={}, inputs={},
        outputs=[], requires={}, limits={}, shell=False, attempts=0, max_attempts=3,
        worker_id=None, exit_code=None, error=None, stdout=None, stderr=None, manifest={},
        created=0.0, started=None, finished=None,
    )  # fmt: skip
    fields.update(kw)
    return Task(**fields)  # type: ignore[arg-type]


def test_explain_says_where_a_task_stands() -> None:
    assert explain(task(pending_reason="no worker is connected")) == "no worker is connected"
    assert explain(task(status="running", worker_id="w1", attempts=1)) == (
        "running on worker w1 (attempt 1 of 3)"
    )
    assert explain(task(status="failed", attempts=2, exit_code=3)) == (
        "failed (attempt 2 of 3): exit code 3"
    )

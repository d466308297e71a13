"""Job-file parsing for `corral submit --file`: schema, sweeps, and errors with line and field."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.jobfile import (
    JobDraft,
    JobFileError,
    TaskDraft,
    guess_format,
    parse_jobfile,
)
from corral.jobfile import _parse as _jobfile


def parse(text: str, fmt: str = "toml") -> JobDraft:
    return parse_jobfile(textwrap.dedent(text).lstrip("\n"), fmt, f"job.{fmt}")


def error(text: str, fmt: str = "toml") -> JobFileError:
    with pytest.raises(JobFileError) as info:
        parse(text, fmt)
    return info.value


def task(argv: list[str], **fields: object) -> TaskDraft:
    values: dict[str, object] = {
        "env": {},
        "inputs": [],
        "outputs": [],
        "requires": {},
        "limits": {},
        "shell": False,
        "max_attempts": 3,
        "name": "",
    }
    values.update(fields)
    return TaskDraft(argv=argv, **values)


def argvs(job: JobDraft) -> list[list[str]]:
    return [t.argv for t in job.tasks]


# --- explicit tasks ---------------------------------------------------------------------------

EXPLICIT_TOML = """
name = "render"

[[tasks]]
argv = ["blender", "-b", "scene.blend"]
inputs = ["scene.blend", "textures/"]
outputs = ["out/*.png"]
requires = {gpu = "cuda", cores = 8}
limits = {memory_gb = 4, wall_seconds = 3600.5}
max_attempts = 5
name = "frame-1"

[[tasks]]
argv = ["true"]
shell = false

[tasks.env]
MODE = "fast"
"""

EXPLICIT_JSON = """
{
  "name": "render",
  "tasks": [
    {
      "argv": ["blender", "-b", "scene.blend"],
      "inputs": ["scene.blend", "textures/"],
      "outputs": ["out/*.png"],
      "requires": {"gpu": "cuda", "cores": 8},
      "limits": {"memory_gb": 4, "wall_seconds": 3600.5},
      "max_attempts": 5,
      "name": "frame-1"
    },
    {"argv": ["true"], "shell": false, "env": {"MODE": "fast"}}
  ]
}
"""


@pytest.mark.parametrize(("text", "fmt"), [(EXPLICIT_TOML, "toml"), (EXPLICIT_JSON, "json")])
def test_explicit_tasks(text: str, fmt: str) -> None:
    job = parse(text, fmt)
    assert job == JobDraft(
        name="render",
        tasks=[
            task(
                ["blender", "-b", "scene.blend"],
                inputs=["scene.blend", "textures/"],
                outputs=["out/*.png"],
                requires={"gpu": "cuda", "cores": "8"},
                limits={"memory_gb": 4.0, "wall_seconds": 3600.5},
                max_attempts=5,
                name="frame-1",
            ),
            task(["true"], env={"MODE": "fast"}),
        ],
    )
    assert isinstance(job.tasks[0].limits["memory_gb"], float)


def test_name_is_optional() -> None:
    assert parse('[[tasks]]\nargv = ["x"]\n').name == ""


DEFAULTS_TOML = """
[defaults]
env = {A = "1", B = "2"}
requires = {os = "linux"}
limits = {memory_gb = 2}
inputs = ["common.dat"]
max_attempts = 4
shell = true
name = "unnamed"

[[tasks]]
argv = ["a"]

[[tasks]]
argv = ["b"]
env = {B = "two", C = "3"}
requires = {gpu = "yes"}
limits = {memory_gb = 8}
inputs = []
max_attempts = 1
shell = false
name = "b"
"""

DEFAULTS_JSON = """
{
  "defaults": {
    "env": {"A": "1", "B": "2"},
    "requires": {"os": "linux"},
    "limits": {"memory_gb": 2},
    "inputs": ["common.dat"],
    "max_attempts": 4,
    "shell": true,
    "name": "unnamed"
  },
  "tasks": [
    {"argv": ["a"]},
    {
      "argv": ["b"],
      "env": {"B": "two", "C": "3"},
      "requires": {"gpu": "yes"},
      "limits": {"memory_gb": 8},
      "inputs": [],
      "max_attempts": 1,
      "shell": false,
      "name": "b"
    }
  ]
}
"""


@pytest.mark.parametrize(("text", "fmt"), [(DEFAULTS_TOML, "toml"), (DEFAULTS_JSON, "json")])
def test_defaults_merge_tables_and_task_wins(text: str, fmt: str) -> None:
    first, second = parse(text, fmt).tasks
    assert first == task(
        ["a"],
        env={"A": "1", "B": "2"},
        requires={"os": "linux"},
        limits={"memory_gb": 2.0},
        inputs=["common.dat"],
        max_attempts=4,
        shell=True,
        name="unnamed",
    )
    assert second == task(
        ["b"],
        env={"A": "1", "B": "two", "C": "3"},
        requires={"os": "linux", "gpu": "yes"},
        limits={"memory_gb": 8.0},
        inputs=[],
        max_attempts=1,
        shell=False,
        name="b",
    )


def test_defaults_can_supply_argv() -> None:
    job = parse(
        """
        [defaults]
        argv = ["worker"]
        [[tasks]]
        name = "one"
        [[tasks]]
        name = "two"
        """
    )
    assert [(t.argv, t.name) for t in job.tasks] == [(["worker"], "one"), (["worker"], "two")]


def test_tasks_do_not_share_mutable_fields() -> None:
    job = parse('[defaults]\ninputs = ["x"]\n[[tasks]]\nargv = ["a"]\n[[tasks]]\nargv = ["b"]\n')
    assert job.tasks[0].inputs is not job.tasks[1].inputs


# --- command shorthand ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('[[tasks]]\ncommand = "make -j4 && ./run | tee log"\n', "toml"),
        ('{"tasks": [{"command": "make -j4 && ./run | tee log"}]}', "json"),
    ],
)
def test_command_means_shell(text: str, fmt: str) -> None:
    assert parse(text, fmt).tasks == [task(["make -j4 && ./run | tee log"], shell=True)]


def test_task_argv_overrides_default_command_and_its_shell() -> None:
    job = parse('[defaults]\ncommand = "echo hi"\n[[tasks]]\n[[tasks]]\nargv = ["ls"]\n')
    assert job.tasks == [task(["echo hi"], shell=True), task(["ls"])]


def test_task_command_overrides_default_shell_false() -> None:
    job = parse('[defaults]\nshell = false\n[[tasks]]\ncommand = "echo $HOME"\n')
    assert job.tasks == [task(["echo $HOME"], shell=True)]


def test_command_with_shell_true_is_fine() -> None:
    assert parse('[[tasks]]\ncommand = "x"\nshell = true\n').tasks[0].shell is True


# --- sweeps -----------------------------------------------------------------------------------

SWEEP_TOML = """
name = "grid"

[sweep]
argv = ["train", "--lr={lr}", "--seed={seed}"]
outputs = ["out/{lr}-{seed}/*"]
name = "lr{lr}-s{seed}"

[sweep.params]
lr = [0.1, 0.01]
seed = {range = [0, 3]}
"""

SWEEP_JSON = """
{
  "name": "grid",
  "sweep": {
    "argv": ["train", "--lr={lr}", "--seed={seed}"],
    "outputs": ["out/{lr}-{seed}/*"],
    "name": "lr{lr}-s{seed}",
    "params": {"lr": [0.1, 0.01], "seed": {"range": [0, 3]}}
  }
}
"""


@pytest.mark.parametrize(("text", "fmt"), [(SWEEP_TOML, "toml"), (SWEEP_JSON, "json")])
def test_sweep_product_in_key_order(text: str, fmt: str) -> None:
    job = parse(text, fmt)
    assert job.name == "grid"
    expected = [(lr, seed) for lr in ("0.1", "0.01") for seed in ("0", "1", "2")]
    assert argvs(job) == [["train", f"--lr={lr}", f"--seed={seed}"] for lr, seed in expected]
    assert [t.name for t in job.tasks] == [f"lr{lr}-s{seed}" for lr, seed in expected]
    assert job.tasks[0].outputs == ["out/0.1-0/*"]


ZIP_TOML = """
[sweep]
argv = ["convert", "{src}", "{dst}"]
inputs = ["in/{src}"]
outputs = ["{dst}"]
env = {INDEX = "{i}", FIXED = "yes"}
mode = "zip"

[sweep.params]
src = ["a.tif", "b.tif", "c.tif"]
dst = ["a.png", "b.png", "c.png"]
i = {range = [1, 4]}
"""

ZIP_JSON = """
{
  "sweep": {
    "argv": ["convert", "{src}", "{dst}"],
    "inputs": ["in/{src}"],
    "outputs": ["{dst}"],
    "env": {"INDEX": "{i}", "FIXED": "yes"},
    "mode": "zip",
    "params": {
      "src": ["a.tif", "b.tif", "c.tif"],
      "dst": ["a.png", "b.png", "c.png"],
      "i": {"range": [1, 4]}
    }
  }
}
"""


@pytest.mark.parametrize(("text", "fmt"), [(ZIP_TOML, "toml"), (ZIP_JSON, "json")])
def test_sweep_zip(text: str, fmt: str) -> None:
    job = parse(text, fmt)
    assert job.tasks == [
        task(
            ["convert", f"{c}.tif", f"{c}.png"],
            inputs=[f"in/{c}.tif"],
            outputs=[f"{c}.png"],
            env={"INDEX": str(i), "FIXED": "yes"},
        )
        for i, c in enumerate("abc", 1)
    ]


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ("[0, 10, 3]", [0, 3, 6, 9]),
        ("[10, 0, -4]", [10, 6, 2]),
        ("[-2, 2]", [-2, -1, 0, 1]),
        ("[5, 5, 1]", []),
    ],
)
def test_range_with_step(bounds: str, expected: list[int]) -> None:
    text = (
        f'[[tasks]]\nargv = ["first"]\n[sweep]\nargv = ["n", "{{n}}"]\nparams.n.range = {bounds}\n'
    )
    assert argvs(parse(text))[1:] == [["n", str(n)] for n in expected]


def test_sweep_array_of_tables_with_defaults() -> None:
    job = parse(
        """
        [defaults]
        env = {HOME_DIR = "{not_a_template}"}
        max_attempts = 2

        [[sweep]]
        command = "echo {x} > out-{x}.txt"
        params = {x = ["a", "b"]}

        [[sweep]]
        argv = ["sim", "{n:03d}"]
        env = {N = "{n}"}
        [sweep.params]
        n = {range = [8, 11]}
        """
    )
    assert job.tasks == [
        task(
            ["echo a > out-a.txt"], shell=True, env={"HOME_DIR": "{not_a_template}"}, max_attempts=2
        ),
        task(
            ["echo b > out-b.txt"], shell=True, env={"HOME_DIR": "{not_a_template}"}, max_attempts=2
        ),
        *[
            task(
                ["sim", f"{n:03d}"],
                env={"HOME_DIR": "{not_a_template}", "N": str(n)},
                max_attempts=2,
            )
            for n in (8, 9, 10)
        ],
    ]


def test_sweep_tasks_keep_retries_from_the_sweep_or_the_defaults() -> None:
    job = parse(
        """
        [defaults]
        retries = 1

        [[sweep]]
        argv = ["a", "{x}"]
        params = {x = [1]}

        [[sweep]]
        argv = ["b", "{x}"]
        retries = 4
        params = {x = [1]}
        """
    )
    assert [t.retries for t in job.tasks] == [1, 4]


def test_priority_comes_from_the_task_the_sweep_or_the_defaults() -> None:
    job = parse(
        """
        [defaults]
        priority = 2

        [[tasks]]
        argv = ["a"]

        [[tasks]]
        argv = ["b"]
        priority = -3

        [[sweep]]
        argv = ["c", "{x}"]
        priority = 7
        params = {x = [1]}
        """
    )
    assert [t.priority for t in job.tasks] == [2, -3, 7]
    assert [t.spec({}).priority for t in job.tasks] == [2, -3, 7]
    assert parse('[[tasks]]\nargv = ["a"]').tasks[0].priority is None  # the job's


@pytest.mark.parametrize("bad", ['"high"', "1.5", "true", "1000001"])
def test_a_priority_that_is_not_a_whole_number_in_range_is_refused(bad: str) -> None:
    err = error(f'[[tasks]]\nargv = ["a"]\npriority = {bad}')
    assert (err.line, err.field) == (3, "tasks[0].priority")
    assert "must be a whole number from -1000000 to 1000000" in err.problem


def test_sweep_and_tasks_combine_tasks_first() -> None:
    job = parse(
        """
        [[tasks]]
        argv = ["prepare"]

        [sweep]
        argv = ["work", "{k}", "{{literal}}"]
        params = {k = [1, "two", 3.5]}
        """
    )
    assert argvs(job) == [
        ["prepare"],
        ["work", "1", "{literal}"],
        ["work", "two", "{literal}"],
        ["work", "3.5", "{literal}"],
    ]


def test_max_tasks_is_checked_before_expanding(monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[[tasks]]\nargv = ["a"]\n[sweep]\nargv = ["b"]\n[sweep.params]\nn = {range = [0, 9]}\n'
    monkeypatch.setattr(_jobfile, "MAX_TASKS", 10)
    assert len(parse(text).tasks) == 10
    monkeypatch.setattr(_jobfile, "MAX_TASKS", 9)
    err = error(text)
    assert (err.line, err.field) == (3, "sweep")
    assert "10 tasks" in err.problem


def test_default_limit_of_a_million_tasks() -> None:
    err = error(
        """
        [sweep]
        argv = ["x", "{a}", "{b}"]
        [sweep.params]
        a = {range = [0, 1001]}
        b = {range = [0, 1000000000000]}
        """
    )
    assert (err.line, err.field) == (1, "sweep")
    assert "over the limit of 1,000,000" in err.problem


# --- guess_format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("job.toml", '{"a": 1}', "toml"),
        ("JOB.TOML", "", "toml"),
        ("job.json", "name = 'x'", "json"),
        ("<stdin>", '  \n {"tasks": []}', "json"),
        ("<stdin>", "[[tasks]]", "toml"),
        ("jobfile", "", "toml"),
    ],
)
def test_guess_format(path: str, text: str, expected: str) -> None:
    assert guess_format(path, text) == expected


# --- errors: syntax ---------------------------------------------------------------------------


def test_toml_syntax_error_reports_line() -> None:
    err = error(
        """
        name = "x"

        [[tasks]]
        argv = ["a", "b"
        env = {}
        """
    )
    assert err.source == "job.toml"
    assert err.line == 5
    assert err.field == "tasks[0].argv"
    assert err.problem.startswith("syntax error: ")
    assert str(err) == f"job.toml:5: tasks[0].argv: {err.problem}"


def test_toml_syntax_error_at_end_of_document() -> None:
    err = error('[[tasks]]\nargv = ["a",\n  "b",\n\n')
    assert err.line == 3
    assert err.field == "tasks[0].argv"


def test_toml_syntax_error_in_header() -> None:
    err = error('[[tasks]]\nargv = ["a"]\n[sweep\n')
    assert err.line == 3
    assert "syntax error" in err.problem


def test_json_syntax_error_reports_line() -> None:
    err = error(
        """
        {
          "tasks": [
            {"argv": ["a"]},
            {"argv": ["b", ]}
          ]
        }
        """,
        "json",
    )
    assert (err.line, err.field) == (4, "tasks[1].argv[1]")
    assert err.problem == "syntax error: Expecting value"
    assert str(err) == "job.json:4: tasks[1].argv[1]: syntax error: Expecting value"


def test_json_syntax_error_missing_comma() -> None:
    err = error('{\n  "name": "x"\n  "tasks": []\n}\n', "json")
    assert err.line == 3
    assert "delimiter" in err.problem


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('{"name": 1' + "0" * 5000 + "}", "json"),
        ("[" * 100_000 + "]" * 100_000, "json"),
        ("a = " + "[" * 100_000 + "]" * 100_000, "toml"),
    ],
)
def test_unparseable_values_are_job_file_errors(text: str, fmt: str) -> None:
    with pytest.raises(JobFileError) as info:
        parse_jobfile(text, fmt, "big")
    assert info.value.problem.startswith("syntax error")


def test_unknown_format() -> None:
    with pytest.raises(JobFileError, match="unknown format 'yaml'"):
        parse_jobfile("", "yaml", "x")


# --- errors: unknown keys ---------------------------------------------------------------------

UNKNOWN_KEY_CASES = [
    ('nmae = "x"\n[[tasks]]\nargv = ["a"]\n', 1, "nmae"),
    ('[[tasks]]\nargv = ["a"]\n\n[[tasks]]\nargv = ["b"]\nurgency = 2\n', 6, "tasks[1].urgency"),
    ('[[tasks]]\nargv = ["a"]\n[[tasks]]\nargv = ["b"]\n[tasks.x]\n', 5, "tasks[1].x"),
    ("[defaults]\nenv = {}\nmax_attempt = 2\n", 3, "defaults.max_attempt"),
    ('[sweep]\nargv = ["a"]\nmod = "zip"\nparams = {x = [1]}\n', 3, "sweep.mod"),
    (
        '[sweep]\nargv = ["a"]\n[sweep.params]\nx = {range = [0, 2], by = 1}\n',
        4,
        "sweep.params.x.by",
    ),
    (
        '[sweep]\nargv = ["a"]\n[sweep.params.x]\nrange = [0, 2]\nstep = 1\n',
        5,
        "sweep.params.x.step",
    ),
]


@pytest.mark.parametrize(("text", "line", "field"), UNKNOWN_KEY_CASES)
def test_unknown_key_toml(text: str, line: int, field: str) -> None:
    err = error(text)
    assert (err.line, err.field) == (line, field)
    key = field.rsplit(".", 1)[-1]
    assert err.problem.startswith(f"unknown key {key!r}")


def test_unknown_key_toml_suggests_spelling() -> None:
    err = error('[[tasks]]\nargvv = ["a"]\n')
    assert str(err) == "job.toml:2: tasks[0].argvv: unknown key 'argvv' (did you mean 'argv'?)"


def test_subtable_of_second_task_is_located() -> None:
    err = error('[[tasks]]\nargv = ["a"]\n[[tasks]]\nargv = ["b"]\n[tasks.limits]\ncpu = "x"\n')
    assert (err.line, err.field) == (6, "tasks[1].limits.cpu")


def test_unknown_key_json() -> None:
    err = error(
        """
        {
          "tasks": [
            {"argv": ["a"]},
            {
              "argv": ["b"],
              "urgency": 2
            }
          ]
        }
        """,
        "json",
    )
    assert (err.line, err.field) == (6, "tasks[1].urgency")
    assert str(err) == "job.json:6: tasks[1].urgency: unknown key 'urgency'"


def test_unknown_key_json_in_sweep_params_range() -> None:
    text = '{\n "sweep": {\n  "argv": ["a"],\n  "params": {\n   "x": {"range": [0, 1], "y": 2}}}}'
    err = error(text, "json")
    assert (err.line, err.field) == (5, "sweep.params.x.y")


# --- errors: argv and other task fields --------------------------------------------------------


@pytest.mark.parametrize(
    ("toml_value", "json_value", "field", "problem"),
    [
        ('"ls -l"', '"ls -l"', "tasks[1].argv", "must be a list of strings, not a string"),
        ('["ls", 3]', '["ls", 3]', "tasks[1].argv[1]", "must be a string, not an integer"),
        ('["ls", true]', '["ls", true]', "tasks[1].argv[1]", "must be a string, not a boolean"),
        ("[]", "[]", "tasks[1].argv", "must not be empty: give the program and its arguments"),
    ],
)
def test_bad_argv(toml_value: str, json_value: str, field: str, problem: str) -> None:
    err = error(f'[[tasks]]\nargv = ["ok"]\n\n[[tasks]]\nname = "x"\nargv = {toml_value}\n')
    assert (err.line, err.field, err.problem) == (6, field, problem)
    text = f'{{\n  "tasks": [\n    {{"argv": ["ok"]}},\n    {{\n      "argv": {json_value}}}]}}'
    err = error(text, "json")
    assert (err.line, err.field, err.problem) == (5, field, problem)


def test_missing_argv() -> None:
    err = error('[[tasks]]\nargv = ["a"]\n[[tasks]]\nname = "b"\n')
    assert (err.line, err.field) == (3, "tasks[1].argv")
    assert err.problem.startswith("required")


def test_argv_and_command_together() -> None:
    err = error('[[tasks]]\nargv = ["a"]\ncommand = "a"\n')
    assert (err.line, err.field) == (3, "tasks[0].command")


def test_command_with_shell_false() -> None:
    err = error('[[tasks]]\ncommand = "a"\nshell = false\n')
    assert (err.line, err.field) == (3, "tasks[0].shell")


def test_empty_command() -> None:
    err = error('{"tasks": [{"command": "  "}]}', "json")
    assert (err.line, err.field, err.problem) == (1, "tasks[0].command", "must not be empty")


@pytest.mark.parametrize(
    ("body", "line", "field", "problem"),
    [
        ("[tasks.env]\nA = 1", 4, "tasks[0].env.A", "must be a string, not an integer"),
        ("env = {A = 1.5}", 3, "tasks[0].env.A", "must be a string, not a float"),
        ('env = ["A=1"]', 3, "tasks[0].env", "must be a table, not an array"),
        ("requires = {gpu = true}", 3, "tasks[0].requires.gpu", "must be a string or an integer"),
        ('limits = {cpu = "2"}', 3, "tasks[0].limits.cpu", "must be a number, not a string"),
        ("limits = {cpu = -1}", 3, "tasks[0].limits.cpu", "must not be negative"),
        ("inputs = [1]", 3, "tasks[0].inputs[0]", "must be a string, not an integer"),
        ('outputs = [""]', 3, "tasks[0].outputs[0]", "must not be an empty string"),
        ('outputs = "*.png"', 3, "tasks[0].outputs", "must be a list of strings"),
        ('shell = "yes"', 3, "tasks[0].shell", "must be true or false, not a string"),
        ("max_attempts = 0", 3, "tasks[0].max_attempts", "must be at least 1, not 0"),
        ("max_attempts = true", 3, "tasks[0].max_attempts", "must be an integer, not a boolean"),
        ("max_attempts = 2.0", 3, "tasks[0].max_attempts", "must be an integer, not a float"),
        ("name = 7", 3, "tasks[0].name", "must be a string, not an integer"),
    ],
)
def test_bad_task_field(body: str, line: int, field: str, problem: str) -> None:
    err = error(f'[[tasks]]\nargv = ["a"]\n{body}\n')
    assert (err.line, err.field) == (line, field)
    assert err.problem.startswith(problem)


def test_env_requires_quoting_in_json() -> None:
    err = error('{\n  "tasks": [{"argv": ["a"],\n    "env": {"N": 3}}]\n}', "json")
    assert (err.line, err.field) == (3, "tasks[0].env.N")
    assert "(quote the value)" in err.problem


def test_tasks_must_be_array_of_tables() -> None:
    err = error('name = "x"\n[tasks]\nargv = ["a"]\n')
    assert (err.line, err.field) == (2, "tasks")
    assert err.problem == "must be an array of tables, not a table"
    err = error('{\n "tasks": [\n  ["a"]\n ]\n}', "json")
    assert (err.line, err.field, err.problem) == (3, "tasks[0]", "must be a table, not an array")


def test_inline_array_of_tasks_locates_each_element() -> None:
    err = error('tasks = [\n  {argv = ["a"]},\n  {argv = ["b"]}, {argv = []},\n]\n')
    assert (err.line, err.field) == (3, "tasks[2].argv")


def test_root_must_be_an_object() -> None:
    with pytest.raises(JobFileError) as info:
        parse_jobfile('\n["a"]\n', "json", "job.json")
    err = info.value
    assert (err.line, err.field, err.problem) == (2, "(root)", "must be a table, not an array")


# --- errors: sweeps ---------------------------------------------------------------------------


def test_unknown_placeholder_toml() -> None:
    err = error(
        """
        [sweep]
        argv = ["run", "{n}"]
        outputs = ["out-{m}.txt"]

        [sweep.params]
        n = [1, 2]
        """
    )
    assert (err.line, err.field) == (3, "sweep.outputs[0]")
    assert err.problem == "unknown placeholder {m}; parameters are: n"


def test_unknown_placeholder_json_in_second_sweep() -> None:
    err = error(
        """
        {
          "sweep": [
            {"argv": ["a", "{x}"], "params": {"x": [1]}},
            {
              "argv": ["b"],
              "env": {"V": "{y}"},
              "params": {"x": [1]}
            }
          ]
        }
        """,
        "json",
    )
    assert (err.line, err.field) == (6, "sweep[1].env.V")
    assert "unknown placeholder {y}" in err.problem


def test_unknown_placeholder_in_second_toml_sweep() -> None:
    err = error(
        """
        [[sweep]]
        argv = ["a", "{x}"]
        params = {x = [1]}

        [[sweep]]
        command = "b {y}"
        [sweep.params]
        x = [1]
        """
    )
    assert (err.line, err.field) == (6, "sweep[1].command")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{n.real}", "placeholder {n.real} must be a parameter name"),
        ("{n[0]}", "placeholder {n[0]} must be a parameter name"),
        ("{}", "placeholder {} must be a parameter name"),
        ("{0}", "placeholder {0} must be a parameter name"),
        ("{n:{n}}", "placeholder {n} has an unsupported conversion or nested field"),
        ("{n", "bad template '{n'"),
        ("n}", "bad template 'n}'"),
    ],
)
def test_bad_placeholder(template: str, problem: str) -> None:
    err = error(f'[sweep]\nname = "{template}"\nargv = ["a"]\nparams = {{n = [1]}}\n')
    assert (err.line, err.field) == (2, "sweep.name")
    assert err.problem.startswith(problem)


def test_format_spec_that_does_not_fit_the_value() -> None:
    err = error('[sweep]\nargv = ["a", "{n:d}"]\nparams = {n = ["x"]}\n')
    assert (err.line, err.field) == (2, "sweep.argv[1]")
    assert err.problem.startswith("cannot fill '{n:d}'")


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_zip_length_mismatch(fmt: str) -> None:
    toml = '[sweep]\nargv = ["a"]\nmode = "zip"\n[sweep.params]\nx = [1, 2]\ny = [1, 2, 3]\n'
    json_text = (
        '{"sweep": {\n "argv": ["a"],\n "mode": "zip",\n "params": {\n'
        '  "x": [1, 2],\n  "y": [1, 2, 3]\n }\n}}'
    )
    err = error(toml if fmt == "toml" else json_text, fmt)
    assert (err.line, err.field) == (6, "sweep.params.y")
    assert err.problem == "zip mode needs equal lengths: 'x' has 2, 'y' has 3"


def test_zip_mismatch_with_range() -> None:
    err = error('[sweep]\nargv = ["a"]\nmode = "zip"\nparams.x = [1, 2]\nparams.y.range = [0, 3]\n')
    assert (err.line, err.field) == (5, "sweep.params.y")


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_zero_step(fmt: str) -> None:
    toml = '[sweep]\nargv = ["a"]\n\n[sweep.params]\nx = {range = [0, 10, 0]}\n'
    json_text = '{\n "sweep": {\n  "argv": ["a"],\n  "params": {\n   "x": {"range": [0, 10, 0]}}}}'
    err = error(toml if fmt == "toml" else json_text, fmt)
    assert (err.line, err.field, err.problem) == (
        5,
        "sweep.params.x.range[2]",
        "step must not be zero",
    )


@pytest.mark.parametrize(
    ("params", "field", "problem"),
    [
        (
            "x = {range = [0]}",
            "sweep.params.x.range",
            "must be [start, stop] or [start, stop, step]",
        ),
        ("x = {range = [0, 1.5]}", "sweep.params.x.range[1]", "must be an integer, not a float"),
        ("x = {range = [0, true]}", "sweep.params.x.range[1]", "must be an integer, not a boolean"),
        ("x = {}", "sweep.params.x.range", "required"),
        ("x = [[1]]", "sweep.params.x[0]", "must be a string or a number, not an array"),
        ("x = [false]", "sweep.params.x[0]", "must be a string or a number, not a boolean"),
        ('x = "abc"', "sweep.params.x", "must be a list of values"),
        ('"a b" = [1]', 'sweep.params."a b"', "parameter names must be simple"),
    ],
)
def test_bad_params(params: str, field: str, problem: str) -> None:
    err = error(f'[sweep]\nargv = ["a"]\n\n[sweep.params]\n{params}\n')
    assert (err.line, err.field) == (5, field)
    assert err.problem.startswith(problem)


def test_sweep_needs_params() -> None:
    err = error('[sweep]\nargv = ["a"]\n')
    assert (err.line, err.field) == (1, "sweep.params")
    err = error('[sweep]\nargv = ["a"]\nparams = {}\n')
    assert (err.line, err.field, err.problem) == (
        3,
        "sweep.params",
        "must name at least one parameter",
    )


def test_sweep_needs_argv() -> None:
    err = error("[sweep]\nparams = {x = [1]}\n")
    assert (err.line, err.field) == (1, "sweep.argv")


def test_bad_mode() -> None:
    err = error('[sweep]\nargv = ["a"]\nmode = "cartesian"\nparams = {x = [1]}\n')
    assert (err.line, err.field) == (3, "sweep.mode")
    assert err.problem == "must be 'product' or 'zip', not 'cartesian'"


def test_mode_written_under_params_gets_a_hint() -> None:
    err = error('[sweep]\nargv = ["a"]\n[sweep.params]\nx = [1]\nmode = "zip"\n')
    assert (err.line, err.field) == (5, "sweep.params.mode")
    assert "above [sweep.params]" in err.problem


def test_sweep_must_be_a_table() -> None:
    err = error('{\n "sweep": "x"\n}', "json")
    assert (err.line, err.field) == (2, "sweep")
    assert err.problem == "must be a table or an array of tables, not a string"


# --- errors: empty jobs -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fmt"), [("", "toml"), ('name = "x"\n', "toml"), ("{}", "json")])
def test_empty_job_without_tasks_key(text: str, fmt: str) -> None:
    err = error(text, fmt)
    assert (err.line, err.field) == (None, "tasks")
    assert str(err) == f"job.{fmt}: tasks: the job has no tasks: add tasks or a sweep"


def test_empty_task_list() -> None:
    err = error('name = "x"\ntasks = []\n')
    assert (err.line, err.field) == (2, "tasks")
    err = error('{\n  "tasks": []\n}', "json")
    assert (err.line, err.field) == (2, "tasks")


def test_empty_sweep() -> None:
    err = error('name = "x"\n[sweep]\nargv = ["a"]\nparams = {n = {range = [3, 3]}, m = [1]}\n')
    assert (err.line, err.field) == (2, "sweep")
    assert "no tasks" in err.problem


# --- locator details --------------------------------------------------------------------------


def test_locator_ignores_lookalike_lines_in_multiline_values() -> None:
    err = error(
        '''
        name = """
        [[tasks]]
        argv = 1
        """
        [[tasks]]
        argv = [
          "a", # argv = 2
          'b]',
        ]
        env = { X = "1" }
        urgency = 3
        '''
    )
    assert (err.line, err.field) == (11, "tasks[0].urgency")


def test_locator_handles_quoted_and_dotted_keys() -> None:
    err = error('[[tasks]]\nargv = ["a"]\n"env" . "MY.VAR" = 5\n')
    assert (err.line, err.field) == (3, 'tasks[0].env."MY.VAR"')


def test_error_str_without_line_and_pickling() -> None:
    err = JobFileError("<stdin>", None, "tasks", "the job has no tasks")
    assert str(err) == "<stdin>: tasks: the job has no tasks"
    copy = pickle.loads(pickle.dumps(JobFileError("f", 3, "a.b", "bad\nthing")))
    assert (copy.source, copy.line, copy.field, copy.problem) == ("f", 3, "a.b", "bad thing")
    assert str(copy) == "f:3: a.b: bad thing"
    assert isinstance(copy, ValueError)


# --- properties -------------------------------------------------------------------------------

ints = st.integers(min_value=-60, max_value=60)
steps = st.integers(min_value=-7, max_value=7).filter(bool)


@given(start=ints, stop=ints, step=steps, fmt=st.sampled_from(["toml", "json"]))
@settings(max_examples=150)
def test_range_expansion_matches_python_range(start: int, stop: int, step: int, fmt: str) -> None:
    job = {
        "tasks": [{"argv": ["first"]}],
        "sweep": {"argv": ["n", "{n}"], "params": {"n": {"range": [start, stop, step]}}},
    }
    if fmt == "json":
        text = json.dumps(job)
    else:
        text = (
            '[[tasks]]\nargv = ["first"]\n[sweep]\nargv = ["n", "{n}"]\n'
            f"[sweep.params]\nn = {{range = [{start}, {stop}, {step}]}}\n"
        )
    got = [t.argv[1] for t in parse_jobfile(text, fmt, "x").tasks[1:]]
    assert got == [str(n) for n in range(start, stop, step)]


param_lists = st.lists(
    st.one_of(st.text(max_size=5), st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    min_size=1,
    max_size=4,
)


@given(params=st.lists(param_lists, min_size=1, max_size=4))
@settings(max_examples=100)
def test_product_count_and_order(params: list[list[str | int | float]]) -> None:
    names = [f"p{i}" for i in range(len(params))]
    job = {
        "sweep": {
            "argv": ["x", *[f"{{{name}}}" for name in names]],
            "params": dict(zip(names, params, strict=True)),
        }
    }
    tasks = parse_jobfile(json.dumps(job), "json", "x").tasks
    assert len(tasks) == math.prod(len(values) for values in params)
    expected = [["x", *map(str, row)] for row in itertools.product(*params)]
    assert [t.argv for t in tasks] == expected


@given(length=st.integers(min_value=1, max_value=6), width=st.integers(min_value=1, max_value=4))
def test_zip_count_is_common_length(length: int, width: int) -> None:
    params = {f"p{i}": [f"{i}-{j}" for j in range(length)] for i in range(width)}
    job = {"sweep": {"argv": ["x", "{p0}"], "mode": "zip", "params": params}}
    tasks = parse_jobfile(json.dumps(job), "json", "x").tasks
    assert [t.argv[1] for t in tasks] == [f"0-{j}" for j in range(length)]


def _check_outcome(text: str, fmt: str) -> None:
    try:
        job = parse_jobfile(text, fmt, "fuzz")
    except JobFileError as err:
        assert "\n" not in str(err)
        assert err.line is None or 1 <= err.line <= text.count("\n") + 1
    else:
        assert job.tasks


toml_lines = st.sampled_from(
    [
        "[[tasks]]",
        "[sweep]",
        "[[sweep]]",
        "[sweep.params]",
        "[defaults]",
        "[tasks.env]",
        'argv = ["a", "{n}"]',
        "argv = [",
        '"b", 1,',
        "]",
        'command = "x {n}"',
        "n = [1, 2]",
        "n = {range = [0, 3, 0]}",
        "params = {n = [1]}",
        'mode = "zip"',
        'env = {A = "1"}',
        "max_attempts = 0",
        'name = """',
        "bogus = 1",
        "",
        "# comment",
    ]
)


@given(lines=st.lists(toml_lines, max_size=12))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_toml_fragments_give_job_or_job_file_error(lines: list[str]) -> None:
    _check_outcome("\n".join(lines), "toml")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(-5, 5)
    | st.sampled_from(["a", "{n}"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["argv", "command", "params", "n", "range", "tasks", "env", "x"]),
            inner,
            max_size=3,
        )
    ),
    max_leaves=12,
)


@given(
    root=st.dictionaries(
        st.sampled_from(["name", "defaults", "tasks", "sweep", "nope"]), json_values, max_size=3
    ),
    indent=st.sampled_from([None, 1, 2]),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_json_structures_give_job_or_job_file_error(
    root: dict[str, object], indent: int | None
) -> None:
    _check_outcome(json.dumps(root, indent=indent), "json")


@given(text=st.text(max_size=60), fmt=st.sampled_from(["toml", "json"]))
def test_arbitrary_text_gives_job_or_job_file_error(text: str, fmt: str) -> None:
    _check_outcome(text, fmt)

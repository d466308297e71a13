"""One task table of a job file to a task draft: value checks, defaults and merging (pure).

Every check raises JobFileError through `Ctx.fail`, which names the field and finds its line.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from ..protocol import MAX_PRIORITY, InputRef, TaskSpec, flatten_requires
from ._lines import FieldPath, fmt_path, json_locator, toml_locator

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "TASK_KEYS",
    "Ctx",
    "JobFileError",
    "Partial",
    "TaskDraft",
    "check_keys",
    "expect_str",
    "expect_table",
    "finish",
    "kind_of",
    "merge",
    "optional",
    "parse_partial",
]

DEFAULT_MAX_ATTEMPTS = 3
_T = TypeVar("_T")

TASK_KEYS = (
    "argv",
    "command",
    "env",
    "inputs",
    "outputs",
    "requires",
    "limits",
    "shell",
    "max_attempts",
    "name",
    "retries",
    "priority",
)


class JobFileError(ValueError):
    """A job file is malformed; str() is one line: '<source>:<line>: <field>: <problem>'."""

    def __init__(self, source: str, line: int | None, field: str, problem: str) -> None:
        self.source = source
        self.line = line
        self.field = field
        self.problem = " ".join(problem.splitlines())
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {field}: {self.problem}")

    def __reduce__(self) -> tuple[type[JobFileError], tuple[str, int | None, str, str]]:
        return (JobFileError, (self.source, self.line, self.field, self.problem))


@dataclass(frozen=True)
class TaskDraft:
    """One task as written in a job file, with defaults applied and templates filled."""

    argv: list[str]
    env: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    requires: dict[str, str]
    limits: dict[str, float]
    shell: bool
    max_attempts: int
    name: str
    retries: int = 0
    priority: int | None = None  # within the owner's queue, higher first (None: the job's)

    def spec(self, inputs: dict[str, InputRef]) -> TaskSpec:
        """The task to submit, its input files already uploaded as `inputs`."""
        return TaskSpec(
            argv=self.argv,
            env=self.env,
            inputs=inputs,
            outputs=self.outputs,
            requires=self.requires,
            limits=self.limits,
            shell=self.shell,
            max_attempts=self.max_attempts,
            retries=self.retries,
            name=self.name,
            priority=self.priority,
        )


class Ctx:
    """Error reporting for one parse; the locator is built only when an error is raised."""

    def __init__(self, text: str, fmt: str, source: str) -> None:
        self.text = text
        self.fmt = fmt
        self.source = source

    def fail(self, path: FieldPath, problem: str) -> NoReturn:
        """Raise JobFileError for the field at `path`, with its line."""
        if self.fmt == "toml":
            locator = toml_locator(self.text)
        else:
            locator = json_locator(self.text)
        raise JobFileError(self.source, locator.line_of(path), fmt_path(path), problem)


# --- value checks -----------------------------------------------------------------------------


def kind_of(value: object) -> str:
    """How an error names a value's type: 'an integer', 'a table', ..."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def expect_table(
    ctx: Ctx, value: object, path: FieldPath, what: str = "a table"
) -> dict[str, object]:
    """`value` if it is a table, else fail at `path`."""
    if not isinstance(value, dict):
        ctx.fail(path, f"must be {what}, not {kind_of(value)}")
    return value


def check_keys(ctx: Ctx, table: dict[str, object], path: FieldPath, allowed: Sequence[str]) -> None:
    """Fail on the first key not in `allowed`, suggesting a close one."""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            ctx.fail(path + (key,), f"unknown key {key!r}{hint}")


def optional(
    ctx: Ctx,
    table: dict[str, object],
    path: FieldPath,
    key: str,
    parse: Callable[[Ctx, object, FieldPath], _T],
) -> _T | None:
    """`parse` of `table[key]`, or None when the key is absent."""
    if key not in table:
        return None
    return parse(ctx, table[key], path + (key,))


def expect_str(ctx: Ctx, value: object, path: FieldPath) -> str:
    """`value` if it is a string, else fail at `path`."""
    if not isinstance(value, str):
        ctx.fail(path, f"must be a string, not {kind_of(value)}")
    return value


def _bool(ctx: Ctx, value: object, path: FieldPath) -> bool:
    if not isinstance(value, bool):
        ctx.fail(path, f"must be true or false, not {kind_of(value)}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _max_attempts(ctx: Ctx, value: object, path: FieldPath) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        ctx.fail(path, f"must be an integer, not {kind_of(value)}")
    if value < 1:
        ctx.fail(path, f"must be at least 1, not {value}")
    return value


def _str_list(ctx: Ctx, value: object, path: FieldPath) -> list[str]:
    if not isinstance(value, list):
        ctx.fail(path, f"must be a list of strings, not {kind_of(value)}")
    out: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            ctx.fail(path + (index,), f"must be a string, not {kind_of(item)}")
        out.append(item)
    return out


def _argv(ctx: Ctx, value: object, path: FieldPath) -> list[str]:
    argv = _str_list(ctx, value, path)
    if not argv:
        ctx.fail(path, "must not be empty: give the program and its arguments")
    return argv


def _command(ctx: Ctx, value: object, path: FieldPath) -> str:
    command = expect_str(ctx, value, path)
    if not command.strip():
        ctx.fail(path, "must not be empty")
    return command


def _paths(ctx: Ctx, value: object, path: FieldPath) -> list[str]:
    paths = _str_list(ctx, value, path)
    for index, item in enumerate(paths):
        if not item:
            ctx.fail(path + (index,), "must not be an empty string")
    return paths


def _env(ctx: Ctx, value: object, path: FieldPath) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in expect_table(ctx, value, path).items():
        if not isinstance(item, str):
            ctx.fail(path + (key,), f"must be a string, not {kind_of(item)} (quote the value)")
        out[key] = item
    return out


def _requires(ctx: Ctx, value: object, path: FieldPath) -> dict[str, str]:
    # nested forms too: programs = ["a"], labels = {site = "lab"}, env = {X = "*"}
    table = expect_table(ctx, value, path)
    for key, item in table.items():
        if key == "programs" and isinstance(item, list):
            continue
        if key in ("labels", "env") and isinstance(item, dict):
            continue
        if not isinstance(item, str) and not _is_int(item):
            ctx.fail(path + (key,), f"must be a string or an integer, not {kind_of(item)}")
    try:
        return flatten_requires(table)
    except ValueError as exc:
        ctx.fail(path, str(exc))


def _limits(ctx: Ctx, value: object, path: FieldPath) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, item in expect_table(ctx, value, path).items():
        if not isinstance(item, int | float) or isinstance(item, bool):
            ctx.fail(path + (key,), f"must be a number, not {kind_of(item)}")
        if not item >= 0:
            ctx.fail(path + (key,), f"must not be negative, not {item}")
        out[key] = float(item)
    return out


# --- tasks, defaults and merging --------------------------------------------------------------


@dataclass(frozen=True)
class Partial:
    """Task fields as written in one table; None means the table does not set the field."""

    argv: list[str] | None = None
    from_command: bool = False
    env: dict[str, str] | None = None
    inputs: list[str] | None = None
    outputs: list[str] | None = None
    requires: dict[str, str] | None = None
    limits: dict[str, float] | None = None
    shell: bool | None = None
    max_attempts: int | None = None
    name: str | None = None
    retries: int | None = None
    priority: int | None = None


def _priority(ctx: Ctx, value: object, path: FieldPath) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > MAX_PRIORITY:
        ctx.fail(
            path, f"must be a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}, not {value!r}"
        )
    return value


def _retries(ctx: Ctx, value: object, path: FieldPath) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        ctx.fail(path, f"must be a whole number of at least 0, not {value!r}")
    return value


def parse_partial(ctx: Ctx, table: dict[str, object], path: FieldPath) -> Partial:
    """The task fields one table sets (a task, the defaults, or a sweep's template)."""
    check_keys(ctx, table, path, TASK_KEYS)
    argv = optional(ctx, table, path, "argv", _argv)
    command = optional(ctx, table, path, "command", _command)
    shell = optional(ctx, table, path, "shell", _bool)
    if command is not None:
        if argv is not None:
            ctx.fail(path + ("command",), "give either argv or command, not both")
        if shell is False:
            ctx.fail(path + ("shell",), "command always runs in a shell; use argv instead")
        argv = [command]
    return Partial(
        argv=argv,
        from_command=command is not None,
        env=optional(ctx, table, path, "env", _env),
        inputs=optional(ctx, table, path, "inputs", _paths),
        outputs=optional(ctx, table, path, "outputs", _paths),
        requires=optional(ctx, table, path, "requires", _requires),
        limits=optional(ctx, table, path, "limits", _limits),
        shell=shell,
        max_attempts=optional(ctx, table, path, "max_attempts", _max_attempts),
        name=optional(ctx, table, path, "name", expect_str),
        retries=optional(ctx, table, path, "retries", _retries),
        priority=optional(ctx, table, path, "priority", _priority),
    )


def _pick(first: _T | None, second: _T | None) -> _T | None:
    return first if first is not None else second


def _merge_map(base: dict[str, _T] | None, over: dict[str, _T] | None) -> dict[str, _T] | None:
    if base is None or over is None:
        return _pick(over, base)
    return {**base, **over}


def merge(base: Partial, over: Partial) -> Partial:
    """Apply `over` on top of `base`: scalars and lists replace, tables merge key by key."""
    program = over if over.argv is not None else base
    return Partial(
        argv=program.argv,
        from_command=program.from_command,
        env=_merge_map(base.env, over.env),
        inputs=_pick(over.inputs, base.inputs),
        outputs=_pick(over.outputs, base.outputs),
        requires=_merge_map(base.requires, over.requires),
        limits=_merge_map(base.limits, over.limits),
        shell=_pick(over.shell, base.shell),
        max_attempts=_pick(over.max_attempts, base.max_attempts),
        name=_pick(over.name, base.name),
        retries=_pick(over.retries, base.retries),
        priority=_pick(over.priority, base.priority),
    )


def finish(ctx: Ctx, task: Partial, path: FieldPath) -> TaskDraft:
    """The complete task draft, failing when no program is given."""
    if task.argv is None:
        ctx.fail(path + ("argv",), "required: give argv (a list) or command (a string)")
    attempts = task.max_attempts
    return TaskDraft(
        argv=list(task.argv),
        env=dict(task.env or {}),
        inputs=list(task.inputs or []),
        outputs=list(task.outputs or []),
        requires=dict(task.requires or {}),
        limits=dict(task.limits or {}),
        shell=task.from_command or bool(task.shell),
        max_attempts=DEFAULT_MAX_ATTEMPTS if attempts is None else attempts,
        name=task.name or "",
        retries=task.retries or 0,
        priority=task.priority,
    )

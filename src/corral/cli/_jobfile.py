"""Job files for `corral submit --file`: TOML or JSON text in, task drafts out (pure, no I/O)."""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import string
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn, TypeVar

from ..protocol import flatten_requires
from ._jobfile_lines import JsonScan, fmt_path, json_locator, toml_locator

__all__ = ["MAX_TASKS", "JobDraft", "JobFileError", "TaskDraft", "guess_format", "parse_jobfile"]

MAX_TASKS = 1_000_000
DEFAULT_MAX_ATTEMPTS = 3

Path = tuple[str | int, ...]
Scalar = str | int | float
_T = TypeVar("_T")

_TASK_KEYS = (
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
)
_ROOT_KEYS = ("name", "defaults", "tasks", "sweep")
_SWEEP_KEYS = (*_TASK_KEYS, "params", "mode")


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


@dataclass(frozen=True)
class JobDraft:
    """A parsed job file: the job's name and every task it expands to."""

    name: str
    tasks: list[TaskDraft]


def guess_format(path: str, text: str) -> str:
    """Return 'toml' or 'json' from the file's suffix, else from its first non-space character."""
    lower = path.lower()
    if lower.endswith(".toml"):
        return "toml"
    if lower.endswith(".json"):
        return "json"
    return "json" if text.lstrip().startswith("{") else "toml"


def parse_jobfile(text: str, fmt: str, source: str) -> JobDraft:
    """Parse job-file text in `fmt` ('toml' or 'json'); `source` names the file in errors."""
    ctx = _Ctx(text, fmt, source)
    root = _table(ctx, _load(text, fmt, source), ())
    _check_keys(ctx, root, (), _ROOT_KEYS)
    name = _opt(ctx, root, (), "name", _str)
    defaults = _Partial()
    if "defaults" in root:
        defaults = _partial(ctx, _table(ctx, root["defaults"], ("defaults",)), ("defaults",))
    explicit = _explicit_tasks(ctx, root, defaults)
    sweeps = _sweeps(ctx, root, defaults)
    _check_size(ctx, root, len(explicit), sweeps)
    tasks = explicit + [task for sweep in sweeps for task in _expand(ctx, sweep, defaults)]
    return JobDraft(name=name or "", tasks=tasks)


# --- loading and syntax errors ----------------------------------------------------------------

_TOML_AT = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)\s*$")


def _load(text: str, fmt: str, source: str) -> object:
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _toml_syntax_error(text, source, str(exc)) from exc
        except RecursionError as exc:
            raise JobFileError(source, None, "(root)", "syntax error: nested too deeply") from exc
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise _json_syntax_error(text, source, exc) from exc
        except (ValueError, RecursionError) as exc:
            raise JobFileError(source, None, "(root)", f"syntax error: {exc}") from exc
    raise JobFileError(source, None, "(format)", f"unknown format {fmt!r}; use 'toml' or 'json'")


def _toml_syntax_error(text: str, source: str, message: str) -> JobFileError:
    match = _TOML_AT.search(message)
    line: int | None = None
    if match is not None:
        message = message[: match.start()]
        line = int(match.group(1)) if match.group(1) else text.rstrip().count("\n") + 1
    where = toml_locator(text).context.get(line, ()) if line is not None else ()
    return JobFileError(source, line, fmt_path(where), f"syntax error: {message}")


def _json_syntax_error(text: str, source: str, exc: json.JSONDecodeError) -> JobFileError:
    scan = JsonScan(text)
    scan.run(min(exc.pos, len(text)))
    return JobFileError(source, exc.lineno, fmt_path(scan.path()), f"syntax error: {exc.msg}")


class _Ctx:
    """Error reporting for one parse; the locator is built only when an error is raised."""

    def __init__(self, text: str, fmt: str, source: str) -> None:
        self.text = text
        self.fmt = fmt
        self.source = source

    def fail(self, path: Path, problem: str) -> NoReturn:
        if self.fmt == "toml":
            locator = toml_locator(self.text)
        else:
            locator = json_locator(self.text)
        raise JobFileError(self.source, locator.line_of(path), fmt_path(path), problem)


# --- value checks -----------------------------------------------------------------------------


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    names.update({list: "an array", dict: "a table", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _table(ctx: _Ctx, value: object, path: Path, what: str = "a table") -> dict[str, object]:
    if not isinstance(value, dict):
        ctx.fail(path, f"must be {what}, not {_kind(value)}")
    return value


def _check_keys(ctx: _Ctx, table: dict[str, object], path: Path, allowed: Sequence[str]) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            ctx.fail(path + (key,), f"unknown key {key!r}{hint}")


def _opt(
    ctx: _Ctx,
    table: dict[str, object],
    path: Path,
    key: str,
    parse: Callable[[_Ctx, object, Path], _T],
) -> _T | None:
    if key not in table:
        return None
    return parse(ctx, table[key], path + (key,))


def _str(ctx: _Ctx, value: object, path: Path) -> str:
    if not isinstance(value, str):
        ctx.fail(path, f"must be a string, not {_kind(value)}")
    return value


def _bool(ctx: _Ctx, value: object, path: Path) -> bool:
    if not isinstance(value, bool):
        ctx.fail(path, f"must be true or false, not {_kind(value)}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _max_attempts(ctx: _Ctx, value: object, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        ctx.fail(path, f"must be an integer, not {_kind(value)}")
    if value < 1:
        ctx.fail(path, f"must be at least 1, not {value}")
    return value


def _str_list(ctx: _Ctx, value: object, path: Path) -> list[str]:
    if not isinstance(value, list):
        ctx.fail(path, f"must be a list of strings, not {_kind(value)}")
    out: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            ctx.fail(path + (index,), f"must be a string, not {_kind(item)}")
        out.append(item)
    return out


def _argv(ctx: _Ctx, value: object, path: Path) -> list[str]:
    argv = _str_list(ctx, value, path)
    if not argv:
        ctx.fail(path, "must not be empty: give the program and its arguments")
    return argv


def _command(ctx: _Ctx, value: object, path: Path) -> str:
    command = _str(ctx, value, path)
    if not command.strip():
        ctx.fail(path, "must not be empty")
    return command


def _paths(ctx: _Ctx, value: object, path: Path) -> list[str]:
    paths = _str_list(ctx, value, path)
    for index, item in enumerate(paths):
        if not item:
            ctx.fail(path + (index,), "must not be an empty string")
    return paths


def _env(ctx: _Ctx, value: object, path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in _table(ctx, value, path).items():
        if not isinstance(item, str):
            ctx.fail(path + (key,), f"must be a string, not {_kind(item)} (quote the value)")
        out[key] = item
    return out


def _requires(ctx: _Ctx, value: object, path: Path) -> dict[str, str]:
    # nested forms too: programs = ["a"], labels = {site = "lab"}, env = {X = "*"}
    table = _table(ctx, value, path)
    for key, item in table.items():
        if key == "programs" and isinstance(item, list):
            continue
        if key in ("labels", "env") and isinstance(item, dict):
            continue
        if not isinstance(item, str) and not _is_int(item):
            ctx.fail(path + (key,), f"must be a string or an integer, not {_kind(item)}")
    try:
        return flatten_requires(table)
    except ValueError as exc:
        ctx.fail(path, str(exc))


def _limits(ctx: _Ctx, value: object, path: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, item in _table(ctx, value, path).items():
        if not isinstance(item, int | float) or isinstance(item, bool):
            ctx.fail(path + (key,), f"must be a number, not {_kind(item)}")
        if not item >= 0:
            ctx.fail(path + (key,), f"must not be negative, not {item}")
        out[key] = float(item)
    return out


# --- tasks, defaults and merging --------------------------------------------------------------


@dataclass(frozen=True)
class _Partial:
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


def _retries(ctx: _Ctx, value: object, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        ctx.fail(path, f"must be a whole number of at least 0, not {value!r}")
    return value


def _partial(ctx: _Ctx, table: dict[str, object], path: Path) -> _Partial:
    _check_keys(ctx, table, path, _TASK_KEYS)
    argv = _opt(ctx, table, path, "argv", _argv)
    command = _opt(ctx, table, path, "command", _command)
    shell = _opt(ctx, table, path, "shell", _bool)
    if command is not None:
        if argv is not None:
            ctx.fail(path + ("command",), "give either argv or command, not both")
        if shell is False:
            ctx.fail(path + ("shell",), "command always runs in a shell; use argv instead")
        argv = [command]
    return _Partial(
        argv=argv,
        from_command=command is not None,
        env=_opt(ctx, table, path, "env", _env),
        inputs=_opt(ctx, table, path, "inputs", _paths),
        outputs=_opt(ctx, table, path, "outputs", _paths),
        requires=_opt(ctx, table, path, "requires", _requires),
        limits=_opt(ctx, table, path, "limits", _limits),
        shell=shell,
        max_attempts=_opt(ctx, table, path, "max_attempts", _max_attempts),
        name=_opt(ctx, table, path, "name", _str),
        retries=_opt(ctx, table, path, "retries", _retries),
    )


def _pick(first: _T | None, second: _T | None) -> _T | None:
    return first if first is not None else second


def _merge_map(base: dict[str, _T] | None, over: dict[str, _T] | None) -> dict[str, _T] | None:
    if base is None or over is None:
        return _pick(over, base)
    return {**base, **over}


def _merge(base: _Partial, over: _Partial) -> _Partial:
    """Apply `over` on top of `base`: scalars and lists replace, tables merge key by key."""
    program = over if over.argv is not None else base
    return _Partial(
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
    )


def _finish(ctx: _Ctx, task: _Partial, path: Path) -> TaskDraft:
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
    )


def _explicit_tasks(ctx: _Ctx, root: dict[str, object], defaults: _Partial) -> list[TaskDraft]:
    if "tasks" not in root:
        return []
    items = root["tasks"]
    if not isinstance(items, list):
        ctx.fail(("tasks",), f"must be an array of tables, not {_kind(items)}")
    if len(items) > MAX_TASKS:
        ctx.fail(("tasks",), f"{len(items):,} tasks is over the limit of {MAX_TASKS:,}")
    drafts: list[TaskDraft] = []
    for index, item in enumerate(items):
        path: Path = ("tasks", index)
        task = _partial(ctx, _table(ctx, item, path), path)
        drafts.append(_finish(ctx, _merge(defaults, task), path))
    return drafts


# --- sweeps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sweep:
    path: Path
    template: _Partial
    params: dict[str, Sequence[Scalar]]
    zip_mode: bool
    count: int


_FORMATTER = string.Formatter()


def _sweeps(ctx: _Ctx, root: dict[str, object], defaults: _Partial) -> list[_Sweep]:
    if "sweep" not in root:
        return []
    value = root["sweep"]
    if isinstance(value, list):
        return [_sweep(ctx, item, ("sweep", index), defaults) for index, item in enumerate(value)]
    return [_sweep(ctx, value, ("sweep",), defaults)]


def _sweep(ctx: _Ctx, value: object, path: Path, defaults: _Partial) -> _Sweep:
    table = _table(ctx, value, path, "a table or an array of tables")
    _check_keys(ctx, table, path, _SWEEP_KEYS)
    if "params" not in table:
        ctx.fail(path + ("params",), "required: map each parameter to a list or a range")
    params = _params(ctx, table["params"], path + ("params",))
    zip_mode = _opt(ctx, table, path, "mode", _mode) or False
    fields = {key: item for key, item in table.items() if key not in ("params", "mode")}
    template = _partial(ctx, fields, path)
    _map_templates(template, _checker(ctx, path, list(params)))
    _finish(ctx, _merge(defaults, template), path)
    return _Sweep(path, template, params, zip_mode, _count(ctx, path, params, zip_mode))


def _mode(ctx: _Ctx, value: object, path: Path) -> bool:
    """Return True for zip mode, False for product mode."""
    if value not in ("product", "zip"):
        ctx.fail(path, f"must be 'product' or 'zip', not {value!r}")
    return value == "zip"


def _params(ctx: _Ctx, value: object, path: Path) -> dict[str, Sequence[Scalar]]:
    table = _table(ctx, value, path)
    if not table:
        ctx.fail(path, "must name at least one parameter")
    out: dict[str, Sequence[Scalar]] = {}
    for name, spec in table.items():
        if not name.isidentifier():
            ctx.fail(path + (name,), "parameter names must be simple identifiers")
        if name == "mode" and isinstance(spec, str):
            ctx.fail(
                path + (name,), "mode belongs in the sweep table (in TOML, above [sweep.params])"
            )
        out[name] = _param_values(ctx, spec, path + (name,))
    return out


def _param_values(ctx: _Ctx, spec: object, path: Path) -> Sequence[Scalar]:
    if isinstance(spec, dict):
        _check_keys(ctx, spec, path, ("range",))
        if "range" not in spec:
            ctx.fail(path + ("range",), "required: range = [start, stop] or [start, stop, step]")
        return _range(ctx, spec["range"], path + ("range",))
    if not isinstance(spec, list):
        ctx.fail(path, f"must be a list of values or {{range = [start, stop]}}, not {_kind(spec)}")
    values: list[Scalar] = []
    for index, item in enumerate(spec):
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            ctx.fail(path + (index,), f"must be a string or a number, not {_kind(item)}")
        values.append(item)
    return values


def _range(ctx: _Ctx, value: object, path: Path) -> range:
    if not isinstance(value, list) or len(value) not in (2, 3):
        ctx.fail(path, "must be [start, stop] or [start, stop, step]")
    bounds: list[int] = []
    for index, item in enumerate(value):
        if not isinstance(item, int) or isinstance(item, bool):
            ctx.fail(path + (index,), f"must be an integer, not {_kind(item)}")
        bounds.append(item)
    if len(bounds) == 3 and bounds[2] == 0:
        ctx.fail(path + (2,), "step must not be zero")
    return range(*bounds)


def _length(values: Sequence[Scalar]) -> int:
    """len() that also works for ranges too long for len()."""
    if isinstance(values, range):
        return max(0, -(-(values.stop - values.start) // values.step))
    return len(values)


def _count(ctx: _Ctx, path: Path, params: dict[str, Sequence[Scalar]], zip_mode: bool) -> int:
    lengths = {name: _length(values) for name, values in params.items()}
    if not zip_mode:
        return math.prod(lengths.values())
    first, count = next(iter(lengths.items()))
    for name, length in lengths.items():
        if length != count:
            problem = f"zip mode needs equal lengths: {first!r} has {count}, {name!r} has {length}"
            ctx.fail(path + ("params", name), problem)
    return count


def _template_problem(text: str, names: Sequence[str]) -> str | None:
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        return f"bad template {text!r}: {exc} (write {{{{ or }}}} for a literal brace)"
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            return f"placeholder {{{name}}} must be a parameter name"
        if name not in names:
            return f"unknown placeholder {{{name}}}; parameters are: {', '.join(names)}"
        if "{" in (spec or "") or conversion not in (None, "r", "s", "a"):
            return f"placeholder {{{name}}} has an unsupported conversion or nested field"
    return None


def _checker(ctx: _Ctx, path: Path, names: Sequence[str]) -> Callable[[Path, str], str]:
    def check(where: Path, text: str) -> str:
        problem = _template_problem(text, names)
        if problem is not None:
            ctx.fail(path + where, problem)
        return text

    return check


def _filler(ctx: _Ctx, path: Path, values: dict[str, Scalar]) -> Callable[[Path, str], str]:
    def fill(where: Path, text: str) -> str:
        try:
            return text.format_map(values)
        except (ValueError, TypeError) as exc:
            ctx.fail(path + where, f"cannot fill {text!r} with {values}: {exc}")

    return fill


def _map_templates(task: _Partial, fn: Callable[[Path, str], str]) -> _Partial:
    """Apply `fn(where, text)` to every templated string of a sweep's task fields."""

    def strings(key: str, items: list[str] | None) -> list[str] | None:
        return None if items is None else [fn((key, i), item) for i, item in enumerate(items)]

    argv = task.argv
    if argv is not None:
        argv = [fn(("command",), argv[0])] if task.from_command else strings("argv", argv)
    env = task.env
    if env is not None:
        env = {key: fn(("env", key), item) for key, item in env.items()}
    name = None if task.name is None else fn(("name",), task.name)
    inputs, outputs = strings("inputs", task.inputs), strings("outputs", task.outputs)
    return replace(task, argv=argv, env=env, inputs=inputs, outputs=outputs, name=name)


def _combos(sweep: _Sweep) -> Iterator[dict[str, Scalar]]:
    names = list(sweep.params)
    columns = list(sweep.params.values())
    rows: Iterable[tuple[Scalar, ...]]
    rows = zip(*columns, strict=True) if sweep.zip_mode else itertools.product(*columns)
    for row in rows:
        yield dict(zip(names, row, strict=True))


def _fill(base: TaskDraft, template: _Partial, values: dict[str, Scalar]) -> TaskDraft:
    """One sweep task: `base` (defaults merged with the unfilled template) with templates filled."""
    env = base.env.copy()
    if template.env is not None:
        env.update((key, item.format_map(values)) for key, item in template.env.items())
    return TaskDraft(
        argv=_fill_list(template.argv, base.argv, values),
        env=env,
        inputs=_fill_list(template.inputs, base.inputs, values),
        outputs=_fill_list(template.outputs, base.outputs, values),
        requires=base.requires.copy(),
        limits=base.limits.copy(),
        shell=base.shell,
        max_attempts=base.max_attempts,
        name=base.name if template.name is None else template.name.format_map(values),
    )


def _fill_list(
    items: list[str] | None, fallback: list[str], values: dict[str, Scalar]
) -> list[str]:
    return fallback.copy() if items is None else [item.format_map(values) for item in items]


def _expand(ctx: _Ctx, sweep: _Sweep, defaults: _Partial) -> Iterator[TaskDraft]:
    if sweep.count == 0:
        return
    template = sweep.template
    base = _finish(ctx, _merge(defaults, replace(template, env=None)), sweep.path)
    for values in _combos(sweep):
        try:
            task = _fill(base, template, values)
        except (ValueError, TypeError):
            _map_templates(template, _filler(ctx, sweep.path, values))  # raises, with the field
            raise
        yield task


def _check_size(ctx: _Ctx, root: dict[str, object], explicit: int, sweeps: list[_Sweep]) -> None:
    total = explicit
    for sweep in sweeps:
        total += sweep.count
        if total > MAX_TASKS:
            ctx.fail(sweep.path, f"job would have {total:,} tasks, over the limit of {MAX_TASKS:,}")
    if total == 0:
        path: Path = ("sweep",) if "sweep" in root and "tasks" not in root else ("tasks",)
        ctx.fail(path, "the job has no tasks: add tasks or a sweep")

"""Job files for `corral submit --file`: TOML or JSON text in, task drafts out (pure, no I/O).

This module loads the text and expands sweeps; _tasks.py turns one task table into a
draft, and _lines.py finds the line an error points at.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import string
import tomllib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from ._lines import FieldPath, JsonScan, fmt_path, toml_locator
from ._tasks import (
    TASK_KEYS,
    Ctx,
    JobFileError,
    Partial,
    TaskDraft,
    check_keys,
    expect_str,
    expect_table,
    finish,
    kind_of,
    merge,
    optional,
    parse_partial,
)

__all__ = ["MAX_TASKS", "JobDraft", "JobFileError", "TaskDraft", "guess_format", "parse_jobfile"]

MAX_TASKS = 1_000_000

Scalar = str | int | float

_ROOT_KEYS = ("name", "defaults", "tasks", "sweep")
_SWEEP_KEYS = (*TASK_KEYS, "params", "mode")


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
    ctx = Ctx(text, fmt, source)
    root = expect_table(ctx, _load(text, fmt, source), ())
    check_keys(ctx, root, (), _ROOT_KEYS)
    name = optional(ctx, root, (), "name", expect_str)
    defaults = Partial()
    if "defaults" in root:
        defaults = parse_partial(
            ctx, expect_table(ctx, root["defaults"], ("defaults",)), ("defaults",)
        )
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


def _explicit_tasks(ctx: Ctx, root: dict[str, object], defaults: Partial) -> list[TaskDraft]:
    if "tasks" not in root:
        return []
    items = root["tasks"]
    if not isinstance(items, list):
        ctx.fail(("tasks",), f"must be an array of tables, not {kind_of(items)}")
    if len(items) > MAX_TASKS:
        ctx.fail(("tasks",), f"{len(items):,} tasks is over the limit of {MAX_TASKS:,}")
    drafts: list[TaskDraft] = []
    for index, item in enumerate(items):
        path: FieldPath = ("tasks", index)
        task = parse_partial(ctx, expect_table(ctx, item, path), path)
        drafts.append(finish(ctx, merge(defaults, task), path))
    return drafts


# --- sweeps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sweep:
    path: FieldPath
    template: Partial
    params: dict[str, Sequence[Scalar]]
    zip_mode: bool
    count: int


_FORMATTER = string.Formatter()


def _sweeps(ctx: Ctx, root: dict[str, object], defaults: Partial) -> list[_Sweep]:
    if "sweep" not in root:
        return []
    value = root["sweep"]
    if isinstance(value, list):
        return [_sweep(ctx, item, ("sweep", index), defaults) for index, item in enumerate(value)]
    return [_sweep(ctx, value, ("sweep",), defaults)]


def _sweep(ctx: Ctx, value: object, path: FieldPath, defaults: Partial) -> _Sweep:
    table = expect_table(ctx, value, path, "a table or an array of tables")
    check_keys(ctx, table, path, _SWEEP_KEYS)
    if "params" not in table:
        ctx.fail(path + ("params",), "required: map each parameter to a list or a range")
    params = _params(ctx, table["params"], path + ("params",))
    zip_mode = optional(ctx, table, path, "mode", _mode) or False
    fields = {key: item for key, item in table.items() if key not in ("params", "mode")}
    template = parse_partial(ctx, fields, path)
    _map_templates(template, _checker(ctx, path, list(params)))
    finish(ctx, merge(defaults, template), path)
    return _Sweep(path, template, params, zip_mode, _count(ctx, path, params, zip_mode))


def _mode(ctx: Ctx, value: object, path: FieldPath) -> bool:
    """Return True for zip mode, False for product mode."""
    if value not in ("product", "zip"):
        ctx.fail(path, f"must be 'product' or 'zip', not {value!r}")
    return value == "zip"


def _params(ctx: Ctx, value: object, path: FieldPath) -> dict[str, Sequence[Scalar]]:
    table = expect_table(ctx, value, path)
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


def _param_values(ctx: Ctx, spec: object, path: FieldPath) -> Sequence[Scalar]:
    if isinstance(spec, dict):
        check_keys(ctx, spec, path, ("range",))
        if "range" not in spec:
            ctx.fail(path + ("range",), "required: range = [start, stop] or [start, stop, step]")
        return _range(ctx, spec["range"], path + ("range",))
    if not isinstance(spec, list):
        ctx.fail(
            path, f"must be a list of values or {{range = [start, stop]}}, not {kind_of(spec)}"
        )
    values: list[Scalar] = []
    for index, item in enumerate(spec):
        if not isinstance(item, str | int | float) or isinstance(item, bool):
            ctx.fail(path + (index,), f"must be a string or a number, not {kind_of(item)}")
        values.append(item)
    return values


def _range(ctx: Ctx, value: object, path: FieldPath) -> range:
    if not isinstance(value, list) or len(value) not in (2, 3):
        ctx.fail(path, "must be [start, stop] or [start, stop, step]")
    bounds: list[int] = []
    for index, item in enumerate(value):
        if not isinstance(item, int) or isinstance(item, bool):
            ctx.fail(path + (index,), f"must be an integer, not {kind_of(item)}")
        bounds.append(item)
    if len(bounds) == 3 and bounds[2] == 0:
        ctx.fail(path + (2,), "step must not be zero")
    return range(*bounds)


def _length(values: Sequence[Scalar]) -> int:
    """len() that also works for ranges too long for len()."""
    if isinstance(values, range):
        return max(0, -(-(values.stop - values.start) // values.step))
    return len(values)


def _count(ctx: Ctx, path: FieldPath, params: dict[str, Sequence[Scalar]], zip_mode: bool) -> int:
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


def _checker(ctx: Ctx, path: FieldPath, names: Sequence[str]) -> Callable[[FieldPath, str], str]:
    def check(where: FieldPath, text: str) -> str:
        problem = _template_problem(text, names)
        if problem is not None:
            ctx.fail(path + where, problem)
        return text

    return check


def _filler(
    ctx: Ctx, path: FieldPath, values: dict[str, Scalar]
) -> Callable[[FieldPath, str], str]:
    def fill(where: FieldPath, text: str) -> str:
        try:
            return text.format_map(values)
        except (ValueError, TypeError) as exc:
            ctx.fail(path + where, f"cannot fill {text!r} with {values}: {exc}")

    return fill


def _map_templates(task: Partial, fn: Callable[[FieldPath, str], str]) -> Partial:
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


def _fill(base: TaskDraft, template: Partial, values: dict[str, Scalar]) -> TaskDraft:
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
        retries=base.retries,
        priority=base.priority,
    )


def _fill_list(
    items: list[str] | None, fallback: list[str], values: dict[str, Scalar]
) -> list[str]:
    return fallback.copy() if items is None else [item.format_map(values) for item in items]


def _expand(ctx: Ctx, sweep: _Sweep, defaults: Partial) -> Iterator[TaskDraft]:
    if sweep.count == 0:
        return
    template = sweep.template
    base = finish(ctx, merge(defaults, replace(template, env=None)), sweep.path)
    for values in _combos(sweep):
        try:
            task = _fill(base, template, values)
        except (ValueError, TypeError):
            _map_templates(template, _filler(ctx, sweep.path, values))  # raises, with the field
            raise
        yield task


def _check_size(ctx: Ctx, root: dict[str, object], explicit: int, sweeps: list[_Sweep]) -> None:
    total = explicit
    for sweep in sweeps:
        total += sweep.count
        if total > MAX_TASKS:
            ctx.fail(sweep.path, f"job would have {total:,} tasks, over the limit of {MAX_TASKS:,}")
    if total == 0:
        path: FieldPath = ("sweep",) if "sweep" in root and "tasks" not in root else ("tasks",)
        ctx.fail(path, "the job has no tasks: add tasks or a sweep")

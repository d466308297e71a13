"""Submitting from the browser: a command with "one task per line" lines (as `corral submit
--each-line`, `{}` is the line), uploaded files as every task's inputs, requirements and
limits; or an uploaded job file (TOML or JSON) with its input files.

The form is turned into specs by the same code as the CLI's (corral.jobfile) and checked
whole before anything is stored: a bad form leaves no job, no task and no file behind.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from ...jobfile import (
    JobFileError,
    TaskDraft,
    each_line_argv,
    guess_format,
    limit_value,
    parse_jobfile,
    task_lines,
)
from ...protocol import InputRef, JobCreate, TaskSpec, relpath_problem, task_problems
from .. import guards
from ..errors import ApiError
from ..scheduler import requirement_problem
from .web import HEADERS, Dash, form_of

__all__ = ["Upload", "build", "submit", "submit_form"]

FIELDS = ("name", "command", "lines", "outputs", "requires", "limits", "max_attempts", "retries")


class FormProblem(ValueError):
    """What is wrong with the form, in one line naming the field."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name in the task directory and its bytes."""

    name: str
    data: bytes

    @property
    def ref(self) -> InputRef:
        """The input it becomes."""
        return InputRef(hashlib.sha256(self.data).hexdigest(), len(self.data))


def _pairs(text: str, field: str) -> dict[str, str]:
    out = {}
    for line in task_lines(text.replace(",", "\n")):
        key, eq, value = line.partition("=")
        if not eq or not key.strip():
            raise FormProblem(f"{field}: write KEY=VALUE, one a line (not {line!r})")
        out[key.strip()] = value.strip()
    return out


def _number(form: dict[str, str], field: str, default: int) -> int:
    text = form.get(field, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise FormProblem(f"{field}: a whole number, not {text!r}")
    return int(text)


def _limits(text: str) -> dict[str, float]:
    try:
        return {k: limit_value(k, v) for k, v in _pairs(text, "limits").items()}
    except ValueError as exc:
        raise FormProblem(f"limits: {exc}") from None


def _command_drafts(form: dict[str, str]) -> list[TaskDraft]:
    try:
        argv = shlex.split(form.get("command", ""))
    except ValueError as exc:
        raise FormProblem(f"command: {exc}") from None
    if not argv:
        raise FormProblem("command: give a command line, or upload a job file")
    lines = task_lines(form.get("lines", ""))
    each = [each_line_argv(argv, line) for line in lines] if lines else [argv]
    outputs = form.get("outputs", "").split()
    requires = _pairs(form.get("requires", ""), "requires")
    limits = _limits(form.get("limits", ""))
    attempts, retries = _number(form, "max_attempts", 3), _number(form, "retries", 0)
    shell = form.get("shell") == "on"
    return [
        TaskDraft(a, {}, [], outputs, requires, limits, shell, attempts, "", retries) for a in each
    ]


def _inputs(draft: TaskDraft, uploads: dict[str, Upload], i: int) -> dict[str, InputRef]:
    """A job file's inputs, each one of the uploaded files (by its path, or its name)."""
    if not draft.inputs:
        return {u.name: u.ref for u in uploads.values()}
    out = {}
    for path in draft.inputs:
        found = uploads.get(path) or uploads.get(path.rstrip("/").rsplit("/", 1)[-1])
        if found is None:
            raise FormProblem(f"tasks[{i}].inputs: {path} was not uploaded; add it under Files")
        out[path if relpath_problem(path) is None else found.name] = found.ref
    return out


def build(
    form: dict[str, str], uploads: Sequence[Upload], jobfile: Upload | None
) -> tuple[str, list[TaskSpec]]:
    """The job's name and specs from a submit form; FormProblem (or JobFileError, with line
    and field) when something is wrong. Pure: nothing is stored."""
    by_name = {u.name: u for u in uploads}
    name = form.get("name", "").strip()
    if jobfile is not None:
        text = jobfile.data.decode(errors="replace")
        job = parse_jobfile(text, guess_format(jobfile.name, text), jobfile.name)
        drafts, name = job.tasks, name or job.name
    else:
        drafts = _command_drafts(form)
    specs = []
    for i, d in enumerate(drafts):
        spec = d.spec(_inputs(d, by_name, i) if jobfile else {u.name: u.ref for u in uploads})
        problems = task_problems(spec)
        problems += [p for k, v in spec.requires.items() if (p := requirement_problem(k, v))]
        if problems:
            raise FormProblem(f"tasks[{i}].{problems[0]}")
        specs.append(spec)
    return name or (drafts[0].argv[0].rsplit("/", 1)[-1] if drafts else "job"), specs


async def _uploads(form: FormData) -> tuple[list[Upload], Upload | None]:
    files = []
    for item in form.getlist("files"):
        if isinstance(item, UploadFile) and item.filename:
            name = item.filename.replace("\\", "/").rsplit("/", 1)[-1]
            if relpath_problem(name):
                raise FormProblem(f"files: {name!r} cannot be a file name in a task directory")
            files.append(Upload(name, await item.read()))
    jobfile = form.get("jobfile")
    if isinstance(jobfile, UploadFile) and jobfile.filename:
        return files, Upload(jobfile.filename, await jobfile.read())
    return files, None


async def submit_form(request: Request, dash: Dash) -> Response:
    return dash.render(request, "submit.html", form={}, problem="", live="")


async def submit(request: Request, dash: Dash) -> Response:
    raw = await form_of(request)
    form = {k: v for k in FIELDS if isinstance(v := raw.get(k, ""), str)}
    form["shell"] = str(raw.get("shell", ""))
    try:
        uploads, jobfile = await _uploads(raw)
        name, specs = build(form, uploads, jobfile)
    except (FormProblem, JobFileError) as exc:
        return dash.render(request, "submit.html", 422, form=form, problem=str(exc), live="")
    coord, now = dash.coord, dash.now()
    for upload in uploads:
        coord.blobs.put_bytes(upload.data)
    guards.grant(request, coord.store, [u.ref.sha256 for u in uploads])
    try:
        job = coord.submit(JobCreate(tasks=specs, name=name[:200]), guards.principal(request).owner)
    except ApiError as exc:
        return dash.render(request, "submit.html", 422, form=form, problem=exc.detail, live="")
    guards.audit(request, coord.store, now, "job.submit", job.id, f"{job.total} tasks")
    return RedirectResponse(f"/ui/jobs/{quote(job.id)}", 303, headers=HEADERS)

"""`corral submit`: one task, one task per stdin line, or a job file."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import msgspec

from ..client import ApiError, Client
from ..coordinator.scheduler import never_met
from ..jobfile import (
    JobFileError,
    TaskDraft,
    each_line_argv,
    guess_format,
    parse_jobfile,
    task_lines,
)
from ..protocol import MAX_PRIORITY, InputRef, Job, TaskSpec, relpath_problem, task_problems
from ._common import (
    Fail,
    client_errors,
    json_option,
    key_values,
    make_client,
    number,
    print_json,
    server_options,
)
from ._fork import add_to_job, with_after
from ._ids import task_ids
from ._limits import parse_limits
from ._watch import follow

RECENT = 3600.0  # workers heard from this recently count as the farm


@dataclass
class _Plan:
    """Tasks to submit and the local paths each one ships."""

    drafts: list[TaskDraft] = field(default_factory=list)
    paths: list[list[Path]] = field(default_factory=list)
    rename: list[dict[str, str]] = field(default_factory=list)


def _check_paths(paths: list[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise Fail(f"input {path} does not exist; check the path given to --input")


def _draft(argv: list[str], opts: dict[str, object]) -> TaskDraft:
    return TaskDraft(
        argv=argv,
        env=dict(opts["env"]),  # type: ignore[call-overload]
        inputs=[],
        outputs=list(opts["outputs"]),  # type: ignore[call-overload]
        requires=dict(opts["requires"]),  # type: ignore[call-overload]
        limits=dict(opts.get("limits", {})),  # type: ignore[call-overload]
        shell=bool(opts["shell"]),
        max_attempts=int(opts["max_attempts"]),  # type: ignore[call-overload]
        name="",
        retries=int(opts["retries"]),  # type: ignore[call-overload]
    )


def _plan_each_line(argv: list[str], opts: dict[str, object], transfer: bool) -> _Plan:
    plan = _Plan()
    shared = [Path(p) for p in opts["inputs"]]  # type: ignore[attr-defined]
    for line in task_lines(sys.stdin.read()):
        paths, rename = list(shared), {}
        if transfer:
            local = Path(line)
            if not local.is_file():
                raise Fail(f"--transfer: {line} is not a file")
            paths.append(local)
            # a file lands in the task directory under its relative path when that is safe
            wanted = line if relpath_problem(line) is None else local.name
            rename[local.name] = wanted
            line = wanted
        plan.drafts.append(_draft(each_line_argv(argv, line), opts))
        plan.paths.append(paths)
        plan.rename.append(rename)
    if not plan.drafts:
        raise Fail("--each-line read no lines from stdin; pipe in one argument per line")
    return plan


def _plan_file(jobfile: str) -> tuple[str, _Plan]:
    if jobfile == "-":
        text, source, base = sys.stdin.read(), "<stdin>", Path.cwd()
    else:
        path = Path(jobfile)
        try:
            text = path.read_text()
        except OSError as exc:
            raise Fail(f"cannot read job file {jobfile}: {exc.strerror}") from exc
        source, base = jobfile, path.parent
    try:
        job = parse_jobfile(text, guess_format(source, text), source)
    except JobFileError as exc:
        raise Fail(str(exc)) from exc
    plan = _Plan()
    for draft in job.tasks:
        plan.drafts.append(draft)
        plan.paths.append([base / p for p in draft.inputs])
        plan.rename.append({})
    return job.name, plan


def _specs(client: Client, plan: _Plan) -> list[TaskSpec]:
    unique = list(dict.fromkeys(p for paths in plan.paths for p in paths))
    _check_paths(unique)
    refs = dict(zip(unique, client.upload_each(unique), strict=True))
    specs = []
    for i, (draft, paths, rename) in enumerate(
        zip(plan.drafts, plan.paths, plan.rename, strict=True)
    ):
        inputs: dict[str, InputRef] = {}
        for path in paths:
            for name, ref in refs[path].items():
                inputs[rename.get(name, name)] = ref
        spec = draft.spec(inputs)
        problems = task_problems(spec)
        if problems:
            raise Fail(f"task {i}: {problems[0]}")
        specs.append(spec)
    return specs


@click.command(context_settings={"ignore_unknown_options": False})
@click.option("--input", "inputs", multiple=True, metavar="PATH", help="File or directory to ship.")
@click.option("--output", "outputs", multiple=True, metavar="GLOB", help="Only return these files.")
@click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable.")
@click.option("--requires", "requires", multiple=True, metavar="K=V", help="Worker requirement.")
@click.option(
    "--limit",
    "limits",
    multiple=True,
    metavar="K=V",
    help="Task limit: wall_time, cpu_time (s), memory, file_size, output_size (bytes), processes.",
)
@click.option("--name", default="", help="Job name.")
@click.option("--shell", is_flag=True, help="Run the command through /bin/sh -c.")
@click.option("--max-attempts", default=3, show_default=True, type=click.IntRange(1))
@click.option(
    "--retries",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Re-run a failing task (non-zero exit) up to N times, with growing delays.",
)
@click.option("--each-line", is_flag=True, help="One task per stdin line; {} is the line.")
@click.option("--transfer", is_flag=True, help="With --each-line: ship each line's file.")
@click.option("--file", "jobfile", metavar="JOBFILE", help="A TOML or JSON job file; - for stdin.")
@click.option("--wait", is_flag=True, help="Wait for the job and report each task.")
@click.option("--job", "job_id", metavar="JOB", help="Add the tasks to this running job.")
@click.option(
    "--after",
    multiple=True,
    metavar="ID",
    help="Hold until this task (or every task of this job) succeeds.",
)
@click.option(
    "--strict", is_flag=True, help="Refuse tasks no worker seen in the last hour could run."
)
@click.option(
    "--speculative", is_flag=True, help="Back up a task running far past its peers' median."
)
@click.option(
    "--priority",
    default=None,
    metavar="N",
    help="Run before (higher) or after your other queued work; ties by submission [default: 0].",
)
@json_option
@server_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@client_errors
def submit(
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    env: tuple[str, ...],
    requires: tuple[str, ...],
    limits: tuple[str, ...],
    name: str,
    shell: bool,
    max_attempts: int,
    retries: int,
    each_line: bool,
    transfer: bool,
    jobfile: str | None,
    wait: bool,
    job_id: str | None,
    after: tuple[str, ...],
    strict: bool,
    speculative: bool,
    priority: str | None,
    as_json: bool,
    server: str | None,
    token: str | None,
    command: tuple[str, ...],
) -> None:
    """Submit work: `corral submit [OPTIONS] -- CMD [ARGS...]`."""
    rank = int(number(priority, "--priority", -MAX_PRIORITY, MAX_PRIORITY, whole=True) or 0)
    opts: dict[str, object] = {
        "inputs": inputs,
        "outputs": outputs,
        "env": key_values(env, "--env"),
        "requires": key_values(requires, "--requires"),
        "limits": parse_limits(limits),
        "shell": shell,
        "max_attempts": max_attempts,
        "retries": retries,
    }
    argv = list(command)
    if jobfile is not None:
        if argv or each_line:
            raise Fail("--file describes the tasks itself; drop the command and --each-line")
        job_name, plan = _plan_file(jobfile)
        name = name or job_name
    else:
        if not argv or not argv[0]:
            raise Fail("no command given; write it after --, e.g. `corral submit -- echo hi`")
        _check_paths([Path(p) for p in inputs])
        if each_line:
            plan = _plan_each_line(argv, opts, transfer)
        else:
            plan = _Plan([_draft(argv, opts)], [[Path(p) for p in inputs]], [{}])
    with make_client(server, token) as client:
        held = [t for ref in after for t in task_ids(client, ref)]
        specs = with_after(_specs(client, plan), tuple(held))
        _check_runnable(client, specs, strict)
        if job_id:
            if priority is not None:  # the job's own stays; these tasks carry theirs
                specs = [msgspec.structs.replace(s, priority=rank) for s in specs]
            add_to_job(client, job_id, specs, as_json, wait)
            return
        job_name = name or os.path.basename(argv[0] if argv else "job")
        job = client.submit_job(specs, job_name, speculative=speculative, priority=rank)
        _announce(job, as_json, wait)
        if wait:
            raise SystemExit(follow(client, job.id, as_json))


def _check_runnable(client: Client, specs: list[TaskSpec], strict: bool) -> None:
    """Warn (with `strict`, refuse) when no worker seen lately could ever run a task."""
    try:
        found = client.workers()
    except ApiError:  # a job token (a task forking) may not list workers: not judged
        return
    recent = [w for w in found if time.time() - w.last_heartbeat < RECENT]
    for i, spec in enumerate(specs):
        problem = never_met(spec.requires, recent)
        if problem is None:
            continue
        which = f"task {i}" if len(specs) > 1 else "the task"
        said = f"{which} could never run: {problem} (seen in the last hour)"
        if strict:
            raise Fail(f"{said}; not submitted")
        click.echo(f"corral: warning: {said}; it waits until one joins", err=True)
        return


def _announce(job: Job, as_json: bool, wait: bool) -> None:
    if as_json and not wait:
        print_json(job)
    elif not as_json:
        click.echo(job.id)


__all__ = ["submit"]

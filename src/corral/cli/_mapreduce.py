"""`corral mapreduce`: a Python MapReduce class from a file, or streaming mode with programs.

    corral mapreduce wordcount.py:WordCount --reducers 4 --out counts/
    corral mapreduce --mapper 'python3 mapper.py' --reducer 'python3 reducer.py' \\
        --input texts/ --file mapper.py --file reducer.py --reducers 4 --out counts/

With FILE.py:ClassName, `--input` values (if any) are passed to the class as one list
argument. Without `--out` the output pairs are printed, one line each (JSON `[key, value]`
for a class, `key<TAB>value` for streaming).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import click

from ..mapreduce import MapReduce, MapReduceError, Streaming
from ._common import Fail, FailedWork, client_errors, make_client, server_options

__all__ = ["mapreduce"]


def _load_class(target: str, inputs: tuple[str, ...]) -> MapReduce:
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise Fail(f"{target!r}: name a class as FILE.py:ClassName")
    file = Path(path)
    if not file.is_file():
        raise Fail(f"{file} does not exist")
    module_name = f"corral_job_{file.stem}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise Fail(f"{file} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(file.parent.absolute()))  # its own imports, as `python FILE` would
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise Fail(f"{file} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, MapReduce)):
        raise Fail(f"{file} has no MapReduce subclass named {name}")
    try:
        made: MapReduce = cls(list(inputs)) if inputs else cls()  # type: ignore[call-arg]
        return made
    except TypeError as exc:
        how = "with the --input list" if inputs else "with no arguments"
        raise Fail(f"{name}() cannot be made {how}: {exc}") from exc


@click.command()
@click.argument("target", required=False)
@click.option("--mapper", help="Streaming: the program mapping input lines to KEY<TAB>VALUE.")
@click.option("--reducer", help="Streaming: the program reading sorted lines of a partition.")
@click.option("--combiner", help="Streaming: a program run on each map's sorted output.")
@click.option(
    "--input", "inputs", multiple=True, help="Input file or directory (a class gets the list)."
)
@click.option("--file", "files", multiple=True, help="Streaming: a file every task needs.")
@click.option("--chunk-size", default="8M", show_default=True, help="Streaming: bytes a map.")
@click.option("--reducers", default=1, show_default=True, type=click.IntRange(1, 10000))
@click.option("--out", type=click.Path(path_type=Path), help="Write part files here.")
@click.option("--local", is_flag=True, help="Run in this process, with no farm.")
@click.option("--no-speculative", is_flag=True, help="Never back up a slow task.")
@server_options
@client_errors
def mapreduce(
    target: str | None,
    mapper: str | None,
    reducer: str | None,
    combiner: str | None,
    inputs: tuple[str, ...],
    files: tuple[str, ...],
    chunk_size: str,
    reducers: int,
    out: Path | None,
    local: bool,
    no_speculative: bool,
    server: str | None,
    token: str | None,
) -> None:
    """Run a MapReduce: FILE.py:ClassName, or streaming mode with --mapper and --input."""
    if out is not None and out.exists():
        raise Fail(f"--out {out} already exists: remove it or choose another directory")
    job = _job(target, mapper, reducer, combiner, inputs, files, chunk_size)
    client = None if local else make_client(server, token)
    try:
        result: Any = job.run(
            client, reducers=reducers, out=out, local=local, speculative=not no_speculative
        )
    except MapReduceError as exc:
        raise FailedWork(str(exc)) from exc
    except (ValueError, FileNotFoundError) as exc:
        raise Fail(str(exc)) from exc
    finally:
        if client is not None:
            client.close()
    if out is not None:
        click.echo(f"wrote {out}/part-00000 ... part-{reducers - 1:05d}", err=True)
    elif result is not None:
        for key, value in result:
            click.echo(job._corral_line(key, value))


def _job(
    target: str | None,
    mapper: str | None,
    reducer: str | None,
    combiner: str | None,
    inputs: tuple[str, ...],
    files: tuple[str, ...],
    chunk_size: str,
) -> MapReduce:
    if target is not None:
        if mapper or reducer or combiner or files:
            raise Fail("give either FILE.py:ClassName or --mapper/--reducer, not both")
        return _load_class(target, inputs)
    if not mapper or not inputs:
        raise Fail("streaming mode needs --mapper and --input (or give FILE.py:ClassName)")
    for path in inputs:
        if not Path(path).exists():
            raise Fail(f"--input {path} does not exist")
    try:
        return Streaming(
            mapper, reducer, inputs, combiner=combiner, files=files, chunk_size=chunk_size
        )
    except (ValueError, FileNotFoundError) as exc:
        raise Fail(str(exc)) from exc

"""Streaming mode: existing programs as mapper, combiner and reducer, Hadoop streaming's
contract with no JVM.

A mapper gets its chunk's lines on stdin and writes `key<TAB>value` lines (a line with no
tab is a key with an empty value); the framework partitions them by key and sorts them; a
reducer gets its partition's lines sorted by key on stdin, and what it writes becomes that
partition's part file. A combiner, if given, gets each map spill's sorted lines the same way.
One process per chunk, spill and partition, as in Hadoop. A line on a program's stderr of
the form `reporter:counter:GROUP,NAME,N` adds N to a counter, as Hadoop streaming reads it.

Programs run in the task directory, where the `files` (`--file`) are staged; in local mode
in a temporary directory holding links to them, so a command naming `mapper.py` works the
same both ways.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from ._job import MapReduce, MapReduceError
from ._runs import Emit
from ._text import TextChunk, TextFiles

__all__ = ["Streaming", "StreamingError"]

_TAIL = 2000  # bytes of a failed program's stderr quoted in the error
_COUNTER = "reporter:counter:"


class StreamingError(MapReduceError):
    """A mapper, combiner or reducer program failed."""


class Streaming(MapReduce):
    """A MapReduce whose map, combine and reduce are programs reading lines on stdin."""

    def __init__(
        self,
        mapper: str,
        reducer: str | None,
        inputs: Iterable[str | Path],
        *,
        combiner: str | None = None,
        files: Iterable[str | Path] = (),
        chunk_size: int | str = "8M",
    ) -> None:
        self.mapper, self.reducer, self.combiner = mapper, reducer, combiner
        self.inputs = [str(p) for p in inputs]
        self.files = [Path(f).absolute() for f in files]
        for f in self.files:
            if not f.is_file():
                raise FileNotFoundError(f"--file {f} does not exist")
        self.chunk_size = chunk_size
        for what, cmd in (("mapper", mapper), ("reducer", reducer), ("combiner", combiner)):
            if cmd is not None and not shlex.split(cmd):
                raise ValueError(f"the {what} command is empty")

    def chunks(self) -> TextFiles:
        """The input files in line-aligned chunks."""
        return TextFiles(self.inputs, self.chunk_size)

    def _corral_files(self) -> list[Path]:
        return list(self.files)

    def _corral_map(self, chunk: TextChunk, emit: Emit) -> None:
        lines = (line for _, line in chunk.raw_lines())
        self._pipe("mapper", self.mapper, f"chunk {chunk}", lines, emit)

    def _corral_combines(self) -> bool:
        return self.combiner is not None

    def _corral_combine(self, groups: Iterable[tuple[Any, Iterator[Any]]], emit: Emit) -> None:
        assert self.combiner is not None
        self._pipe("combiner", self.combiner, "a map spill", _lines(groups), emit)

    def _corral_reduce(self, groups: Iterable[tuple[Any, Iterator[Any]]], emit: Emit) -> None:
        if self.reducer is None:  # map only: the sorted map output is the output
            for key, values in groups:
                for value in values:
                    emit(key, value)
            return
        self._pipe("reducer", self.reducer, "its partition", _lines(groups), emit)

    def _corral_line(self, key: Any, value: Any) -> str:
        return f"{key}\t{value}" if value != "" else str(key)

    def _pipe(self, role: str, cmd: str, where: str, lines: Iterable[bytes], emit: Emit) -> None:
        with self._workdir() as cwd, tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(
                    shlex.split(cmd),
                    cwd=cwd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
            except OSError as exc:
                raise StreamingError(f"the {role} {cmd!r} cannot start: {exc}") from None
            assert proc.stdin is not None and proc.stdout is not None
            failed: list[BaseException] = []
            feeder = threading.Thread(target=_feed, args=(proc.stdin, lines, failed))
            feeder.start()
            with proc:  # closes its pipes
                try:
                    for line in proc.stdout:
                        key, _, value = line.rstrip(b"\r\n").partition(b"\t")
                        emit(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
                except BaseException:
                    proc.kill()
                    raise
                finally:
                    feeder.join()
                code = proc.wait()
            if failed:  # reading the input failed: not the program's fault
                raise failed[0]
            tail = self._stderr(err)
        if code != 0:
            raise StreamingError(
                f"the {role} {cmd!r} exited with code {code} on {where}; "
                f"its stderr ends with: {_one_line(tail) or '(nothing)'}"
            )

    def _stderr(self, err: IO[bytes]) -> str:
        """Pass the program's stderr on, count its counter lines; return its end."""
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if line.startswith(_COUNTER):
                group, _, rest = line[len(_COUNTER) :].partition(",")
                name, _, n = rest.rpartition(",")
                with contextlib.suppress(ValueError):
                    self.count(group, name, int(n))
        sys.stderr.write(text)
        return text[-_TAIL:]

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[str]:
        if all(Path(f.name).is_file() for f in self.files):
            yield "."  # on a worker: the files are staged in the task directory
            return
        with tempfile.TemporaryDirectory(prefix="corral-streaming-") as tmp:
            for f in self.files:
                os.symlink(f, Path(tmp, f.name))
            yield tmp


def _lines(groups: Iterable[tuple[Any, Iterator[Any]]]) -> Iterator[bytes]:
    for key, values in groups:
        k = str(key).encode()
        for value in values:
            yield k + b"\t" + str(value).encode() + b"\n" if value != "" else k + b"\n"


def _feed(stdin: IO[bytes], lines: Iterable[bytes], failed: list[BaseException]) -> None:
    try:
        for line in lines:
            try:
                stdin.write(line if line.endswith(b"\n") else line + b"\n")
            except OSError:  # BrokenPipeError included: the program stopped reading
                return
    except BaseException as exc:
        failed.append(exc)
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())

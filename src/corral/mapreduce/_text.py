"""TextFiles: local text files split into line-aligned chunks, each file shipped once.

A chunk is a byte range [start, end) of one file. It holds every line that *starts* inside
its range: a chunk that does not begin at 0 skips the partial line it begins in (the previous
chunk reads it to its end), and its last line runs past `end` to its newline. So every line is
read exactly once, whatever the chunk size, as Hadoop's line reader does.

The file goes with the map task as an input (`corral_inputs`), so it is uploaded once (by
content address) and fetched once per worker, whatever number of chunks that worker runs;
on the worker `corral_staged` points the chunk at the staged copy in the task directory.
Rejected: shipping each chunk's bytes as its own blob (a second copy of the data, hashed
again, and no reuse when the chunk size changes).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TextChunk", "TextFiles", "parse_size"]

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(size: int | str) -> int:
    """Bytes from 8388608, "8M", "512k", "1G"."""
    if isinstance(size, int):
        n = size
    else:
        found = _SIZE.match(size)
        if found is None:
            raise ValueError(f"chunk size {size!r}: give bytes, or a number with K, M or G")
        n = int(found[1]) * _UNITS[found[2].lower()]
    if n < 1:
        raise ValueError(f"chunk size {size!r} must be at least one byte")
    return n


@dataclass(frozen=True)
class TextChunk:
    """Lines of one text file whose first byte lies in [start, end)."""

    path: str  # where to open it: the local file, or its staged name on a worker
    name: str  # its name in a task directory
    start: int
    end: int

    def raw_lines(self) -> Iterator[tuple[int, bytes]]:
        """(byte offset, line with its newline) for each line of the chunk."""
        with open(self.path, "rb") as f:
            pos = self.start
            if pos > 0:
                f.seek(pos - 1)
                pos += len(f.readline()) - 1  # finish the line the previous chunk owns
            for line in f:
                if pos >= self.end:
                    return
                yield pos, line
                pos += len(line)

    def lines(self) -> Iterator[tuple[int, str]]:
        """(byte offset, line without its newline), decoded as UTF-8."""
        for pos, line in self.raw_lines():
            yield pos, line.rstrip(b"\r\n").decode("utf-8", "replace")

    def corral_inputs(self) -> list[Path]:
        """The local file this chunk's map task needs."""
        return [Path(self.path)]

    def corral_staged(self) -> TextChunk:
        """This chunk reading the copy staged in the task directory."""
        return dataclasses.replace(self, path=self.name)

    def __str__(self) -> str:
        return f"{self.path}:{self.start}-{self.end}"


class TextFiles(Sequence[TextChunk]):
    """Files and directories (recursively, in name order) split into `chunk_size` chunks."""

    def __init__(self, paths: Iterable[str | Path], chunk_size: int | str = "8M") -> None:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        size = parse_size(chunk_size)
        self._chunks: list[TextChunk] = []
        for file in _files(Path(p) for p in paths):
            length = file.stat().st_size
            for start in range(0, length, size):
                end = min(start + size, length)
                self._chunks.append(TextChunk(str(file), file.name, start, end))

    def __len__(self) -> int:
        return len(self._chunks)

    def __getitem__(self, i: int) -> TextChunk:  # type: ignore[override]
        return self._chunks[i]

    def __iter__(self) -> Iterator[TextChunk]:
        return iter(self._chunks)


def _files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file())
        else:
            raise FileNotFoundError(f"input {path} does not exist")

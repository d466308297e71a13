"""An inverted index: each word and the sorted list of files it occurs in.

    corral mapreduce inverted_index.py:InvertedIndex --input texts/ --out index/
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from corral.mapreduce import MapReduce, TextChunk, TextFiles

WORD = re.compile(r"[a-z0-9']+")


class InvertedIndex(MapReduce):
    """word -> sorted names of the files that contain it."""

    def __init__(self, inputs: Sequence[str] = ("texts",), chunk_size: str = "8M") -> None:
        self.inputs, self.chunk_size = list(inputs), chunk_size

    def chunks(self) -> TextFiles:
        return TextFiles(self.inputs, chunk_size=self.chunk_size)

    def read(self, chunk: TextChunk) -> Iterator[tuple[str, str]]:
        name = Path(chunk.name).name  # the file's name, the same on a worker and here
        for _, line in chunk.lines():
            yield name, line

    def map(self, name: str, line: str) -> Iterator[tuple[str, str]]:
        for word in set(WORD.findall(line.lower())):
            yield word, name

    def combine(self, word: str, names: Iterator[str]) -> None:
        for name in sorted(set(names)):
            self.emit(word, name)

    def reduce(self, word: str, names: Iterator[str]) -> None:
        self.emit(word, sorted(set(names)))

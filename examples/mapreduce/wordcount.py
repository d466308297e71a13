"""Word count as a Python class: `corral mapreduce wordcount.py:WordCount --input texts/`.

Or from Python: `WordCount(["texts/"]).run(reducers=4)`; `run(local=True)` with no farm.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from corral.mapreduce import MapReduce, TextFiles

WORD = re.compile(r"[a-z0-9']+")


class WordCount(MapReduce):
    """How many times each word occurs in the input files (lower-cased)."""

    def __init__(self, inputs: Sequence[str] = ("texts",), chunk_size: str = "8M") -> None:
        self.inputs, self.chunk_size = list(inputs), chunk_size

    def chunks(self) -> TextFiles:
        return TextFiles(self.inputs, chunk_size=self.chunk_size)

    def map(self, offset: int, line: str) -> None:
        for word in WORD.findall(line.lower()):
            self.emit(word, 1)

    def combine(self, word: str, counts: Iterator[int]) -> None:
        self.emit(word, sum(counts))

    def reduce(self, word: str, counts: Iterator[int]) -> None:
        self.emit(word, sum(counts))

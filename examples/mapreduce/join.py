"""A join of two datasets by key (a reduce-side join): people.csv and orders.csv by person id.

    corral mapreduce join.py:Join --input people.csv --input orders.csv --out joined/

Each map tags its records with the dataset they came from; each reduce gets one person id
with the records of both, and emits one row per (person, order) pair.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from corral.mapreduce import MapReduce, TextChunk, TextFiles


class Join(MapReduce):
    """people (id,name) joined with orders (order,id,amount) on the person id."""

    def __init__(self, inputs: Sequence[str] = ("people.csv", "orders.csv")) -> None:
        self.inputs = list(inputs)

    def chunks(self) -> TextFiles:
        return TextFiles(self.inputs, chunk_size="8M")

    def read(self, chunk: TextChunk) -> Iterator[tuple[str, list[str]]]:
        source = Path(chunk.name).stem  # "people" or "orders"
        for _, line in chunk.lines():
            if line.strip():
                yield source, line.split(",")

    def map(self, source: str, fields: list[str]) -> Iterator[tuple[str, tuple[str, ...]]]:
        if source == "people":
            person, name = fields
            yield person, ("person", name)
        else:
            order, person, amount = fields
            yield person, ("order", order, amount)

    def reduce(self, person: str, records: Iterator[tuple[str, ...]]) -> None:
        names, orders = [], []
        for record in records:
            (names if record[0] == "person" else orders).append(record[1:])
        for (name,) in names:
            for order, amount in sorted(orders):
                self.emit(person, [name, order, float(amount)])

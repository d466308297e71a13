"""Map and reduce progress bars and the counters table, on stderr with rich."""

from __future__ import annotations

from typing import Any

import rich.progress
from rich.console import Console
from rich.table import Table

__all__ = ["Progress", "show_counters"]


class Progress:
    """Two bars, map and reduce; does nothing when not shown."""

    def __init__(self, show: bool, maps: int, reduces: int) -> None:
        self._bars: rich.progress.Progress | None = None
        if show:
            self._bars = rich.progress.Progress(
                *rich.progress.Progress.get_default_columns(),
                rich.progress.MofNCompleteColumn(),
                console=Console(stderr=True),
            )
            self._map = self._bars.add_task("map", total=maps)
            self._reduce = self._bars.add_task("reduce", total=reduces)

    def __enter__(self) -> Progress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def mapped(self) -> None:
        """One map task finished."""
        if self._bars is not None:
            self._bars.advance(self._map)

    def reduced(self) -> None:
        """One reduce task finished."""
        if self._bars is not None:
            self._bars.advance(self._reduce)


def show_counters(counters: dict[str, dict[str, Any]]) -> None:
    """The job's counters as a table on stderr."""
    table = Table("group", "counter", "value", title="counters")
    for group, names in counters.items():
        for name, value in names.items():
            table.add_row(group, name, str(value))
    Console(stderr=True).print(table)

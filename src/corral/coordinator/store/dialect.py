"""What differs between the two SQL dialects the store speaks, SQLite's and PostgreSQL's.

SQLStore (`_sql.py`) writes every query once, as a template: `?` marks a parameter and a
`{word}` a piece the dialect supplies (a row lock, GREATEST or MAX, an index hint, a column
type). WORDS below is the whole list of such pieces, side by side. Two shapes vary with the
number of values, so each dialect has a form for them:

- a list `{ids}`: SQLite's `IN (?,...)`, padded to a power of two, or PostgreSQL's `= ANY(%s)`
  with one array;
- a batch `{rows}` read as `WITH r(columns) AS ({rows})`: SQLite's `VALUES (?,...), ...`, or
  PostgreSQL's `unnest` of one array per column.

Both keep the number of distinct statement texts small, so the databases' prepared-statement
caches keep hitting.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

# A spec longer than sqlite.INLINE_SPEC lives in SQLite's task_specs, its row keeping an empty one.
_SQLITE_SPEC = (
    "CASE WHEN length(spec) THEN spec"
    " ELSE (SELECT s.spec FROM task_specs s WHERE s.id = tasks.id) END"
)

# word: (SQLite, PostgreSQL)
WORDS: dict[str, tuple[str, str]] = {
    # column types of the schema (_schema.py)
    "real": ("REAL", "DOUBLE PRECISION"),
    "blob": ("BLOB", "BYTEA"),
    "serial": ("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY"),
    # requirement classes compare byte by byte on both (QUEUED_CLASSES walks them in order)
    "bytewise": ("TEXT", 'TEXT COLLATE "C"'),
    # a tie on ids sorted as SQLite compares them
    "by_id": ("id", 'id COLLATE "C"'),
    # rows a SELECT claims: another coordinator sharing the database passes over them
    "lock": ("", " FOR UPDATE SKIP LOCKED"),
    # GREATEST skips NULLs where SQLite's MAX returns NULL: callers keep NULLs out
    "greatest": ("MAX", "GREATEST"),
    # SQLite's planner would walk the queue index instead of the few retries waiting
    "by_retry": (" INDEXED BY tasks_retry", ""),
    "spec": (_SQLITE_SPEC, "spec"),
    # a table's columns (the table's name a parameter)
    "column_names": (
        "SELECT name FROM pragma_table_info(?)",
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ?",
    ),
}


class Dialect(abc.ABC):
    """The words of one dialect, its placeholder, and its list and batch forms."""

    placeholder = "?"
    chunk = 1 << 16  # values in one list at the most

    def __init__(self, column: int) -> None:
        self.words = {word: forms[column] for word, forms in WORDS.items()}

    def list_size(self, n: int) -> int:
        """How many values a list of `n` is sent as (a list's text depends only on this)."""
        return 1

    def rows_size(self, n: int) -> int:
        """How many rows a batch of `n` is written for (0: its text fits any number)."""
        return 0

    @abc.abstractmethod
    def list_text(self, size: int) -> str:
        """What `{ids}` becomes for a list sent as `size` values."""

    @abc.abstractmethod
    def list_args(self, values: Sequence[Any], size: int) -> list[Any]:
        """The parameters of a list."""

    @abc.abstractmethod
    def rows_text(self, types: Sequence[str], n: int) -> str:
        """What `{rows}` becomes for `n` rows of these (PostgreSQL) column types."""

    @abc.abstractmethod
    def rows_args(self, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """The parameters of a batch of rows."""


class _SQLite(Dialect):
    chunk = 512  # well within SQLite's limit on parameters, even padded

    def list_size(self, n: int) -> int:
        size = 1
        while size < n:
            size *= 2
        return size if n else 0

    def list_text(self, size: int) -> str:
        return f"IN ({','.join('?' * size)})" if size else "IN (NULL)"  # NULL matches nothing

    def list_args(self, values: Sequence[Any], size: int) -> list[Any]:
        return [*values, *[values[-1]] * (size - len(values))] if values else []

    def rows_size(self, n: int) -> int:
        return n

    def rows_text(self, types: Sequence[str], n: int) -> str:
        row = f"({','.join('?' * len(types))})"
        return "VALUES " + ",".join([row] * n)

    def rows_args(self, rows: Sequence[Sequence[Any]]) -> list[Any]:
        return [v for row in rows for v in row]


class _Postgres(Dialect):
    placeholder = "%s"

    def list_text(self, size: int) -> str:
        return "= ANY(%s)"

    def list_args(self, values: Sequence[Any], size: int) -> list[Any]:
        return [list(values)]

    def rows_text(self, types: Sequence[str], n: int) -> str:
        return f"SELECT * FROM unnest({', '.join(f'%s::{t}[]' for t in types)})"

    def rows_args(self, rows: Sequence[Sequence[Any]]) -> list[Any]:
        return [list(column) for column in zip(*rows, strict=True)]


SQLITE: Dialect = _SQLite(0)
POSTGRES: Dialect = _Postgres(1)

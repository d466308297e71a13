"""The two SQL dialects: lists padded for SQLite's statement cache, arrays for PostgreSQL, and
templates rendered once."""

from __future__ import annotations

from pathlib import Path

from corral.coordinator.store import SQLiteStore
from corral.coordinator.store.dialect import POSTGRES, SQLITE


def test_sqlite_lists_are_padded_to_a_power_of_two() -> None:
    sizes = [SQLITE.list_size(n) for n in (0, 1, 2, 3, 5, 8, 9, 512)]
    assert sizes == [0, 1, 2, 4, 8, 8, 16, 512]
    assert SQLITE.list_text(4) == "IN (?,?,?,?)"
    assert SQLITE.list_args(["a", "b", "c"], 4) == ["a", "b", "c", "c"]  # the last repeated
    assert (SQLITE.list_text(0), SQLITE.list_args([], 0)) == ("IN (NULL)", [])


def test_postgres_lists_are_one_array_whatever_their_length() -> None:
    assert {POSTGRES.list_size(n) for n in (0, 1, 3, 1000)} == {1}
    assert POSTGRES.list_text(1) == "= ANY(%s)"
    assert POSTGRES.list_args(("a", "b"), 1) == [["a", "b"]]


def test_batches_are_values_rows_or_arrays_by_column() -> None:
    rows = [("t1", "l1"), ("t2", "l2")]
    assert SQLITE.rows_text(("text", "text"), 2) == "VALUES (?,?),(?,?)"
    assert SQLITE.rows_args(rows) == ["t1", "l1", "t2", "l2"]
    assert POSTGRES.rows_size(2) == POSTGRES.rows_size(500) == 0  # one text for any number
    assert POSTGRES.rows_text(("text", "int"), 0) == "SELECT * FROM unnest(%s::text[], %s::int[])"
    assert POSTGRES.rows_args(rows) == [["t1", "t2"], ["l1", "l2"]]


def test_a_template_is_rendered_once_per_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "corral.db")
    try:
        template = "SELECT MAX(seq) FROM events WHERE job_id = ?{lock}"
        text = store._q(template)
        assert text == "SELECT MAX(seq) FROM events WHERE job_id = ?"
        assert store._q(template) is text
        sql, args = store._listed("SELECT id FROM tasks WHERE id {ids}", ["a", "b", "c"])
        assert (sql, args) == ("SELECT id FROM tasks WHERE id IN (?,?,?,?)", ["a", "b", "c", "c"])
    finally:
        store.close()


def test_only_the_placeholder_and_the_words_differ() -> None:
    assert (SQLITE.placeholder, POSTGRES.placeholder) == ("?", "%s")
    assert SQLITE.words.keys() == POSTGRES.words.keys()
    assert SQLITE.words["greatest"] == "MAX" and POSTGRES.words["greatest"] == "GREATEST"
    assert POSTGRES.words["lock"] == " FOR UPDATE SKIP LOCKED" and SQLITE.words["lock"] == ""

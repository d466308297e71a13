"""MapReduce's pure pieces, with no farm: keys, runs and their merge, text chunks."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.mapreduce import BadKey, TextFiles
from corral.mapreduce._keys import check_key, order, partition
from corral.mapreduce._runs import MapOutput, merged, read_run
from corral.mapreduce._text import parse_size

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(), st.floats(allow_nan=False))
keys = st.recursive(scalars, lambda inner: st.tuples(inner, inner), max_leaves=6)


@given(st.lists(keys, max_size=40))
def test_order_is_total_over_mixed_keys_and_agrees_with_python_where_it_can(
    ks: list[Any],
) -> None:
    ordered = sorted(ks, key=order)
    for a, b in zip(ordered, ordered[1:], strict=False):
        assert order(a) <= order(b)
    if all(type(k) is str for k in ks):
        assert ordered == sorted(ks)


def test_partition_is_stable_across_processes_unlike_hash() -> None:
    key = ("word", 3, 1.5, None)
    code = (
        "from corral.mapreduce._keys import partition;"
        f"print(partition({key!r}, 97), hash('word') % 97)"
    )
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    ours = {r.stdout.split()[0] for r in runs}
    assert ours == {str(partition(key, 97))}


@pytest.mark.parametrize("bad", [[1], {"a": 1}, {1}, b"bytes", (1, [2]), object()])
def test_a_key_that_cannot_serialise_is_named(bad: Any) -> None:
    with pytest.raises(BadKey, match="cannot be a key"):
        check_key(bad)


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", "e"]), st.integers(0, 9)), max_size=60),
    st.integers(1, 7),
    st.integers(1, 4),
)
@settings(max_examples=60, deadline=None)
def test_spills_and_merges_give_the_same_groups_as_one_pass(
    tmp_path_factory: pytest.TempPathFactory, pairs: list[tuple[str, int]], spill_at: int, r: int
) -> None:
    out = tmp_path_factory.mktemp("runs")
    output = MapOutput(out, r, None, spill_at=spill_at)
    for k, v in pairs:
        output.emit(k, v)
    parts = output.finish()
    assert output.records == output.written == len(pairs)
    runs = sorted(out.glob("run-*"))
    assert [int(p.name[4:]) for p in runs] == parts  # empty partitions have no file
    assert not list(out.glob("spill-*"))
    got = {k: sorted(vs) for k, vs in merged(runs)}
    want: dict[str, list[int]] = {}
    for k, v in pairs:
        want.setdefault(k, []).append(v)
    assert got == {k: sorted(vs) for k, vs in want.items()}
    for run in runs:
        run_keys = [k for k, _ in read_run(run)]
        assert run_keys == sorted(run_keys) and len(set(run_keys)) == len(run_keys)
        assert {partition(k, r) for k in run_keys} == {int(run.name[4:])}


def test_a_combiner_runs_on_each_spill_and_again_on_their_merge(tmp_path: Path) -> None:
    def summing(groups: Any, emit: Any) -> None:
        for k, vs in groups:
            emit(k, sum(vs))

    output = MapOutput(tmp_path, 1, summing, spill_at=3)
    for word in "a b a c a b a a".split():
        output.emit(word, 1)
    output.finish()
    assert dict((k, list(v)) for k, v in merged([tmp_path / "run-00000"])) == {
        "a": [5],
        "b": [2],
        "c": [1],
    }
    assert output.written == 3


def test_parse_size() -> None:
    assert parse_size("8M") == 8 << 20
    assert parse_size("512k") == 512 << 10
    assert parse_size(100) == 100
    for bad in ("lots", "0", "-1M"):
        with pytest.raises(ValueError, match="chunk size"):
            parse_size(bad)


@given(
    st.lists(st.text(alphabet="ab é\r", max_size=12), max_size=30),
    st.integers(1, 40),
    st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_text_chunks_read_every_line_exactly_once_whatever_the_chunk_size(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str], size: int, final_newline: bool
) -> None:
    root = tmp_path_factory.mktemp("text")
    data = "\n".join(lines) + ("\n" if final_newline and lines else "")
    (root / "f.txt").write_bytes(data.encode())
    chunks = TextFiles([root], chunk_size=size)
    got = [(off, line) for chunk in chunks for off, line in chunk.raw_lines()]
    want, pos = [], 0
    for raw in re.findall(rb"[^\n]*\n|[^\n]+$", data.encode()):  # lines end at \n only
        want.append((pos, raw))
        pos += len(raw)
    assert got == want
    assert Counter(c.name for c in chunks) == ({"f.txt": len(chunks)} if data else {})


def test_text_files_refuse_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextFiles([tmp_path / "nope"])


def test_a_spill_in_the_middle_of_a_map_gives_emit_back_to_the_map(tmp_path: Path) -> None:
    from corral.mapreduce import MapReduce
    from corral.mapreduce._tasks import map_chunk

    class Words(MapReduce):
        def map(self, key: Any, value: Any) -> None:
            for word in value.split():
                self.emit(word, 1)

        def combine(self, key: Any, values: Any) -> None:
            self.emit(key, sum(values))

    import corral.mapreduce._runs as runs

    (tmp_path / "t.txt").write_text("a b a\n" * 50)
    original = runs.MapOutput.__init__.__defaults__
    runs.MapOutput.__init__.__defaults__ = (7,)  # spill every 7 values
    try:
        stats = map_chunk(Words(), TextFiles([tmp_path / "t.txt"])[0], 1, tmp_path / "out")
    finally:
        runs.MapOutput.__init__.__defaults__ = original
    assert stats["records"] == 150
    assert dict((k, list(v)) for k, v in merged([tmp_path / "out" / "run-00000"])) == {
        "a": [100],
        "b": [50],
    }

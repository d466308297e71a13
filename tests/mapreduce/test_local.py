"""The MapReduce API in local mode (`run(local=True)`): the same task code as on the farm,
in this process, so these check the semantics without workers."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.mapreduce import MapReduce, MapReduceError, Streaming, StreamingError


class Numbers(MapReduce):
    """Chunks are ranges; keys are (parity, digit count), values the numbers."""

    def __init__(self, n: int, size: int = 7) -> None:
        self.n, self.size = n, size

    def chunks(self) -> list[range]:
        return [range(i, min(i + self.size, self.n)) for i in range(0, self.n, self.size)]

    def read(self, chunk: range) -> Iterator[tuple[int, int]]:
        for i in chunk:
            yield i, i

    def map(self, key: int, value: int) -> Iterator[tuple[Any, int]]:
        self.count("seen", "numbers")
        yield (value % 2, len(str(value))), value  # yield works as well as emit

    def reduce(self, key: Any, values: Iterator[int]) -> Iterator[tuple[Any, int]]:
        yield key, sum(values)


def expected(n: int) -> list[tuple[tuple[int, int], int]]:
    out: dict[tuple[int, int], int] = {}
    for i in range(n):
        k = (i % 2, len(str(i)))
        out[k] = out.get(k, 0) + i
    return sorted(out.items())


@pytest.mark.parametrize("reducers", [1, 3, 8])
def test_results_are_sorted_pairs_whatever_the_number_of_reducers(reducers: int) -> None:
    job = Numbers(250)
    assert job.run(local=True, reducers=reducers, progress=False) == expected(250)
    assert job.counters["seen"] == {"numbers": 250}
    assert job.counters["corral"]["map output records"] == 250


def test_write_is_called_once_per_pair_in_key_order() -> None:
    class Writing(Numbers):
        def write(self, key: Any, value: Any) -> None:
            self.written.append((key, value))

    job = Writing(100)
    job.written = []  # type: ignore[attr-defined]
    assert job.run(local=True, reducers=4, progress=False) is None
    assert job.written == expected(100)  # type: ignore[attr-defined]


def test_out_writes_json_part_files_sorted_within_each_part(tmp_path: Path) -> None:
    out = tmp_path / "result"
    assert Numbers(300).run(local=True, reducers=3, out=out, progress=False) == out
    parts = sorted(out.iterdir())
    assert [p.name for p in parts] == ["part-00000", "part-00001", "part-00002"]
    pairs = []
    for part in parts:
        rows = [json.loads(line) for line in part.read_text().splitlines()]
        assert rows == sorted(rows)
        pairs += rows
    assert sorted(pairs) == [[list(k), v] for k, v in expected(300)]
    with pytest.raises(MapReduceError, match="already exists"):
        Numbers(10).run(local=True, out=out, progress=False)


def test_an_output_that_is_not_json_leaves_no_directory(tmp_path: Path) -> None:
    class Sets(Numbers):
        def reduce(self, key: Any, values: Iterator[int]) -> None:
            self.emit(key, set(values))

    out = tmp_path / "result"
    with pytest.raises(MapReduceError, match="cannot be written as JSON"):
        Sets(20).run(local=True, out=out, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_emit_outside_a_phase_and_bad_yields_say_what_to_do() -> None:
    with pytest.raises(RuntimeError, match="only be called inside map"):
        Numbers(3).emit(1, 2)

    class Yields(Numbers):
        def map(self, key: int, value: int) -> Iterator[Any]:
            yield value

    with pytest.raises(TypeError, match=r"map yielded 0: yield \(key, value\) pairs"):
        Yields(3).run(local=True, progress=False)
    with pytest.raises(ValueError, match="reducers"):
        Numbers(3).run(local=True, reducers=0)


def test_streaming_locally_runs_programs_and_reports_a_failing_one(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("b a\na c\n\nc c\n")
    mapper = tmp_path / "m.py"
    mapper.write_text(
        "import sys\nfor l in sys.stdin:\n    [print(f'{w}\\t1') for w in l.split()]\n"
        "print('reporter:counter:mine,lines,1', file=sys.stderr)\n"
    )
    reducer = f'{sys.executable} -c "import sys; print(len(sys.stdin.readlines()))"'
    job = Streaming(f"{sys.executable} m.py", None, [tmp_path / "in.txt"], files=[mapper])
    assert (
        job.run(local=True, progress=False)
        == [("a", "1"), ("a", "1"), ("b", "1")] + [("c", "1")] * 3
    )
    assert job.counters["mine"] == {"lines": 1}
    counted = Streaming(f"{sys.executable} m.py", reducer, [tmp_path / "in.txt"], files=[mapper])
    assert counted.run(local=True, progress=False) == [("6", "")]
    broken = Streaming("sh -c 'echo bad thing >&2; exit 4'", None, [tmp_path / "in.txt"])
    with pytest.raises(StreamingError, match=r"exited with code 4 on chunk .*in.txt.*bad thing"):
        broken.run(local=True, progress=False)
    missing = Streaming("no-such-program-here", None, [tmp_path / "in.txt"])
    with pytest.raises(StreamingError, match="cannot start"):
        missing.run(local=True, progress=False)

"""MapReduce on a real farm: a coordinator and worker processes over HTTP on loopback.

The example jobs (examples/mapreduce/) run on the farm and with `local=True`, and their
output is checked against a plain single-process computation over the same files; then the
combiner, lost workers in each phase, a worker joining mid-job, and the bad-input cases.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.client import Client
from corral.mapreduce import MapReduce, MapReduceError, Streaming, TextFiles

from .conftest import Farm, wait_for

EXAMPLES = Path(__file__).parents[2] / "examples" / "mapreduce"
sys.path.insert(0, str(EXAMPLES))

from inverted_index import WORD, InvertedIndex  # noqa: E402
from join import Join  # noqa: E402
from wordcount import WordCount  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def make_texts(root: Path, files: int = 4, lines: int = 1500, seed: int = 7) -> Path:
    """Some text files of random words, a few hundred distinct."""
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(400)] + ["it's", "Zebra", "émigré"]
    texts = root / "texts"
    texts.mkdir()
    for f in range(files):
        with (texts / f"t{f}.txt").open("w") as out:
            for _ in range(lines):
                out.write(" ".join(rng.choice(vocabulary) for _ in range(rng.randint(0, 14))))
                out.write("\n")
    return texts


def plain_counts(texts: Path) -> dict[str, int]:
    """Word count in one process, no framework."""
    counts: Counter[str] = Counter()
    for file in sorted(texts.iterdir()):
        for line in file.read_text().splitlines():
            counts.update(WORD.findall(line.lower()))
    return dict(counts)


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    return make_texts(tmp_path)


@pytest.fixture
def two(farm: Callable[..., Farm]) -> Farm:
    return farm(workers=2, slots=2)


def test_word_count_and_inverted_index_equal_a_plain_computation_and_local_mode(
    two: Farm, texts: Path
) -> None:
    client = two.client()
    job = WordCount([str(texts)], chunk_size="16K")
    assert len(job.chunks()) > 8  # many chunks, several at once on each worker
    got = job.run(client, reducers=3, progress=False)
    assert dict(got) == plain_counts(texts)
    assert got == sorted(got)
    assert got == job.run(local=True, reducers=3, progress=False)
    workers_used = {t.worker_id for t in client.tasks(client.jobs()[0].id)}
    assert len(workers_used) == 2

    indexing = InvertedIndex([str(texts)], chunk_size="32K")
    index = indexing.run(client, reducers=2, progress=False)
    assert index == indexing.run(local=True, reducers=2, progress=False)
    expected: dict[str, set[str]] = {}
    for file in texts.iterdir():
        for word in WORD.findall(file.read_text().lower()):
            expected.setdefault(word, set()).add(file.name)
    assert dict(index) == {w: sorted(names) for w, names in expected.items()}


def test_streaming_mode_equals_class_mode_and_writes_part_files(
    two: Farm, texts: Path, tmp_path: Path
) -> None:
    out = tmp_path / "counts"
    args = ["mapreduce", "--mapper", "python3 mapper.py", "--reducer", "python3 reducer.py"]
    args += ["--combiner", "python3 reducer.py", "--input", str(texts), "--chunk-size", "20K"]
    args += ["--file", str(EXAMPLES / "mapper.py"), "--file", str(EXAMPLES / "reducer.py")]
    rc, _, err = two.cli(*args, "--reducers", "3", "--out", str(out), timeout=120)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["part-00000", "part-00001", "part-00002"]
    streamed = {}
    for part in out.iterdir():
        lines = part.read_text().splitlines()
        keys = [line.split("\t")[0] for line in lines]
        assert keys == sorted(keys)  # sorted by key within each part
        streamed.update((k, int(v)) for k, v in (line.split("\t") for line in lines))
    assert streamed == plain_counts(texts)

    classes = two.cli(
        "mapreduce",
        f"{EXAMPLES / 'wordcount.py'}:WordCount",
        "--input",
        str(texts),
        "--reducers",
        "2",
        timeout=120,
    )
    assert classes[0] == 0, classes[2]
    assert dict(json.loads(line) for line in classes[1].splitlines()) == streamed


class CountingWords(WordCount):
    """Word count whose combiner can be switched off."""

    def __init__(self, inputs: list[str], combine: bool) -> None:
        super().__init__(inputs, chunk_size="24K")
        self.combining = combine

    def map(self, offset: int, line: str) -> None:
        super().map(offset, line)
        self.count("input", "lines")


class NoCombiner(CountingWords):
    combine = MapReduce.combine  # type: ignore[assignment]


def test_a_combiner_changes_the_records_shuffled_but_not_the_answer(two: Farm, texts: Path) -> None:
    client = two.client()
    with_combiner = CountingWords([str(texts)], True)
    without = NoCombiner([str(texts)], False)
    assert with_combiner.run(client, reducers=2, progress=False) == without.run(
        client, reducers=2, progress=False
    )
    shuffled = [j.counters["corral"]["shuffled records"] for j in (with_combiner, without)]
    emitted = sum(plain_counts(texts).values())
    assert shuffled[1] == emitted  # every pair crossed the shuffle
    assert shuffled[0] < emitted / 5
    assert with_combiner.counters["input"]["lines"] == 4 * 1500  # counters summed over tasks


class Slow(WordCount):
    """Word count whose map or reduce sleeps, to be caught mid-phase."""

    def __init__(self, inputs: list[str], map_sleep: float, reduce_sleep: float) -> None:
        super().__init__(inputs, chunk_size="40K")
        self.map_sleep, self.reduce_sleep = map_sleep, reduce_sleep

    def read(self, chunk: Any) -> Iterator[tuple[int, str]]:
        time.sleep(self.map_sleep)
        return chunk.lines()  # type: ignore[no-any-return]

    def reduce(self, word: str, counts: Iterator[int]) -> None:
        if self.reduce_sleep:
            time.sleep(self.reduce_sleep)
            self.reduce_sleep = 0.0
        super().reduce(word, counts)


def _running(client: Client, suffix: str) -> str | None:
    """A worker running a task of this phase, if any."""
    jobs = client.jobs()
    if not jobs:
        return None
    for t in client.tasks(jobs[0].id):
        if t.status == "running" and t.worker_id and t.name.endswith(suffix):
            return t.worker_id
    return None


@pytest.mark.parametrize("phase", ["map", "reduce"])
def test_kill_9_of_a_worker_mid_phase_leaves_the_output_unchanged(
    farm: Callable[..., Farm], texts: Path, phase: str
) -> None:
    f = farm(workers=2, slots=1, lease_timeout=2.0)
    client = f.client()
    sleeps = (1.0, 0.0) if phase == "map" else (0.0, 4.0)
    job = Slow([str(texts)], *sleeps)
    with f.client() as watcher:
        import threading

        result: dict[str, Any] = {}
        runner = threading.Thread(
            target=lambda: result.update(out=job.run(client, reducers=2, progress=False))
        )
        runner.start()
        busy = wait_for(lambda: _running(watcher, f".{phase}"), 60, what=phase)
        (victim,) = [w for w in f.workers if w.id == busy]  # whichever runs one
        f.kill_worker(victim)
        runner.join(120)
    assert not runner.is_alive()
    assert dict(result["out"]) == plain_counts(texts)
    tasks = client.tasks(client.jobs()[0].id)
    assert all(t.status == "succeeded" for t in tasks)
    assert any(t.attempts > 1 for t in tasks if t.name.endswith(f".{phase}"))


def test_a_worker_joining_mid_job_takes_tasks(farm: Callable[..., Farm], texts: Path) -> None:
    f = farm(workers=1, slots=1)
    client = f.client()
    job = Slow([str(texts)], 0.5, 0.0)
    import threading

    result: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: result.update(out=job.run(client, reducers=2, progress=False))
    )
    runner.start()
    wait_for(
        lambda: bool(client.jobs()) and client.jobs()[0].counts.get("succeeded", 0) > 0,
        60,
        what="the first map",
    )
    late = f.start_worker(1)
    runner.join(120)
    assert dict(result["out"]) == plain_counts(texts)
    ran = [t for t in client.tasks(client.jobs()[0].id) if t.worker_id == late.id]
    assert ran, "the late worker took no task"


# bad input: one clear error naming the chunk, key or task; no output directory left


class Unpicklable(WordCount):
    def __init__(self, inputs: list[str]) -> None:
        super().__init__(inputs)
        self.lock = __import__("threading").Lock()


class NoChunks(WordCount):
    def chunks(self) -> TextFiles:
        return TextFiles([])


class BadKey(WordCount):
    def map(self, offset: int, line: str) -> None:
        self.emit({"not": "a key"}, 1)


def test_bad_input_gives_one_clear_error_and_no_output_directory(
    two: Farm, texts: Path, tmp_path: Path
) -> None:
    client = two.client()
    out = tmp_path / "out"
    with pytest.raises(MapReduceError, match="cannot be pickled"):
        Unpicklable([str(texts)]).run(client, out=out, progress=False)
    with pytest.raises(MapReduceError, match=r"chunks\(\) returned no chunks"):
        NoChunks([str(texts)]).run(client, out=out, progress=False)
    bad_key = r"map task \w+ \(chunk .*t\d.txt:\d+-\d+\) failed: .*'not'.*cannot be a key"
    with pytest.raises(MapReduceError, match=bad_key):
        BadKey([str(texts)]).run(client, out=out, progress=False)
    failing = Streaming("sh -c 'echo oops >&2; exit 3'", None, [str(texts)])
    with pytest.raises(MapReduceError, match=r"exited with code 3 on chunk .*oops"):
        failing.run(client, out=out, progress=False)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    rc, _, err = two.cli(
        "mapreduce",
        "--mapper",
        "sh -c 'exit 5'",
        "--input",
        str(texts),
        "--out",
        str(out),
        timeout=60,
    )
    assert rc == 1 and "exited with code 5" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_local_and_farm_give_identical_output_for_the_join(two: Farm, tmp_path: Path) -> None:
    people = tmp_path / "people.csv"
    orders = tmp_path / "orders.csv"
    people.write_text("".join(f"{i},name{i}\n" for i in range(50)))
    orders.write_text("".join(f"o{i},{i % 60},{i * 1.5}\n" for i in range(300)))
    job = Join([str(people), str(orders)])
    farm_out = job.run(two.client(), reducers=3, progress=False)
    assert farm_out == job.run(local=True, reducers=3, progress=False)
    assert len(farm_out) == sum(1 for i in range(300) if i % 60 < 50)
    assert farm_out[0][1][0] == "name0"


class SlowOnce(WordCount):
    """The first attempt at the first chunk takes a marker (mkdir is atomic) and stalls; any
    other attempt finds it taken and maps at once."""

    def __init__(self, inputs: list[str], shared: str) -> None:
        super().__init__(inputs, chunk_size="40K")
        self.shared = shared

    def read(self, chunk: Any) -> Iterator[tuple[int, str]]:
        if chunk.start == 0 and chunk.name == "t0.txt":
            try:
                os.mkdir(os.path.join(self.shared, "marker"))
                time.sleep(90)  # only the backup can finish this chunk in time
            except FileExistsError:
                pass
        return chunk.lines()  # type: ignore[no-any-return]


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory every attempt reaches, through the sandbox (`--sandbox-expose DIR:rw`):
    not under pytest's tmp (0700), since a root worker runs tasks as other users."""
    with tempfile.TemporaryDirectory(prefix="corral-mr-spec-") as where:
        Path(where).chmod(0o1777)
        yield Path(where)


def test_a_slow_chunk_gets_a_backup_and_one_result_is_recorded(
    farm: Callable[..., Farm], texts: Path, shared: Path
) -> None:
    f = farm(
        workers=2,
        slots=1,
        args=("--sandbox-expose", f"{shared}:rw"),
        server_args=("--speculative-min-seconds", "1"),
    )
    client = f.client()
    started = time.monotonic()
    job = SlowOnce([str(texts)], str(shared))
    assert dict(job.run(client, reducers=2, progress=False)) == plain_counts(texts)
    assert time.monotonic() - started < 60  # the stalled first attempt did not decide it
    assert (shared / "marker").is_dir()
    tasks = client.tasks(client.jobs()[0].id)
    assert client.jobs()[0].speculative
    assert all(t.status == "succeeded" for t in tasks)
    maps = [t for t in tasks if t.name == "SlowOnce.map"]
    assert len(maps) == len(job.chunks())
    slow = maps[0]  # chunk 0 of t0.txt
    # its stalled attempt was stopped once the backup's result was recorded
    worker_logs = "".join(w.stderr() for w in f.workers)
    assert f"task {slow.id} cancelled by the coordinator" in worker_logs
    # and one result recorded for it: a single final event
    finals = [e for e in client.events(slow.job_id) if e.task_id == slow.id]
    assert [e.status for e in finals if e.status in ("succeeded", "failed")] == ["succeeded"]

"""B8's input and its plain-Python word count: deterministic text, line-aligned chunks, and
the `multiprocessing.Pool(2)` raw limit. Imports nothing from corral: peers.py uses it in
the peers' venv too.

The text is pseudo-words from a 4,000-word vocabulary drawn with Zipf weights (1/rank), some
capitalised or followed by a comma or full stop, lines of 5-15 words, so lower-casing and the
regex both matter. The same seed gives the same files on every machine.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import random
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

WORD = re.compile(r"[a-z0-9']+")  # as examples/mapreduce/wordcount.py
VOCABULARY = 4000
_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["'s", "th", "qu"]


def vocabulary(rng: random.Random, n: int = VOCABULARY) -> list[str]:
    """`n` distinct lower-case pseudo-words (a few with digits or an apostrophe)."""
    words: set[str] = set()
    while len(words) < n:
        word = "".join(rng.choice(_SYLLABLES[:-3]) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.03:
            word += rng.choice(_SYLLABLES[-3:])
        if rng.random() < 0.01:
            word = str(rng.randint(0, 2100))
        words.add(word)
    return sorted(words)


def _forms(words: list[str]) -> tuple[list[str], list[float]]:
    forms, cum, total = [], [], 0.0
    for rank, word in enumerate(words, 1):
        for form, share in ((word, 0.8), (word.capitalize(), 0.1), (word + ",", 0.06)):
            forms.append(form)
            total += share / rank
            cum.append(total)
        forms.append(word + ".")
        total += 0.04 / rank
        cum.append(total)
    return forms, cum


def make_text(directory: Path, total_bytes: int, files: int = 8, seed: int = 8) -> list[Path]:
    """Write `files` files of just under total_bytes/files bytes each; return their paths."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    rng.shuffle(words)  # rank is not alphabetical
    forms, cum = _forms(words)
    directory.mkdir(parents=True, exist_ok=True)
    size = total_bytes // files
    paths = []
    for i in range(files):
        tokens = rng.choices(forms, cum_weights=cum, k=size // 5)  # ~6.5 bytes a token
        lengths = rng.choices(range(5, 16), k=len(tokens) // 5)
        lines, at = [], 0
        for n in lengths:
            lines.append(" ".join(tokens[at : at + n]))
            at += n
            if at >= len(tokens):
                break
        data = ("\n".join(lines) + "\n").encode()
        data = data[: data.rindex(b"\n", 0, size) + 1]  # whole lines, under `size`
        path = directory / f"text-{i:02d}.txt"
        path.write_bytes(data)
        paths.append(path)
    return paths


def chunks(paths: Iterable[Path], size: int) -> list[tuple[str, int, int]]:
    """(path, start, end) byte ranges, as corral's TextFiles and Dask's read_text cut them."""
    out = []
    for path in paths:
        length = path.stat().st_size
        out += [(str(path), s, min(s + size, length)) for s in range(0, length, size)]
    return out


def read_range(path: str, start: int, end: int) -> bytes:
    """The lines that start in [start, end): skip the partial first, finish the last."""
    with open(path, "rb") as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            pos += len(f.readline()) - 1
        if pos >= end:
            return b""
        data = f.read(end - pos)
        if data and not data.endswith(b"\n"):
            data += f.readline()
        return data


def count_range(chunk: tuple[str, int, int]) -> collections.Counter[str]:
    """Words of one chunk, by the same regex on the lower-cased text."""
    text = read_range(*chunk).decode("utf-8", "replace").lower()
    return collections.Counter(WORD.findall(text))


def summary(counts: dict[str, int]) -> dict[str, Any]:
    """What two systems must agree on: the whole dict's digest, and its size for the eye."""
    blob = json.dumps(sorted(counts.items()), separators=(",", ":")).encode()
    return {
        "words": sum(counts.values()),
        "distinct": len(counts),
        "digest": hashlib.sha256(blob).hexdigest()[:16],
    }


def pool_count(paths: list[Path], chunk_size: int) -> dict[str, Any]:
    """multiprocessing.Pool(2) over the chunks, Counters summed: B8's raw limit."""
    ranges = chunks(paths, chunk_size)
    with multiprocessing.Pool(2) as pool:
        pool.map(abs, range(4))  # the workers are up before the clock starts
        t0 = time.perf_counter()
        total: collections.Counter[str] = collections.Counter()
        for counter in pool.imap_unordered(count_range, ranges):
            total.update(counter)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "chunks": len(ranges)} | summary(total)

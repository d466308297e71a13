"""Streaming word count, the reducer (and combiner): lines come sorted by word, so each
word's counts are consecutive; print `word<TAB>total` once per word."""

import sys

current, total = None, 0
for line in sys.stdin:
    word, _, count = line.rstrip("\n").partition("\t")
    if word != current:
        if current is not None:
            sys.stdout.write(f"{current}\t{total}\n")
        current, total = word, 0
    total += int(count or 0)
if current is not None:
    sys.stdout.write(f"{current}\t{total}\n")

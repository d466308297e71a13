#!/usr/bin/env python3
"""An ordinary program Corral knows nothing about: per-file statistics of a text file.

usage: wordstats.py FILE  ->  writes stats/FILE.json
"""

import collections
import json
import pathlib
import re
import sys

path = pathlib.Path(sys.argv[1])
text = path.read_text()
words = re.findall(r"[a-z']+", text.lower())
stats = {
    "file": path.name,
    "lines": text.count("\n"),
    "words": len(words),
    "unique": len(set(words)),
    "top": collections.Counter(words).most_common(3),
}
out = pathlib.Path("stats") / (path.name + ".json")
out.parent.mkdir(exist_ok=True)
out.write_text(json.dumps(stats, indent=1))
print(f"{path.name}: {stats['words']} words, {stats['unique']} unique")

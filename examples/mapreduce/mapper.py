"""Streaming word count, the mapper: `word<TAB>1` for each word of each line on stdin.

    corral mapreduce --mapper 'python3 mapper.py' --reducer 'python3 reducer.py' \
        --input texts/ --file mapper.py --file reducer.py --reducers 4 --out counts/
"""

import re
import sys

WORD = re.compile(r"[a-z0-9']+")

for line in sys.stdin:
    for word in WORD.findall(line.lower()):
        sys.stdout.write(f"{word}\t1\n")

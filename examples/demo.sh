#!/usr/bin/env bash
# The README's demo: start a farm with `corral up`, run an existing program over a pile of
# text files (one task per file, the program shipped with the tasks), wait, fetch the results.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
export XDG_CONFIG_HOME="$work/config"   # keep the demo's client config out of yours
corral up --workers 2 --port 0 --data "$work/data" &
farm=$!
trap 'kill -TERM $farm 2>/dev/null; wait $farm 2>/dev/null; rm -rf "$work"' EXIT
until corral workers --json 2>/dev/null | grep -q '"online"'; do sleep 0.2; done

cd "$here/wordstats"
job=$(ls texts/*.txt | corral submit --each-line --transfer --input wordstats.py \
        --name wordstats -- python3 wordstats.py {})
echo "submitted job $job"
corral wait "$job"
corral fetch "$job" --to "$work/results"
echo "results fetched back into $work/results:"
(cd "$work/results" && find . -type f -name '*.json' | sort)
for f in "$work"/results/*/stats/*.json; do
    python3 - "$f" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"{d['file']:12} {d['words']:4} words {d['unique']:4} unique  most common: {d['top'][0][0]}")
PY
done

#!/usr/bin/env bash
# Issue 40's evidence: `spotsweep tune` on starmap-189 with 3 tuner seeds, against the full grid of
# results/study-2022/starmap-189 (its summary.nc is committed). Run from the repository root:
#   bash results/tune-starmap-189/run.sh
# Each tuner seed writes results/tune-starmap-189/seed-N (its report, tune/trials.csv, tune/journal.log,
# tune/best.yaml) and then trains its best settings with 3 fresh seeds into seed-N/confirm. After seed 0,
# the grid's best setting is trained again, seeds 0-2, into anchor/ (anchor.py says why). Every folder
# trains against seed 0's reference model (share.py; its models/ is committed). compare.py then writes
# README.md: each seed's best, as found and as confirmed, against the grid's best mean and against the
# anchor, and the optimizer steps its search spent against the grid's.
# Resumable, also on another machine from the committed files: finished parts are skipped (finished.py), a
# tune resumes from its journal (up to TRIALS trials in all; a trial whose tasks stayed on the other machine
# counts from trials.csv, and the report lists its tasks as missing), a run retries its failed tasks.
set -uo pipefail
SPOTSWEEP=${SPOTSWEEP:-.venv/bin/spotsweep}
PYTHON=${PYTHON:-.venv/bin/python}
HERE=results/tune-starmap-189
TRIALS=${TRIALS:-20}
PARALLEL=${PARALLEL:-2}   # trials (and confirmation tasks) at once: this machine's 2 cores

run() {  # a plain sweep file, unless its committed summary says it is done
  "$PYTHON" "$HERE/finished.py" run "$2" && return 0
  "$SPOTSWEEP" run "$1" --max-parallel "$PARALLEL" --retry-failed || echo "$1: not every task is done; see: $SPOTSWEEP status $2"
}

for seed in 0 1 2; do
  folder="$HERE/seed-$seed"
  if [ "$seed" != 0 ]; then "$PYTHON" "$HERE/share.py" "$folder" || exit 1; fi
  if ! "$PYTHON" "$HERE/finished.py" tune "$folder" "$TRIALS"; then
    "$SPOTSWEEP" tune sweeps/starmap-189-tune.yaml --trials "$TRIALS" --seed "$seed" --out "$folder" \
      --max-parallel "$PARALLEL" || exit 1
  fi
  # the best trial's settings again, with 3 seeds no trial used (a best single draw is optimistic)
  run "$folder/tune/best.yaml" "$folder/confirm"
  if [ "$seed" = 0 ]; then
    "$PYTHON" "$HERE/anchor.py" || exit 1
    "$PYTHON" "$HERE/share.py" "$HERE/anchor" || exit 1
    run "$HERE/anchor.yaml" "$HERE/anchor"
  fi
done
"$PYTHON" "$HERE/compare.py"

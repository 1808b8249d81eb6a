#!/usr/bin/env bash
# The study's runs, one experiment after another, as they were run on this project's 2-core CPU machine.
# Each run is resumable: finished tasks are skipped, a cut-off task resumes from its checkpoint (destVI)
# or starts over (Cell2location), failed ones are retried. After each, collect.py writes what is committed.
# On a fresh clone restore.py first gives the run the tasks its committed summary.nc holds as done, and the
# unfinished tasks the checkpoints collect.py carried in checkpoints/, so a study cut off on one machine goes
# on from its last commit on the next.
#
#   bash results/study-2022/run_all.sh                      # every experiment, in this order
#   bash results/study-2022/run_all.sh starmap-57 merfish-scaled
#
# Run from the repository root. Two tasks at a time, one torch thread each: on 2 cores the small-batch
# tasks that dominate gain little from a second thread (results/engine.md), so two tasks side by side
# finish sooner in all. Training times are then per task on one thread, beside the other task.
set -uo pipefail
SPOTSWEEP=${SPOTSWEEP:-.venv/bin/spotsweep}
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results/study-2022}
experiments=("$@")
[ ${#experiments[@]} -gt 0 ] || experiments=(
    starmap-189 starmap-57 starmap-like merfish-scaled starmap-189-last-batch
    starmap-189-steps                                                       # issue 38's E1
    starmap-189-current starmap-189-reference-seed starmap-189-drop-last   # E4 (12 CPU h), E6 (1), E3 (2.7)
    starmap-189-seeds starmap-57-seeds                                      # E5
    starmap-189-reference-shift                                             # E2: the largest (112 tasks), last
)
for experiment in "${experiments[@]}"; do
    echo "$(date -u '+%F %T') ${experiment}: running"
    "$PYTHON" results/study-2022/restore.py "${OUT}/${experiment}"
    "$SPOTSWEEP" run "sweeps/${experiment}.yaml" --out "${OUT}/${experiment}" --max-parallel 2 --retry-failed \
        || echo "${experiment}: not every task is done; see: ${SPOTSWEEP} status ${OUT}/${experiment}"
    "$PYTHON" results/study-2022/collect.py "${OUT}/${experiment}"
done
echo "$(date -u '+%F %T') done: ${experiments[*]}"

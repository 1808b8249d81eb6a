#!/usr/bin/env bash
# Issue 40's evidence (not run yet): `spotsweep tune` on starmap-189 with 3 tuner seeds, against the full
# grid of results/study-2022/starmap-189 (its summary.nc is committed). Run from the repository root:
#   bash results/tune-starmap-189/run.sh
# Each tuner seed writes results/tune-starmap-189/seed-N (its report, tune/trials.csv, tune/journal.log,
# tune/best.yaml) and then trains its best settings with 3 fresh seeds into seed-N/confirm; compare.py then
# writes results/tune-starmap-189/README.md: each seed's best, as found and as confirmed, against the grid's
# best mean, and the optimizer steps its search spent (pruned trials count the steps they trained) against
# the grid's.
set -euo pipefail
TRIALS=${TRIALS:-20}
for seed in 0 1 2; do
  .venv/bin/spotsweep tune sweeps/starmap-189-tune.yaml --trials "$TRIALS" --seed "$seed" \
    --out "results/tune-starmap-189/seed-$seed"
  # the best trial's settings again, with 3 seeds no trial used (a best single draw is optimistic)
  .venv/bin/spotsweep run "results/tune-starmap-189/seed-$seed/tune/best.yaml"
done
.venv/bin/python results/tune-starmap-189/compare.py

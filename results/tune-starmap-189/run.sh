#!/usr/bin/env bash
# Issue 40's evidence (not run yet): `spotsweep tune` on starmap-189 with 3 tuner seeds, against the full
# grid of results/study-2022/starmap-189 (its summary.nc is committed). Run from the repository root:
#   bash results/tune-starmap-189/run.sh
# Each tuner seed writes results/tune-starmap-189/seed-N (its report, tune/trials.csv, tune/journal.log);
# compare.py then writes results/tune-starmap-189/README.md: each seed's best against the grid's best mean,
# and the optimizer steps each spent (pruned trials count the steps they trained) against the grid's.
set -euo pipefail
TRIALS=${TRIALS:-20}
for seed in 0 1 2; do
  .venv/bin/spotsweep tune sweeps/starmap-189-tune.yaml --trials "$TRIALS" --seed "$seed" \
    --out "results/tune-starmap-189/seed-$seed"
done
.venv/bin/python results/tune-starmap-189/compare.py

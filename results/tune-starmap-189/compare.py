"""Issue 40's evidence: each tuner seed's best against the full grid's best mean, and the steps spent.

The grid: results/study-2022/starmap-189/summary.nc, destVI 2022 (both, latent x 9 batch sizes x 3 seeds,
2,500 epochs); the measure is the study's, the excitatory layers' mean per-cell-type PCC. A tuner seed's
steps are its complete trials' optimizer steps plus, for a pruned or failed trial, the last step its
trajectory reached. Writes results/tune-starmap-189/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import xarray as xr

HERE = Path(__file__).resolve().parent
GRID = HERE.parent / "study-2022" / "starmap-189" / "summary.nc"
LAYERS = ["eL2/3", "eL4", "eL5", "eL6"]
GOAL = 0.01


def grid_best() -> tuple[float, str, int]:
    with xr.open_dataset(GRID) as summary:
        destvi = summary.sel(method="destvi", variant="2022")
        pcc = destvi["pcc"].sel(cell_type=LAYERS).mean("cell_type")
        means = pcc.mean("seed").squeeze(drop=True).to_series().dropna()
        steps = float(destvi["n_steps"].where(destvi["status"] == "done").sum())
    at = means.idxmax()
    return float(means.max()), str(at), int(steps)


def spent(folder: Path, trial: pd.Series) -> int:
    total = 0
    for task_id in str(trial["task_ids"]).split():
        result = folder / "tasks" / task_id / "result.json"
        if result.exists():
            total += int(json.loads(result.read_text())["n_steps"])
            continue
        live = folder / "tasks" / task_id / "trajectory.jsonl"
        lines = live.read_text().splitlines() if live.exists() else []
        total += max((json.loads(line)["step"] for line in lines if line.strip()), default=0)
    return total


def main() -> None:
    best, where, grid_steps = grid_best()
    lines = [
        "# `spotsweep tune` on starmap-189 against the study's full grid",
        "",
        f"Grid (results/study-2022/starmap-189): best mean excitatory-layer PCC {best:.4f} at {where}, "
        f"{grid_steps:,} optimizer steps. Goal: within {GOAL} of it with at most a third of the steps.",
        "",
        "| tuner seed | trials (complete, pruned, failed) | best (1 seed) | its settings | gap to grid best | "
        "steps | fraction of grid steps | goal met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for folder in sorted(HERE.glob("seed-*")):
        trials = pd.read_csv(folder / "tune" / "trials.csv")
        complete = trials[trials["state"] == "complete"]
        row = complete.loc[complete["value"].idxmax()]
        settings = ", ".join(f"{c.removeprefix('param_')} {row[c]}" for c in trials.columns if c.startswith("param_"))
        steps = sum(spent(folder, trial) for _, trial in trials.iterrows())
        counts = ", ".join(str(int((trials["state"] == s).sum())) for s in ("complete", "pruned", "fail"))
        gap = best - float(row["value"])
        met = gap <= GOAL and steps <= grid_steps / 3
        lines.append(
            f"| {folder.name} | {counts} | {row['value']:.4f} | {settings} | {gap:+.4f} | {steps:,} | "
            f"{steps / grid_steps:.2f} | {'yes' if met else 'no'} |"
        )
    lines += ["", "Made by `bash results/tune-starmap-189/run.sh` (compare.py)."]
    (HERE / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

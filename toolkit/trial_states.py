"""A tuned output folder's trial states, as the aggregate reads them (written by `spotsweep tune`).

The tuner (toolkit.tune) sits above the stages, so the aggregate cannot ask it; it reads the table the
tuner writes, tune/trials.csv, before each finish. A task of a grid has trial -1 ("grid").
"""

from __future__ import annotations

import csv
from pathlib import Path


def trials_table(root: Path) -> Path:
    return Path(root) / "tune" / "trials.csv"


def trial_states(root: Path, trials: list[int]) -> list[str]:
    """Each trial's state (complete, pruned, fail, running), "grid" for -1, "" where the table has none."""
    path = trials_table(root)
    known: dict[int, str] = {}
    if path.exists():
        with open(path, newline="") as handle:
            known = {int(row["trial"]): row["state"] for row in csv.DictReader(handle)}
    return ["grid" if trial < 0 else known.get(trial, "") for trial in trials]

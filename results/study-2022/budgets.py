"""A task's accuracy at a training budget it passed on the way, read from its trajectory (issue 38's E1).

E1 trains every batch for the same 30,000 optimizer steps, so batch 4 runs 625 epochs and batch 128
15,000. To tell "more steps" from "a smaller batch" findings.py compares batches at equal steps (5,000,
30,000) and at equal epochs (625: the most epochs every batch reaches), and each task scored itself at
50 points evenly spaced in steps (600 steps apart here). A budget between two points is read by linear
interpolation between them: the trajectory is noisy (about +-0.01 from point to point), and the nearest
point alone would move a budget by up to 300 steps. A budget before the first point or after the last is
NaN: no task is read outside what it trained.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

POINT = "point"


def at_budget(position: xr.DataArray, scores: xr.DataArray, budget: float) -> xr.DataArray:
    """`scores` (along `point`) at `budget`, where `position` (the same shape: each point's step or epoch)
    says where each point is; NaN where a task did not reach the budget or has no trajectory."""
    return xr.apply_ufunc(
        _interpolate,
        position,
        scores,
        input_core_dims=[[POINT], [POINT]],
        vectorize=True,
        kwargs={"budget": float(budget)},
    )


def _interpolate(position: np.ndarray, scores: np.ndarray, budget: float) -> float:
    known = np.isfinite(position) & np.isfinite(scores)
    if not known.any():
        return np.nan
    x, y = position[known], scores[known]
    if budget < x.min() or budget > x.max() * (1 + 1e-9):
        return np.nan
    return float(np.interp(budget, x, y))


def final_epochs(summary: xr.Dataset) -> xr.DataArray:
    """The epochs each task trained: its last trajectory point's epoch (a step budget's real count, with its
    last epoch counted in part), else its `max_epochs`."""
    if "trajectory_epoch" not in summary:
        return summary["max_epochs"].broadcast_like(summary["status"]).astype(float)
    return summary["trajectory_epoch"].max(POINT)

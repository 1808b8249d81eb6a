"""The accuracy trajectory in the aggregate: its variables, read from each task's result, and a view of
tasks on one shared step or epoch axis for plotting.

Each task scored its model at its own optimizer steps (50 points evenly spaced over its run, by default),
so tasks of different batch sizes or budgets share no step axis: one would be mostly NaN. The aggregate
keeps the points instead, along a `point` dimension, with each point's `trajectory_step` and
`trajectory_epoch` beside its scores; `on_common_axis` lines tasks up when a figure needs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from toolkit.metrics import METRIC_NAMES

PREFIX = "trajectory_"
POINT = "point"
AXES = ("step", "epoch")
CONVERGED_WITHIN = 0.01
"""A configuration has "converged" from the first point within this of its final score, and is "still
improving" when its score rose by more than this over its last tenth of steps."""


def n_points(results: dict[str, Any]) -> int:
    """The most points any task's trajectory has (0: no task recorded one)."""
    return max((len((r.get("trajectory") or {}).get("points", [])) for r in results.values()), default=0)


class TrajectoryArrays:
    """The trajectory variables of an aggregate, filled task by task (float32: 50 points x cell types x 4
    metrics per task would otherwise double the summary of a large sweep)."""

    def __init__(self, shape: tuple[int, ...], points: int, types: dict[str, int]):
        self.types = types
        self.axes = {name: np.full((*shape, points), np.nan, dtype=np.float32) for name in AXES}
        self.per_type = {m: np.full((*shape, points, len(types)), np.nan, dtype=np.float32) for m in METRIC_NAMES}
        self.means: dict[str, np.ndarray] = {}
        self._shape = (*shape, points)
        self.n_points = points

    def add(self, at: tuple[int, ...], trajectory: dict[str, Any]) -> None:
        points = trajectory["points"]
        if not points:
            return
        n = len(points)
        for name in AXES:
            self.axes[name][at][:n] = [point[name] for point in points]
        rows = [self.types[t] for t in trajectory["cell_types"]]
        values = np.asarray([point["per_cell_type"] for point in points], dtype=np.float32)  # point x type x metric
        for column, metric in enumerate(trajectory["metrics"]):
            self.per_type[metric][at][:n, rows] = values[:, :, column]
        for key in points[0]["means"]:
            if key not in self.means:
                self.means[key] = np.full(self._shape, np.nan, dtype=np.float32)
            self.means[key][at][:n] = [np.nan if p["means"][key] is None else p["means"][key] for p in points]

    def variables(self, dims: list[str]) -> dict[str, Any]:
        """The aggregate's trajectory variables, each over the settings and `point`."""
        along = [*dims, POINT]
        out: dict[str, Any] = {
            f"{PREFIX}step": (
                along,
                self.axes["step"],
                {"long_name": "optimizer steps done at the point", "units": "1"},
            ),
            f"{PREFIX}epoch": (
                along,
                self.axes["epoch"],
                {"long_name": "epochs done at the point (fractional inside one)"},
            ),
        }
        for metric, values in self.per_type.items():
            long_name = f"{METRIC_NAMES[metric]} per cell type over spots, during training"
            out[f"{PREFIX}{metric}"] = ([*along, "cell_type"], values, {"long_name": long_name})
        for key, values in self.means.items():
            long_name = f"mean {key.replace('_', ' per ')} during training (NaN rule of Li et al.)"
            out[f"{PREFIX}mean_{key}"] = (along, values, {"long_name": long_name})
        return out


def has_trajectory(summary: xr.Dataset) -> bool:
    return f"{PREFIX}step" in summary and bool(summary[f"{PREFIX}step"].notnull().any())


def on_common_axis(summary: xr.Dataset, variable: str, axis: str = "step", interpolate: bool = False) -> xr.DataArray:
    """`variable` (a trajectory variable, e.g. `trajectory_mean_pcc_cell_type`) with the `point` dimension
    replaced by `axis` (`step` or `epoch`): the union of every task's points along it, NaN where a task has
    none there, or with `interpolate`, linearly between its own points (never beyond them)."""
    if axis not in AXES:
        raise ValueError(f"axis {axis!r} is unknown; use one of {', '.join(AXES)}")
    values, where = summary[variable], summary[f"{PREFIX}{axis}"]
    shared = np.unique(where.values[np.isfinite(where.values)])
    other = [d for d in values.dims if d not in where.dims]
    n_points = where.sizes[POINT]
    xs_all = where.values.reshape(-1, n_points)
    ys_all = values.transpose(*where.dims, *other).values.reshape(len(xs_all), n_points, -1)
    out = np.full((len(xs_all), len(shared), ys_all.shape[2]), np.nan, dtype=float)
    for xs, ys, target in zip(xs_all, ys_all, out, strict=True):
        keep = np.isfinite(xs)
        if not keep.any():
            continue
        if interpolate:
            inside = (shared >= xs[keep].min()) & (shared <= xs[keep].max())
            for column in range(ys.shape[1]):
                target[inside, column] = np.interp(shared[inside], xs[keep], ys[keep, column])
        else:
            target[np.searchsorted(shared, xs[keep])] = ys[keep]
    settings = [d for d in where.dims if d != POINT]
    shape = [summary.sizes[d] for d in settings]
    dims = [*settings, axis, *other]
    coords = {d: summary[d] for d in settings + other if d in summary.coords}
    rest = [values.sizes[d] for d in other]
    return xr.DataArray(out.reshape(*shape, len(shared), *rest), dims=dims, coords={**coords, axis: shared})


def convergence(steps: np.ndarray, scores: np.ndarray) -> tuple[float, bool]:
    """(the first step within CONVERGED_WITHIN of the final score, whether the score rose by more than that
    over the last tenth of the steps) of one trajectory; (nan, False) without points."""
    keep = np.isfinite(steps) & np.isfinite(scores)
    steps, scores = steps[keep], scores[keep]
    if not len(steps):
        return float("nan"), False
    final = scores[-1]
    converged = float(steps[np.argmax(np.abs(scores - final) <= CONVERGED_WITHIN)])
    before = scores[steps <= 0.9 * steps[-1]]
    improving = bool(len(before) and final - before[-1] > CONVERGED_WITHIN)
    return converged, improving

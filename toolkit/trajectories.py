"""The accuracy trajectory in the aggregate: its variables, read from each task's result, and a view of
tasks on one shared step or epoch axis for plotting.

Each task scored its model at its own optimizer steps (50 points evenly spaced over its run, by default),
so tasks of different batch sizes or budgets share no step axis: one would be mostly NaN. The aggregate
keeps the points instead, along a `point` dimension, with each point's `trajectory_step` and
`trajectory_epoch` beside its scores; `on_common_axis` lines tasks up when a figure needs it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from toolkit.methods import describe
from toolkit.metrics import METRIC_NAMES

PREFIX = "trajectory_"
POINT = "point"
AXES = ("step", "epoch")
CONVERGED_WITHIN = 0.01
"""A configuration has "converged" from the first point within this of its final score, and is "still
improving" when its score rose by more than this over its last tenth of steps."""


def n_points(results: dict[str, Any]) -> int:
    """The most points any task's trajectory has (0: no task recorded one); as read or `compact`ed."""
    return max((_length(r.get("trajectory")) for r in results.values()), default=0)


def _length(trajectory: dict[str, Any] | Compact | None) -> int:
    if isinstance(trajectory, Compact):
        return len(trajectory.step)
    return len((trajectory or {}).get("points", []))


@dataclass(frozen=True)
class Compact:
    """One task's trajectory as arrays (float32, as the aggregate keeps it): a parsed result.json holds its
    2,900 numbers as Python objects, about 30 bytes each, which for 10,000 tasks kept alive until the
    aggregate is filled nearly doubled the peak memory."""

    cell_types: list[str]
    metrics: list[str]
    step: np.ndarray
    epoch: np.ndarray
    per_cell_type: np.ndarray
    """point x cell type x metric"""
    means: dict[str, np.ndarray]


def compact(trajectory: dict[str, Any] | Compact | None) -> Compact | None:
    """A result's trajectory (as result.json keeps it) as arrays; None (or no points) stays None."""
    if trajectory is None or isinstance(trajectory, Compact):
        return trajectory
    points = trajectory["points"]
    if not points:
        return None
    n, types, metrics = len(points), list(trajectory["cell_types"]), list(trajectory["metrics"])
    # fromiter over the flattened rows: several times quicker than np.asarray on nested lists (None is NaN)
    values = np.fromiter(
        chain.from_iterable(chain.from_iterable(point["per_cell_type"] for point in points)),
        dtype=np.float32,
        count=n * len(types) * len(metrics),
    ).reshape(n, len(types), len(metrics))
    keys = list(points[0]["means"])
    means = np.array([[point["means"][key] for key in keys] for point in points], dtype=np.float32).reshape(n, -1)
    return Compact(
        cell_types=types,
        metrics=metrics,
        step=np.array([point["step"] for point in points], dtype=np.float32),
        epoch=np.array([point["epoch"] for point in points], dtype=np.float32),
        per_cell_type=values,
        means={key: means[:, column] for column, key in enumerate(keys)},
    )


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

    def add(self, at: tuple[int, ...], trajectory: dict[str, Any] | Compact) -> None:
        """One task's trajectory, as read from its result.json or already `compact`ed."""
        points = compact(trajectory)
        if points is None:
            return
        n = len(points.step)
        self.axes["step"][at][:n] = points.step
        self.axes["epoch"][at][:n] = points.epoch
        rows = [self.types[t] for t in points.cell_types]
        for column, metric in enumerate(points.metrics):
            self.per_type[metric][at][:n, rows] = points.per_cell_type[:, :, column]
        for key, values in points.means.items():
            if key not in self.means:
                self.means[key] = np.full(self._shape, np.nan, dtype=np.float32)
            self.means[key][at][:n] = values

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


SCORE = f"{PREFIX}mean_pcc_cell_type"
"""What the report follows through training: the mean PCC over cell types, its headline accuracy measure."""


def _curves(summary: xr.Dataset, dataset: str, keys: list[str]) -> pd.DataFrame:
    """Per configuration and point: the mean and s.d. over seeds of the score, at its step and epoch."""
    names = [f"{PREFIX}step", f"{PREFIX}epoch", SCORE]
    frame = summary[names].sel(dataset=dataset).to_dataframe().reset_index().dropna(subset=names)
    if frame.empty:
        return frame
    grouped = frame.groupby([*keys, POINT])
    table = grouped[SCORE].agg(["mean", "std", "count"])
    table["step"] = grouped[f"{PREFIX}step"].mean()
    table["epoch"] = grouped[f"{PREFIX}epoch"].mean()
    return table.reset_index()


def _line_label(config: dict, varying: list[str]) -> str:
    """Batch size first, then whatever else differs between the lines of one panel."""
    parts = [f"batch {config['batch_size']}"]
    others = [name for name in varying if name not in ("batch_size", "amortization")]
    parts += [f"{name.replace('_', ' ')} {config[name]}" for name in others]  # reference_seed: "reference seed"
    return ", ".join(parts)


def _others(config: dict) -> tuple:
    """A line's settings besides its batch size and amortization (drop_last, reference seed, ...)."""
    return tuple(sorted((k, str(v)) for k, v in config.items() if k not in ("batch_size", "amortization")))


def _line_styles(curves: pd.DataFrame, line_keys: list[str]) -> tuple[dict, dict]:
    """A colour per batch size and a dash per combination of the other settings: E3's 12 lines (6 batches,
    last minibatch kept or dropped) ran through the 10 default colours twice, two batches sharing one."""
    import matplotlib.pyplot as plt

    def numeric_first(batch: Any) -> tuple[bool, int]:  # "auto" after the numbers
        return (not str(batch).isdigit(), int(batch) if str(batch).isdigit() else 0)

    batches = sorted(curves["batch_size"].unique(), key=numeric_first)
    cmap = plt.get_cmap("tab10") if len(batches) <= 10 else plt.get_cmap("viridis", len(batches))
    colour = {batch: cmap(i) for i, batch in enumerate(batches)}
    others = sorted({_others(dict(zip(line_keys, key, strict=True))) for key, _ in curves.groupby(line_keys)})
    dashes = ["-", "--", ":", "-."]
    return colour, {other: dashes[i % len(dashes)] for i, other in enumerate(others)}


def trajectory_figure(summary: xr.Dataset, dataset: str, keys: list[str], path: Path, save: Any) -> bool:
    """Accuracy against optimizer steps (top, log scale) and against epochs (bottom); a panel per
    amortization, a line per batch size (mean over seeds, band: +- 1 s.d.). False: nothing to draw."""
    import matplotlib.pyplot as plt

    curves = _curves(summary, dataset, keys)
    if curves.empty:
        return False
    panels = sorted(curves["amortization"].unique())
    line_keys = [k for k in keys if k != "amortization"]
    varying = [k for k in line_keys if curves[k].nunique() > 1]
    colour, dash = _line_styles(curves, line_keys)
    fig, axes = plt.subplots(2, len(panels), figsize=(5.2 * len(panels), 7.5), squeeze=False, layout="constrained")
    for column, amortization in enumerate(panels):
        lines = curves[curves["amortization"] == amortization]
        for key, group in lines.groupby(line_keys, sort=True):
            config = dict(zip(line_keys, key, strict=True))
            for row, axis in enumerate(("step", "epoch")):
                ax = axes[row, column]
                style = {"color": colour[config["batch_size"]], "linestyle": dash[_others(config)]}
                (drawn,) = ax.plot(group[axis], group["mean"], label=_line_label(config, varying), **style)
                band = group["std"].fillna(0)
                ax.fill_between(
                    group[axis], group["mean"] - band, group["mean"] + band, alpha=0.2, color=drawn.get_color()
                )
        for row, (axis, words) in enumerate((("step", "optimizer steps (log scale)"), ("epoch", "epochs"))):
            ax = axes[row, column]
            if axis == "step":
                ax.set_xscale("log")
            ax.set_xlabel(words)
            ax.set_ylabel("mean PCC over cell types (higher is better)")
            ax.set_title(f"amortization {amortization}", fontsize=10)
            ax.grid(alpha=0.3)
        axes[0, column].legend(fontsize=7, loc="lower right")
    title = (
        f"{dataset}: accuracy during training, scored against the true proportions (mean over seeds; band: +- 1 s.d.)"
    )
    fig.suptitle(textwrap.fill(title, width=55 * len(panels)))  # one panel is narrow: wrap, never cut off
    save(fig, path)
    return True


def convergence_table(summary: xr.Dataset, dataset: str, keys: list[str]) -> pd.DataFrame:
    """Per configuration (mean trajectory over seeds): its final score, the first step (and epoch) within
    CONVERGED_WITHIN of it, and whether it still rose by more than that over its last tenth of steps."""
    curves = _curves(summary, dataset, keys)
    rows = []
    for key, group in curves.groupby(keys, sort=True):
        group = group.sort_values("step")
        converged, improving = convergence(group["step"].to_numpy(), group["mean"].to_numpy())
        epoch = float(group.loc[group["step"] == converged, "epoch"].iloc[0]) if np.isfinite(converged) else np.nan
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "final PCC": float(group["mean"].iloc[-1]),
                "steps": float(group["step"].iloc[-1]),
                "converged at step": converged,
                "converged at epoch": epoch,
                "still improving": "yes" if improving else "no",
                "seeds": int(group["count"].max()),
            }
        )
    return pd.DataFrame(rows)


def final_only(summary: xr.Dataset, dataset: str) -> list[str]:
    """Trained methods whose finished tasks have no trajectory (scored at the end only: Cell2location)."""
    data = summary.sel(dataset=dataset)
    done = data["status"] == "done"
    scored = data[f"{PREFIX}step"].notnull().any(POINT) if f"{PREFIX}step" in data else xr.zeros_like(done)
    names = []
    for method in data.method.values:
        if not describe(str(method)).trains:
            continue
        mine = done.sel(method=method)
        if bool(mine.any()) and not bool((scored.sel(method=method) & mine).any()):
            names.append(str(method))
    return names

"""Every task result of a sweep -> one xarray.Dataset whose dimensions are the swept settings.

Dimensions: dataset, method, variant, amortization, batch_size, max_epochs, seed (the settings; and the
optional ones, such as max_steps or drop_last, where some task sets them), plus cell_type and spot, and
`point` for the accuracy trajectory (toolkit.trajectories). A tuned folder (`spotsweep tune`, every task a
trial's) has dataset, method, trial and seed instead, each trial's settings coordinates along `trial`.
Every configuration of the sweep has a `status` (done, failed, started, missing, pruned): a failed or
never-run task stays in the dataset as NaN values with its status and reason, never dropped.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from filelock import FileLock
from pydantic import ValidationError

import toolkit
from toolkit.config import DatasetConfig
from toolkit.layout import CorruptFile, OutputLayout, read_json, write_atomically, write_dir_atomically, write_json
from toolkit.metrics import METRIC_NAMES, METRICS
from toolkit.pseudospots import read_spots
from toolkit.status import TaskState, load_tasks, task_state
from toolkit.sweep import SWEPT_SETTINGS, Task, optional_settings, settings_of
from toolkit.trajectories import POINT, TrajectoryArrays, compact, n_points
from toolkit.trial_states import trial_states

SCALARS: dict[str, dict[str, str]] = {
    "batch_size_used": {"long_name": "minibatch size the method trained with (auto and 0 resolved)", "units": "1"},
    "n_steps": {"long_name": "optimizer steps of the spatial model", "units": "1"},
    "train_time_s": {
        "long_name": "wall time of spatial model training (a resumed task adds its attempts up to its checkpoint)",
        "units": "s",
    },
    "reference_time_s": {"long_name": "wall time of reference model training (shared by tasks)", "units": "s"},
    "task_time_s": {"long_name": "wall time of the whole task", "units": "s"},
    "peak_host_memory_mb": {"long_name": "peak resident host memory of the task", "units": "MiB"},
    "peak_gpu_memory_mb": {"long_name": "peak allocated GPU memory of the task", "units": "MiB"},
}


def _numbers_first(value: Any) -> tuple[bool, Any]:
    """Sort key: numbers in order, then words (batch sizes 8, 64, then "auto")."""
    return (isinstance(value, str), value)


STATE_AGREEMENT = {
    "pearson": "mean over state dims of the Pearson correlation of predicted and true per-spot cell state",
    "linear_r2": "R^2 of the best linear map from predicted to true per-spot cell state (rotation-free)",
}


class _Grid:
    """Positions of tasks in the product of the swept settings' values."""

    def __init__(self, settings: list[dict[str, Any]], names: list[str]):
        self.names = names
        values = {name: sorted({s[name] for s in settings}, key=_numbers_first) for name in names}
        self.shape = tuple(len(v) for v in values.values())
        self._position = {name: {v: i for i, v in enumerate(vs)} for name, vs in values.items()}
        # A coordinate holds one type: a setting mixing numbers and words (batch_size 8 and "auto") is text.
        self.coords = {
            name: vs if len({type(v) for v in vs}) == 1 else [str(v) for v in vs] for name, vs in values.items()
        }

    def index(self, settings: dict[str, Any]) -> tuple[int, ...]:
        return tuple(self._position[name][settings[name]] for name in self.names)

    def empty(self, *extra: int, fill: Any = np.nan, dtype: Any = float) -> np.ndarray:
        return np.full(self.shape + extra, fill, dtype=dtype)


def _fill_frame(target: np.ndarray, at: tuple[int, ...], frame: dict, rows: dict, cols: dict) -> None:
    """Place a stored frame (index, columns, values) into target[at][row, col] by name."""
    values = np.asarray(frame["values"], dtype=float)
    r = [rows[name] for name in frame["index"]]
    c = [cols[name] for name in frame["columns"]]
    target[at][np.ix_(r, c)] = values


def _prepared_spots(layout: OutputLayout, datasets: list[str]) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """Each prepared dataset's true proportions (spots x cell types) and how its grid was built."""
    truths, grids = {}, {}
    for name in datasets:
        if layout.spots(name).exists():
            spots = read_spots(layout.spots(name))
            truths[name] = spots.obsm["proportions"]
            grids[name] = dict(spots.uns["pseudospots"])
    return truths, grids


def _described_axes(sweep: dict, datasets: list[str]) -> dict[str, Any]:
    """Per dataset: the coordinates' unit and the tissue's orientation on the grid, as the sweep file (or a
    synthetic preset) says them; "" where unknown (a sweep recorded before these fields)."""
    described: dict[str, tuple[str, str]] = {}
    for entry in sweep.get("config", {}).get("datasets", []):
        try:
            config = DatasetConfig.model_validate(entry)
        except ValidationError:
            continue
        described[config.name] = config.described_axes()
    rows = [described.get(name, ("", "")) for name in datasets]
    return {
        "spots_units": ("dataset", [units for units, _ in rows], {"long_name": "unit of the grid's coordinates"}),
        "spots_orientation": (
            "dataset",
            [orientation for _, orientation in rows],
            {"long_name": "which way the tissue runs on the grid"},
        ),
    }


def _grid_variables(grids: dict[str, dict], datasets: list[str]) -> dict[str, Any]:
    """Per dataset: window, edge rule, subset and spot store, as the pseudospots record them."""

    def text(value: Any) -> str:
        return json.dumps({k: np.asarray(v).tolist() for k, v in dict(value).items()}) if value is not None else ""

    rows = [grids.get(name, {}) for name in datasets]
    return {
        "spots_window": ("dataset", [float(r.get("window", np.nan)) for r in rows], {"long_name": "pseudospot window"}),
        "spots_edge_rule": ("dataset", [str(r.get("edge_rule", "")) for r in rows], {"long_name": "window edge rule"}),
        "spots_subset": (
            "dataset",
            [text(r.get("store_subset") or r.get("subset")) for r in rows],
            {"long_name": "part of the grid kept (JSON of columns, rows, bbox; {} for all)"},
        ),
        "spots_store": (
            "dataset",
            [str(r.get("store", "")) for r in rows],
            {"long_name": "spot store the spots came from"},
        ),
    }


def _truth(truths: dict[str, pd.DataFrame], datasets: list[str], spots: dict, types: dict) -> np.ndarray:
    truth = np.full((len(datasets), len(spots), len(types)), np.nan)
    for d, name in enumerate(datasets):
        if name in truths:
            proportions = truths[name]
            keep = [t for t in proportions.columns if t in types]
            frame = {"index": list(proportions.index), "columns": keep, "values": proportions[keep].to_numpy()}
            _fill_frame(truth, (d,), frame, spots, types)
    return truth


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while millions of parsed numbers are alive.

    Parsed results hold no reference cycles, but the collector still walks every live list on each
    pass; with 10,000 results that walking was ~40% of the aggregation time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def aggregate(root: Path) -> xr.Dataset:
    """Read every task of the sweep in `root` (done or not) into one Dataset."""
    with _collector_paused():
        return _aggregate(OutputLayout(Path(root)))


def _read_results(layout: OutputLayout, states: list[TaskState]) -> tuple[dict[str, Any], list[TaskState]]:
    """Every done task's result. One that cannot be parsed (cut short) is moved aside, not deleted, and
    recorded as the task's failure, so that the summary says so and `run --retry-failed` redoes it."""
    results: dict[str, Any] = {}
    checked = []
    for state in states:
        if state.state == "done":
            try:
                result = read_json(layout.result(state.task.id))
                if result.get("trajectory"):  # as arrays at once: its parsed numbers would double peak memory
                    result["trajectory"] = compact(result["trajectory"])
                results[state.task.id] = result
            except CorruptFile as exc:
                aside = exc.path.with_name(f"result.corrupt-{int(time.time())}.json")
                os.replace(exc.path, aside)
                reason = f"{exc.path} was not valid JSON (cut short?); kept as {aside.name}; --retry-failed redoes it"
                write_json(
                    layout.error(state.task.id), {"task_id": state.task.id, "status": "failed", "reason": reason}
                )
                state = TaskState(state.task, "failed", reason=reason, log=str(aside))
        checked.append(state)
    return results, checked


def _aggregate(layout: OutputLayout) -> xr.Dataset:
    tasks = load_tasks(layout)
    states = [task_state(layout, task) for task in tasks]
    results, states = _read_results(layout, states)

    optional = optional_settings(tasks)  # e.g. max_steps: a dimension only where some task sets it
    tuned = _tuned(tasks)

    def coordinates(task: Task) -> dict[str, Any]:
        return {**optional, **task.settings}

    grid = _Grid([coordinates(task) for task in tasks], list(TRIAL_DIMS) if tuned else [*SWEPT_SETTINGS, *optional])
    truths, built = _prepared_spots(layout, grid.coords["dataset"])
    predicted_types = {c for r in results.values() for c in r["proportions"]["columns"]}
    # Cell types the methods predict (all the truth's where nothing finished yet); every spot of the truth.
    type_names = sorted(predicted_types or {c for t in truths.values() for c in t.columns})
    spot_names = sorted(
        {i for t in truths.values() for i in t.index} | {i for r in results.values() for i in r["proportions"]["index"]}
    )
    collected = _Collected(grid, type_names, spot_names, n_points(results))
    for state in states:
        collected.add(grid.index(coordinates(state.task)), state, results.get(state.task.id))

    datasets = grid.coords["dataset"]
    sweep = read_json(layout.sweep_file)
    data_vars = collected.task_variables()
    data_vars["true_proportion"] = (
        ["dataset", "spot", "cell_type"],
        _truth(truths, datasets, collected.spots, collected.types),
        {"long_name": "true cell-type proportion of the pseudospot", "units": "1"},
    )
    data_vars.update(_grid_variables(built, datasets))
    data_vars.update(_described_axes(sweep, datasets))
    data_vars.update(collected.score_variables())
    attrs = {
        "title": f"spotsweep sweep '{sweep['name']}'",
        "sweep": sweep["name"],
        "toolkit_version": toolkit.__version__,
        "n_tasks": len(tasks),
        **{
            f"n_{name}": sum(s.state == name for s in states)
            for name in ("done", "failed", "started", "missing", "pruned")
        },
        "provenance": json.dumps(next(iter(results.values()))["provenance"]) if results else "",
    }
    coords = collected.coordinates()
    if tuned:
        coords.update(_trial_coordinates(tasks, optional, [int(trial) for trial in coords["trial"]]))
    if "trial" in coords:  # a tuned folder (`spotsweep tune`): each trial's state beside its number
        trials = [int(trial) for trial in coords["trial"]]
        data_vars["trial_state"] = ("trial", trial_states(layout.root, trials), {"long_name": "the trial's state"})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


TRIAL_DIMS = ("dataset", "method", "trial", "seed")
"""A tuned folder's dimensions: each trial's settings are coordinates along `trial`, not dimensions."""


def _tuned(tasks: list[Task]) -> bool:
    """Whether every task is a trial's (`spotsweep tune`): laid out along `trial` then, not as a cube."""
    return bool(tasks) and all("trial" in task.extra_settings for task in tasks)


def _trial_coordinates(tasks: list[Task], optional: dict[str, Any], trials: list[int]) -> dict[str, Any]:
    """Each trial's settings (batch size, amortization, budget, lr, ...) as coordinates along `trial`: N
    trials take N values each, where as dimensions every distinct batch size, budget and lr would multiply
    the cube, nearly all of it absent tasks (a trial has one setting of each)."""
    first: dict[int, dict[str, Any]] = {}
    for task in tasks:
        first.setdefault(int(task.settings["trial"]), {**optional, **task.settings, "lr": task.params.get("lr")})
    coords: dict[str, Any] = {}
    for name in [*SWEPT_SETTINGS, *optional, "lr"]:
        values = [first[trial].get(name) for trial in trials]
        if name in TRIAL_DIMS or any(value is None for value in values):
            continue  # a method without the setting (lr) has no coordinate for it
        mixed = len({type(value) for value in values}) > 1  # batch_size 8 and "auto": text, as in the cube
        coords[name] = ("trial", [str(value) for value in values] if mixed else values)
    return coords


class _Collected:
    """Every task's values at its place in the settings grid: its state, and the scores of a done one."""

    def __init__(self, grid: _Grid, type_names: list[str], spot_names: list[str], points: int) -> None:
        self.grid, self.type_names, self.spot_names = grid, type_names, spot_names
        self.types = {name: i for i, name in enumerate(type_names)}
        self.spots = {name: i for i, name in enumerate(spot_names)}
        self.text = {name: grid.empty(fill="", dtype=object) for name in ("reason", "task_id", "device", "cpu")}
        self.status = grid.empty(fill="absent", dtype=object)
        self.scalars = {name: grid.empty() for name in SCALARS}
        self.by_type = {m: grid.empty(len(self.types)) for m in (*METRICS, "grid_ssim")}
        self.by_spot = {m: grid.empty(len(self.spots)) for m in METRICS}
        self.state_values = {name: grid.empty(len(self.types)) for name in STATE_AGREEMENT}
        self.means: dict[str, np.ndarray] = {}
        self.proportion = grid.empty(len(self.spots), len(self.types))
        self.trajectories = TrajectoryArrays(grid.shape, points, self.types) if points else None

    def add(self, at: tuple[int, ...], state: TaskState, result: dict[str, Any] | None) -> None:
        """One task: its state always; what it recorded where it is done."""
        self.status[at], self.text["reason"][at], self.text["task_id"][at] = state.state, state.reason, state.task.id
        if result is None:
            return
        result["batch_size_used"] = result.get("method_settings", {}).get("batch_size")
        provenance = result.get("provenance") or {}
        self.text["device"][at], self.text["cpu"][at] = provenance.get("device") or "", provenance.get("cpu") or ""
        for name in SCALARS:
            value = result.get(name)
            self.scalars[name][at] = np.nan if value is None else value
        self._add_scores(at, result["scores"])
        _fill_frame(self.proportion, at, result["proportions"], self.spots, self.types)
        if self.trajectories is not None and result.get("trajectory"):
            self.trajectories.add(at, result["trajectory"])

    def _add_scores(self, at: tuple[int, ...], scores: dict[str, Any]) -> None:
        """The metrics per cell type and per spot, their means, the grid SSIM and the state agreement."""
        for frame, names, target in (
            (scores["per_cell_type"], self.types, self.by_type),
            (scores["per_spot"], self.spots, self.by_spot),
        ):
            rows = [names[name] for name in frame["index"]]
            values = np.asarray(frame["values"], dtype=float)
            for m in METRICS:
                target[m][at][rows] = values[:, frame["columns"].index(m)]
        for key, value in scores["means"].items():
            if key not in self.means:
                self.means[key] = self.grid.empty()
            self.means[key][at] = np.nan if value is None else value
        for cell_type, value in scores["grid_ssim"].items():
            self.by_type["grid_ssim"][at][self.types[cell_type]] = np.nan if value is None else value
        agreement = scores.get("state_agreement")
        for name in STATE_AGREEMENT if agreement else ():
            column = agreement["columns"].index(name)
            rows = [self.types[t] for t in agreement["index"]]
            self.state_values[name][at][rows] = np.asarray(agreement["values"], dtype=float)[:, column]

    def task_variables(self) -> dict[str, Any]:
        """Each task's state, reason, id and machine, and its predicted proportions."""
        dims = list(self.grid.names)
        text = {name: values.astype(str) for name, values in self.text.items()}
        return {
            "status": (
                dims,
                self.status.astype(str),
                {"long_name": "task state: done, failed, started, missing, absent"},
            ),
            "reason": (dims, text["reason"], {"long_name": "last line of the failure, where failed"}),
            "task_id": (dims, text["task_id"], {"long_name": "task id (folder under tasks/)"}),
            "device": (dims, text["device"], {"long_name": "what the task trained on: a GPU's name or cpu"}),
            "cpu": (dims, text["cpu"], {"long_name": 'the processor\'s model ("" where not recorded)'}),
            "proportion": (
                [*dims, "spot", "cell_type"],
                self.proportion,
                {"long_name": "predicted cell-type proportion", "units": "1"},
            ),
        }

    def score_variables(self) -> dict[str, Any]:
        """What the tasks cost, their scores (per cell type, per spot, means), and their trajectories."""
        dims = list(self.grid.names)
        data_vars: dict[str, Any] = {name: (dims, self.scalars[name], attrs) for name, attrs in SCALARS.items()}
        for m in METRICS:
            long_name = METRIC_NAMES[m]
            data_vars[m] = (
                [*dims, "cell_type"],
                self.by_type[m],
                {"long_name": f"{long_name} per cell type over spots"},
            )
            data_vars[f"{m}_spot"] = (
                [*dims, "spot"],
                self.by_spot[m],
                {"long_name": f"{long_name} per spot over types"},
            )
        data_vars["grid_ssim"] = (
            [*dims, "cell_type"],
            self.by_type["grid_ssim"],
            {"long_name": "windowed SSIM of each cell type's proportion map on the spot grid"},
        )
        for name, long_name in STATE_AGREEMENT.items():
            data_vars[f"state_{name}"] = ([*dims, "cell_type"], self.state_values[name], {"long_name": long_name})
        for key, values in self.means.items():
            long_name = f"mean {key.replace('_', ' per ')} (NaN rule of Li et al.)"
            data_vars[f"mean_{key}"] = (dims, values, {"long_name": long_name})
        if self.trajectories is not None:
            data_vars.update(self.trajectories.variables(dims))
        return data_vars

    def coordinates(self) -> dict[str, Any]:
        """The settings' values, cell types, spots (with their place on the grid) and trajectory points."""
        grid_xy = np.array([[int(part) for part in name.split("_")[-2:]] for name in self.spot_names], dtype=int)
        grid_xy = grid_xy.reshape(-1, 2)
        coords: dict[str, Any] = {**self.grid.coords, "cell_type": self.type_names, "spot": self.spot_names}
        if self.trajectories is not None:
            coords[POINT] = np.arange(self.trajectories.n_points)
        coords["grid_x"] = ("spot", grid_xy[:, 0])
        coords["grid_y"] = ("spot", grid_xy[:, 1])
        return coords


def write_summary(root: Path) -> xr.Dataset:
    """Aggregate and write `summary.nc` (NetCDF) and `summary.zarr`, each atomically; two aggregations of
    one folder at once (a user and the SLURM aggregate job) take turns instead of colliding."""
    layout = OutputLayout(Path(root))
    if not layout.sweep_file.exists():
        return aggregate(root)  # says, in one sentence, that this is not a sweep's output folder
    with FileLock(str(layout.root / ".aggregate.lock")):
        dataset = aggregate(root)
        write_atomically(layout.summary, lambda tmp: dataset.to_netcdf(tmp, engine="h5netcdf"))
        zarr_path = layout.summary.with_suffix(".zarr")
        write_dir_atomically(zarr_path, lambda tmp: dataset.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True))
    return dataset


def configurations(dataset: xr.Dataset) -> list[dict[str, Any]]:
    """Every point of the settings grid as a dict, in grid order."""
    names = settings_of(dataset)
    values = [dataset[name].values.tolist() for name in names]
    return [dict(zip(names, point, strict=True)) for point in itertools.product(*values)]

"""Give a study run on a fresh machine the tasks its committed summary.nc already holds, so it resumes there.

    .venv/bin/python results/study-2022/restore.py results/study-2022/merfish-scaled [...]

The run folders (tasks/, models/, data/) are not committed, so a run cut off on one machine would start
over on the next. For every task the committed summary.nc marks done and whose tasks/<id>/result.json is
missing, this writes that result.json back from the summary: per-type metrics, means, grid SSIM, cell-state
agreement, the accuracy trajectory, runtimes, and the proportions where the summary kept them (the first
seed; the other seeds' are NaN, as collect.py drops them anyway). `spotsweep run` then skips those tasks,
and collect.py writes the same committed values for them again. Each restored result says so in its
"restored_from" field.

A task that was still training when its run was collected left its last checkpoint in checkpoints/<task id>/
(collect.py); this puts it back where the task's training looks for it (tasks/<id>/checkpoint/), so the
task resumes from that epoch on this machine, with the training time saved in it, instead of starting over.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from toolkit.aggregate import SCALARS, STATE_AGREEMENT
from toolkit.backends.checkpointed import checkpoint_dir
from toolkit.layout import OutputLayout, write_dir_atomically, write_json
from toolkit.metrics import METRICS
from toolkit.sweep import settings_of

CARRIED = "checkpoints"
"""The folder of each experiment that carries its unfinished tasks' checkpoints from machine to machine."""


def _frame(values: xr.DataArray, index: list[str], columns: list[str]) -> dict[str, Any]:
    """A result.json frame (index, columns, values); NaN is written as null and read back as NaN."""
    return {"index": index, "columns": columns, "values": np.asarray(values, dtype=float).tolist()}


def _optional(value: Any) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def _trajectory(task: xr.Dataset, types: list[str]) -> dict[str, Any] | None:
    """The task's accuracy trajectory as result.json keeps it, from the summary's trajectory_* variables
    (None where the summary has none, or the task recorded none)."""
    if "trajectory_step" not in task:
        return None
    kept = np.isfinite(task["trajectory_step"].values)
    if not kept.any():
        return None
    means = [str(n) for n in task.data_vars if str(n).startswith("trajectory_mean_")]
    per_type = np.stack([task[f"trajectory_{m}"].transpose("point", "cell_type").values for m in METRICS], axis=2)
    points = [
        {
            "step": int(task["trajectory_step"].values[i]),
            "epoch": float(task["trajectory_epoch"].values[i]),
            "means": {name.removeprefix("trajectory_mean_"): _optional(task[name].values[i]) for name in means},
            "per_cell_type": [[_optional(v) for v in row] for row in per_type[i]],
        }
        for i in np.flatnonzero(kept)
    ]
    return {"cell_types": types, "metrics": list(METRICS), "points": points}


def _result(task: xr.Dataset, provenance: dict[str, Any], source: str, names: list[str]) -> dict[str, Any]:
    """One task's result.json, read off its point of the summary's grid."""
    types = [str(name) for name in task.cell_type.values]
    spots = [str(name) for name in task.spot.values]
    settings = {name: task[name].item() for name in names}
    scores: dict[str, Any] = {
        "per_cell_type": _frame(np.stack([task[m].values for m in METRICS], axis=1), types, list(METRICS)),
        "per_spot": _frame(np.full((len(spots), len(METRICS)), np.nan), spots, list(METRICS)),
        "means": {
            str(name).removeprefix("mean_"): _optional(task[name])
            for name in task.data_vars
            if str(name).startswith("mean_")
        },
        "grid_ssim": {name: _optional(value) for name, value in zip(types, task["grid_ssim"].values, strict=True)},
    }
    agreement = np.stack([task[f"state_{name}"].values for name in STATE_AGREEMENT], axis=1)
    if np.isfinite(agreement).any():
        scores["state_agreement"] = _frame(agreement, types, list(STATE_AGREEMENT))
    batch_size_used = _optional(task["batch_size_used"])
    return {
        "task_id": str(task["task_id"].item()),
        "status": "done",
        "task": settings,
        "settings": settings,
        "scores": scores,
        "trajectory": _trajectory(task, types),
        "proportions": _frame(task["proportion"].transpose("spot", "cell_type").values, spots, types),
        **{name: _optional(task[name]) for name in SCALARS if name != "batch_size_used"},
        "method_settings": {"batch_size": None if batch_size_used is None else int(batch_size_used)},
        "provenance": {**provenance, **{key: str(task[key].item()) for key in ("device", "cpu") if key in task}},
        "restored_from": source,
    }


def restore(folder: Path) -> int:
    """Write result.json for every done task of folder/summary.nc that has none; returns how many."""
    layout = OutputLayout(folder)
    if not layout.summary.exists():
        return 0
    written = 0
    with xr.open_dataset(layout.summary) as summary:
        provenance = json.loads(summary.attrs.get("provenance") or "{}")
        names = settings_of(summary)  # the optional settings (max_steps, drop_last, ...) too, where swept
        done = summary["status"].stack(task=names).to_series()
        for point in done[done == "done"].index:
            task = summary.sel(dict(zip(names, point, strict=True)))
            task_id = str(task["task_id"].item())
            if layout.result(task_id).exists():
                continue
            source = f"{layout.summary} (slimmed summary)"
            write_json(layout.result(task_id), _result(task, provenance, source, names))
            written += 1
    return written


def restore_checkpoints(folder: Path) -> int:
    """Put each carried checkpoint back into its unfinished task's folder, unless that task has a result or
    a checkpoint of its own here (then it is further along); returns how many."""
    layout = OutputLayout(folder)
    restored = 0
    for carried in sorted((folder / CARRIED).glob("[!.]*/")):  # not a copy collect.py left half made
        target = checkpoint_dir(layout, carried.name)
        if layout.result(carried.name).exists() or (target.exists() and any(target.iterdir())):
            continue
        # built aside, then moved in: a cut-off copy never leaves a half-written checkpoint to resume from
        write_dir_atomically(target, lambda tmp, carried=carried: shutil.copytree(carried, tmp, dirs_exist_ok=True))
        restored += 1
    return restored


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(f"{argument}: {restore(Path(argument))} done task(s) restored from its summary.nc")
        print(f"{argument}: {restore_checkpoints(Path(argument))} unfinished task(s) given their carried checkpoint")

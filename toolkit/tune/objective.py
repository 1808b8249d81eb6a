"""What a trial scores, read from its tasks' files: the final result, and the trajectory while it trains.

The score is a metric per cell type (Li et al.'s, as the report shows it) averaged over a set of cell
types, with the benchmark's rule for undefined values (pcc 0, rmse 1, ...). By default the set is the
excitatory layers where the data has them, as the study's findings read STARmap, and every type otherwise.
A running task appends its trajectory points to tasks/<id>/trajectory.jsonl (toolkit.task); the tuner
reads them while it polls, to report them to the trial and prune it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from toolkit.layout import OutputLayout, read_json
from toolkit.methods.search import ObjectiveConfig
from toolkit.metrics import NAN_FILL
from toolkit.task import LIVE_TRAJECTORY

LAYER_SETS: tuple[tuple[str, ...], ...] = (
    ("eL2/3", "eL4", "eL5", "eL6"),  # STARmap (Li et al. 2022's names)
    ("ExcitatoryL2and3", "ExcitatoryL4", "ExcitatoryL5", "ExcitatoryL6"),  # the synthetic starmap-like tissue
)
"""The excitatory layers, in the names a dataset may use: the default objective where all are present."""


def cell_types_of(objective: ObjectiveConfig, available: list[str]) -> list[str]:
    """The cell types the objective averages over: the sweep's, else the layers, else every type."""
    if objective.cell_types is not None:
        return list(objective.cell_types)
    for layers in LAYER_SETS:
        if set(layers) <= set(available):
            return list(layers)
    return list(available)


def _mean(values: dict[str, float | None], types: list[str], metric: str, where: str) -> float:
    missing = [name for name in types if name not in values]
    if missing:
        raise ValueError(
            f"{where}: the objective's cell type(s) {', '.join(missing)} are not among the scored ones "
            f"({', '.join(values)}); fix search.objective.cell_types"
        )
    filled = [NAN_FILL[metric] if v is None or math.isnan(v) else float(v) for v in (values[t] for t in types)]
    return sum(filled) / len(filled)


def final_score(layout: OutputLayout, task_id: str, objective: ObjectiveConfig) -> float:
    """The task's finished score (result.json)."""
    result = read_json(layout.result(task_id))
    frame = result["scores"]["per_cell_type"]
    column = frame["columns"].index(objective.metric)
    values = {name: row[column] for name, row in zip(frame["index"], frame["values"], strict=True)}
    return _mean(values, cell_types_of(objective, list(values)), objective.metric, task_id)


def train_seconds(layout: OutputLayout, task_id: str) -> float:
    """The task's training time (the second objective)."""
    return float(read_json(layout.result(task_id))["train_time_s"])


def live_points(layout: OutputLayout, task_id: str, objective: ObjectiveConfig) -> dict[int, float]:
    """The task's trajectory so far, as optimizer step -> score (a repeated step keeps its last score; a
    line still being written is skipped)."""
    path: Path = layout.task_dir(task_id) / LIVE_TRAJECTORY
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return {}
    points: dict[int, float] = {}
    for line in lines:
        try:
            point: dict[str, Any] = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        column = point["metrics"].index(objective.metric)
        values = {name: row[column] for name, row in zip(point["cell_types"], point["per_cell_type"], strict=True)}
        points[int(point["step"])] = _mean(values, cell_types_of(objective, list(values)), objective.metric, task_id)
    return points


def trial_points(per_task: list[dict[int, float]], interval: int) -> dict[int, float]:
    """A trial's intermediate values: at each multiple of `interval` steps that every seed has passed, the
    mean over its seeds of each one's latest point at or before it (so trials of other batch sizes and
    budgets are compared at the same optimizer steps)."""
    if not per_task or any(not points for points in per_task):
        return {}
    reached = min(max(points) for points in per_task)
    values: dict[int, float] = {}
    for mark in range(interval, reached + 1, interval):
        latest = []
        for points in per_task:
            before = [step for step in points if step <= mark]
            if not before:
                break
            latest.append(points[max(before)])
        else:
            values[mark] = sum(latest) / len(latest)
    return values

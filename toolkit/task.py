"""One task: load the prepared inputs, fit one configuration, score it, write its result atomically.

`result.json` is written last and atomically: its presence is what "done" means. A failure writes
`error.json` with the reason and re-raises, so the scheduler marks the job failed too.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from toolkit import metrics, provenance
from toolkit.freshness import recorded_inputs
from toolkit.layout import OutputLayout, write_atomically, write_json
from toolkit.methods import adapter, describe
from toolkit.methods.base import FitResult, Scorer
from toolkit.prepare import ensure_reference_model, reference_train_time
from toolkit.pseudospots import read_spots
from toolkit.sweep import Task


def _set_threads(threads: int | None, method: str) -> None:
    """torch's share of the cores, for a method that trains; one that does not (a control) computes without
    torch, which is then not imported at all (seconds per task in a sweep of thousands)."""
    if threads and describe(method).trains:
        import torch

        torch.set_num_threads(threads)


def _frame(frame: pd.DataFrame) -> dict[str, Any]:
    """A DataFrame as index, columns and values: compact and quick to read back for 10,000 tasks."""
    return {
        "index": list(map(str, frame.index)),
        "columns": list(map(str, frame.columns)),
        "values": frame.to_numpy().tolist(),
    }


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, since np.save would append .npy to a temporary name
        np.save(handle, array)


def _benchmark_scores(spots: ad.AnnData, proportions: pd.DataFrame) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    """The benchmark's metrics of `proportions` against the spots' truth, with the truth and prediction
    as the benchmark preprocesses them."""
    truth = metrics.li2022_truth(spots.obsm["cell_counts"], list(proportions.columns))
    predicted = metrics.li2022_prediction(proportions, truth.columns)
    return metrics.score(truth, predicted), truth, predicted


def trajectory_scorer(spots: ad.AnnData, live: Path | None = None) -> Scorer:
    """What a point of the accuracy trajectory records: the final result's per-cell-type metrics and means,
    computed the same way (the cell types' order is the final result's, kept once per task). With `live`,
    each point is also appended there as it is taken: a tuner reads a running task's scores from it."""
    cell_types: list[str] = []

    def score(proportions: pd.DataFrame) -> dict[str, Any]:
        scores, _, _ = _benchmark_scores(spots, proportions)
        cell_types[:] = list(map(str, scores.per_cell_type.index))
        return {
            "means": scores.means(),
            "per_cell_type": scores.per_cell_type[list(metrics.METRICS)].to_numpy(dtype=float).tolist(),
        }

    if live is not None:
        score.on_point = lambda point: append_line(  # type: ignore[attr-defined]
            live, {**point, "cell_types": cell_types, "metrics": list(metrics.METRICS)}
        )
    return score


def _trajectory(fit: FitResult, scores: dict[str, Any]) -> dict[str, Any] | None:
    """The trajectory as result.json keeps it: cell types and metrics once, then the points."""
    if fit.trajectory is None:
        return None
    return {"cell_types": scores["per_cell_type"]["index"], "metrics": list(metrics.METRICS), "points": fit.trajectory}


def _scores(spots: ad.AnnData, fit: FitResult) -> dict[str, Any]:
    """The benchmark's metrics, the grid SSIM and, where both exist, the cell-state agreement."""
    reference_types = list(fit.proportions.columns)
    scores, truth, predicted = _benchmark_scores(spots, fit.proportions)
    grid = spots.obs[["grid_x", "grid_y"]].rename(columns={"grid_x": "x", "grid_y": "y"})
    result: dict[str, Any] = {
        "per_cell_type": _frame(scores.per_cell_type),
        "per_spot": _frame(scores.per_spot),
        "means": scores.means(),
        "grid_ssim": metrics.grid_ssim(truth, predicted, grid).to_dict(),
    }
    if fit.states is not None and "true_state" in spots.obsm:
        true_state = np.asarray(spots.obsm["true_state"])
        order = [list(spots.uns["pseudospots"]["cell_types"]).index(name) for name in reference_types]
        weights = spots.obsm["cell_counts"][reference_types].to_numpy()
        agreement = metrics.state_agreement(
            np.nan_to_num(true_state[:, :, order]), fit.states, weights, cell_types=reference_types
        )
        result["state_agreement"] = _frame(agreement)
    return result


def fit(
    task: Task, spots: ad.AnnData, reference: ad.AnnData, model_dir: Path | None, live: Path | None = None
) -> FitResult:
    """Dispatch to the task's method adapter, with the scorer of its accuracy trajectory."""
    return adapter(task.method).fit(spots, reference, model_dir, task, score=trajectory_scorer(spots, live))


LIVE_TRAJECTORY = "trajectory.jsonl"
"""A task's trajectory points as they are taken, one JSON line each (a resumed task may repeat a step)."""


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (one write: a reader sees whole lines, or a last one it skips)."""
    import orjson

    with open(path, "ab") as handle:
        handle.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def run_task(task_data: dict[str, Any], out: str, threads: int | None = None) -> str:
    """Run one task unless its result exists; returns 'done' or 'skipped'."""
    task = Task.from_dict(task_data)
    layout = OutputLayout(Path(out))
    if layout.result(task.id).exists():
        return "skipped"
    layout.error(task.id).unlink(missing_ok=True)
    write_json(layout.task_dir(task.id) / "started.json", {"started": time.time(), **provenance.scheduler_job()})
    start = time.perf_counter()
    try:
        _set_threads(threads, task.method)
        model_dir = ensure_reference_model(task, layout)
        spots = read_spots(layout.spots(task.dataset))
        reference = ad.read_h5ad(layout.reference(task.dataset))
        result = fit(task, spots, reference, model_dir, layout.task_dir(task.id) / LIVE_TRAJECTORY)
        scores = _scores(spots, result)
        task_dir = layout.task_dir(task.id)
        write_atomically(task_dir / "history.csv", lambda tmp: result.history.to_csv(tmp))
        if result.states is not None:
            write_atomically(task_dir / "states.npy", lambda tmp: _save_array(tmp, result.states))
        write_json(
            layout.result(task.id),
            {
                "task_id": task.id,
                "status": "done",
                "task": task.to_dict(),
                "settings": task.settings,
                "inputs": recorded_inputs(layout, task.dataset),
                "scores": scores,
                "trajectory": _trajectory(result, scores),
                "proportions": _frame(result.proportions),
                "n_steps": result.n_steps,
                "train_time_s": result.train_time_s,
                "reference_time_s": reference_train_time(model_dir),
                "task_time_s": time.perf_counter() - start,
                "peak_host_memory_mb": provenance.peak_host_memory_mb(),
                "peak_gpu_memory_mb": provenance.peak_gpu_memory_mb(),
                "method_settings": result.settings,
                "provenance": provenance.collect(),
            },
        )
    except BaseException as exc:
        if interrupted(exc):
            raise  # stopped, not failed: no error.json, so a plain rerun resumes it from its checkpoint
        write_json(
            layout.error(task.id),
            {
                "task_id": task.id,
                "status": "failed",
                "settings": task.settings,
                "reason": _reason(exc),
                "traceback": traceback.format_exc(),
                "task_time_s": time.perf_counter() - start,
                "provenance": provenance.collect(),
            },
        )
        raise
    return "done"


STOPPED_REASON = (
    "stopped by SIGTERM before it finished (its run, job or machine was shut down); "
    "`spotsweep run --retry-failed` runs it again"
)


def interrupted(exc: BaseException) -> bool:
    """Ctrl-C, or the SIGINT a cancelled local job gets: a KeyboardInterrupt, or the SystemExit Lightning
    raises after shutting down on one (the interrupt is then its context)."""
    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, KeyboardInterrupt):
            return True
        link = link.__cause__ or link.__context__
    return False


def _reason(exc: BaseException) -> str:
    """One line for error.json; Lightning's bare SIGTERMException says what happened and what to do."""
    if type(exc).__name__ == "SIGTERMException":
        return STOPPED_REASON
    return f"{type(exc).__name__}: {exc}"

"""Benchmark: aggregate 10,000 task results into one Dataset, against the obvious xarray alternative.

    .venv/bin/python -m tests.benchmarks.bench_aggregate [--tasks 10000] [--baseline-tasks 500] [--trajectory-points 50]

The results are real task results' layout (result.json) with a 189-spot x 12-type STARmap-sized
payload, cloned under 10,000 settings. The alternative builds one small Dataset per task and lets
`xr.combine_by_coords` merge them; it runs on fewer tasks and its time per task is compared.
Prints a markdown table (time, tasks/s, peak RSS), with and without writing summary.nc and
summary.zarr. Measures, never asserts a time. `--trajectory-points 50` gives every task an accuracy
trajectory of 50 points (what a destVI task records); run it with 0 and 50, one process each, to compare
time, peak memory and summary.nc bytes per task.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from toolkit.aggregate import aggregate, write_summary
from toolkit.layout import OutputLayout
from toolkit.sweep import Task

N_SPOTS, TYPES = 189, [f"type{i:02d}" for i in range(12)]


def _frame(index: list[str], columns: list[str], values: np.ndarray) -> dict:
    return {"index": index, "columns": columns, "values": values.round(6).tolist()}


def fake_trajectory(points: int, steps: int, rng: np.random.Generator) -> dict:
    """A task's accuracy trajectory as result.json keeps it: `points` scorings over `steps` steps."""
    metrics = ["pcc", "ssim", "rmse", "js"]
    return {
        "cell_types": TYPES,
        "metrics": metrics,
        "points": [
            {
                "step": int(step),
                "epoch": float(step) / 4,
                "means": {f"{m}_{d}": float(rng.random()) for m in metrics for d in ("cell_type", "spot")},
                "per_cell_type": rng.random((len(TYPES), 4)).round(6).tolist(),
            }
            for step in np.linspace(steps / points, steps, points).round()
        ],
    }


def fake_sweep(root: Path, n_tasks: int, rng: np.random.Generator, trajectory_points: int = 0) -> list[Task]:
    """Write sweep.json and n_tasks result.json files shaped like real ones (with an accuracy trajectory of
    `trajectory_points` points, where not 0)."""
    layout = OutputLayout(root)
    spots = [f"spot_{i // 19}_{i % 19}" for i in range(N_SPOTS)]
    seeds = max(1, n_tasks // 100)
    tasks = [
        Task("bench", "destvi", "2022", amortization, batch, epochs, seed, {"lr": 0.003})
        for amortization in ("both", "latent")
        for batch in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
        for epochs in (500, 1000, 1500, 2000, 2500)
        for seed in range(seeds)
    ][:n_tasks]
    layout.sweep_file.parent.mkdir(parents=True, exist_ok=True)
    layout.sweep_file.write_text(json.dumps({"name": "bench", "tasks": [t.to_dict() for t in tasks]}))
    for task in tasks:
        proportions = rng.dirichlet(np.ones(len(TYPES)), N_SPOTS)
        metrics = ["pcc", "ssim", "rmse", "js"]
        result = {
            "task_id": task.id,
            "settings": task.settings,
            "scores": {
                "per_cell_type": _frame(TYPES, metrics, rng.random((len(TYPES), 4))),
                "per_spot": _frame(spots, metrics, rng.random((N_SPOTS, 4))),
                "means": {f"{m}_{d}": float(rng.random()) for m in metrics for d in ("cell_type", "spot")},
                "grid_ssim": dict(zip(TYPES, rng.random(len(TYPES)).tolist(), strict=True)),
            },
            "proportions": _frame(spots, TYPES, proportions),
            "trajectory": fake_trajectory(trajectory_points, 100, rng) if trajectory_points else None,
            "n_steps": 100,
            "train_time_s": 1.0,
            "reference_time_s": 1.0,
            "task_time_s": 2.0,
            "peak_host_memory_mb": 500.0,
            "peak_gpu_memory_mb": None,
            "method_settings": {"batch_size": task.batch_size},
            "provenance": {"versions": {}, "device": "cpu"},
        }
        path = layout.result(task.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))
    return tasks


def combine_baseline(root: Path, tasks: list[Task]) -> xr.Dataset:
    """The obvious alternative: a Dataset per task with its settings as length-1 dims, then combine."""
    layout = OutputLayout(root)
    parts = []
    for task in tasks:
        result = json.loads(layout.result(task.id).read_text())
        frame = result["scores"]["per_cell_type"]
        proportions = result["proportions"]
        values = np.asarray(frame["values"])
        part = xr.Dataset(
            {name: (["cell_type"], values[:, i]) for i, name in enumerate(frame["columns"])}
            | {"proportion": (["spot", "cell_type"], np.asarray(proportions["values"]))},
            coords={"cell_type": frame["index"], "spot": proportions["index"]},
        )
        parts.append(part.expand_dims({k: [v] for k, v in task.settings.items()}))
    return xr.combine_by_coords(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--baseline-tasks", type=int, default=500)
    parser.add_argument("--trajectory-points", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "big"
        start = time.perf_counter()
        tasks = fake_sweep(root, args.tasks, rng, args.trajectory_points)
        print(f"wrote {len(tasks)} results in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        dataset = aggregate(root)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        write_summary(root)
        with_writing = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        summary_bytes = OutputLayout(root).summary.stat().st_size
        small = Path(tmp) / "small"
        small_tasks = fake_sweep(small, args.baseline_tasks, rng)
        start = time.perf_counter()
        aggregate(small)
        ours_small = time.perf_counter() - start
        start = time.perf_counter()
        combine_baseline(small, small_tasks)
        baseline_small = time.perf_counter() - start
    print(f"dims: {dict(dataset.sizes)}")
    print("| what | tasks | seconds | tasks/s | ms/task |")
    print("| --- | --- | --- | --- | --- |")
    for name, n, seconds in (
        ("spotsweep aggregate", len(tasks), ours),
        ("spotsweep aggregate, written as NetCDF and Zarr", len(tasks), with_writing),
        ("spotsweep aggregate", len(small_tasks), ours_small),
        ("per-task Dataset + xr.combine_by_coords", len(small_tasks), baseline_small),
    ):
        print(f"| {name} | {n} | {seconds:.1f} | {n / seconds:.0f} | {1000 * seconds / n:.2f} |")
    print(
        f"ratio (combine_by_coords / spotsweep, per task, {len(small_tasks)} tasks): {baseline_small / ours_small:.1f}x"
    )
    print(f"peak RSS of the whole run: {peak:.2f} GiB")
    print(f"summary.nc: {summary_bytes / 2**20:.1f} MiB, {summary_bytes / len(tasks) / 1024:.1f} KiB per task")


if __name__ == "__main__":
    main()

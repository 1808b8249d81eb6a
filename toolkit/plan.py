"""`spotsweep plan`: what a sweep costs before it runs. Validates, trains nothing, writes nothing.

For every task: its spots (windows counted from the cells' coordinates alone: a simulated tissue's
positions are drawn without any expression, a file's coordinates read without its counts), its batch
size as it will run (`auto` resolved), its optimizer steps and an estimate of its time from a table of
measured milliseconds per step. Where no figure was measured (Cell2location; destVI with augmentation on a
GPU) the estimate says so instead of guessing.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.config import DatasetConfig, InputConfig, SweepConfig
from toolkit.layout import OutputLayout
from toolkit.methods import describe
from toolkit.pseudospots.grid import Grid
from toolkit.status import task_state
from toolkit.sweep import SWEPT_SETTINGS, Task, expand, optional_settings

CPU_2022: dict[str, dict[int, float]] = {
    "scvi": {8: 11.36, 32: 16.06, 128: 34.52},
    "fast": {8: 6.80, 32: 10.86, 128: 29.40},
    "fast+compile": {8: 3.18, 32: 8.00, 128: 19.26, 256: 68.17, 512: 156.50, 1024: 296.63},
}
"""destVI's ms per step on this project's CPU without augmentation (variant 2022): see MS_PER_STEP."""
AUGMENTED_CPU: dict[str, dict[int, float]] = {
    "fast": {8: 28.83, 32: 122.53, 128: 345.86},
    "fast+compile": {8: 30.47, 32: 114.55, 128: 357.19},
}
"""destVI's ms per step on this project's CPU with augmentation (variant current: scvi-tools' defaults, the
mixture prior and augmentation), by engine and batch size: 4-11x the 2022 step. Measured 2026-12-07 on real
STARmap (189 spots x 1,019 genes), amortization both, 1 torch thread, 2 repeats, medians, beside a nice-19
study load (two study tasks) that left the 2022 step measured in the same run at 0.95-1.33x its idle 1-thread
figure (results/engine.md, "With augmentation"): `python -m tests.benchmarks.bench_engine --variant current
--engines fast fast-compiled --threads 1 --repeats 2 --no-reference`. Taken as measured, not as a ratio to the
2-thread 2022 figures: compiling gains nothing here (within 7% of eager), so a ratio would carry the 2022
step's compile speed-up over, and the study's tasks run one thread each (a batch-8 task of
sweeps/starmap-189-current.yaml ran 34 ms a step). A second thread may make these smaller (not measured:
the study's session held one core)."""


MS_PER_STEP: dict[str, dict[str, dict[int, float]]] = {
    "cpu": {
        **CPU_2022,
        **{f"{mode}+augmentation": figures for mode, figures in AUGMENTED_CPU.items()},
    },
    "gpu": {
        "scvi": {8: 14.30, 32: 18.69},
        "fast": {8: 7.59, 32: 8.41, 48: 7.63, 64: 7.46, 128: 7.22, 256: 7.00, 512: 7.46, 1024: 7.14},
        "fast+compile": {8: 1.88, 32: 2.09, 48: 1.80, 64: 1.98, 128: 1.65},
    },
}
"""destVI milliseconds per optimizer step by engine and batch size. CPU: this project's 2-core machine
(2 threads), real STARmap (189 spots x 1,019 genes), idle, 2026-11-25 (results/engine.md,
`python -m tests.benchmarks.bench_engine --threads 2`); compiled at 256-1,024, which 189 spots cannot
reach: the merfish-like tissue (27,000 spots x 483 genes), 2026-12-01, beside two nice-19 study tasks
(`--data merfish-like`; its batch 128 read 28.6 ms, so these may overstate an idle machine's by up to
1.5x, where extending 32-128 understated them 4x). All of these ran destVI without augmentation (variant
2022); the `+augmentation` rows (variant current) are AUGMENTED_CPU, 1 thread, measured 2026-12-07;
`scvi+augmentation` was not measured. GPU: one H200, torch 2.11, 2026-11-30
(results/gpu-h200/, `tests/benchmarks/gpu_check.py`): batch 8 on real STARmap, the others on 27,000
merfish-like spots; `fast+compile` is `reduce-overhead`, what `compile: true` runs as on CUDA. On a GPU a
step is overhead, nearly flat in the batch size, and augmentation, never timed there, has no figure. Between
and beyond the measured batch sizes: a power law through the nearest two."""
SOURCES = {
    "cpu": "destVI ms/step measured on 2 CPU threads, real STARmap 1,019 genes, and compiled at batch 256-1,024 "
    "the merfish-like tissue (results/engine.md, 2026-11-25 and 12-01); with augmentation (variant current) "
    "on 1 thread, STARmap (2026-12-07)",
    "gpu": "destVI ms/step measured on one H200, torch 2.11 (results/gpu-h200/, 2026-11-30); with augmentation "
    "(variant current) not measured",
}


@dataclass(frozen=True)
class PlannedTask:
    task: Task
    n_spots: int
    batch_size: int
    steps: int
    state: str
    mode: str
    """How it trains, as MS_PER_STEP names it: the method's own word (destVI: scvi, fast, fast+compile, each
    with `+augmentation` where the module augments, as variant current does)."""

    def hours(self, device: str) -> float | None:
        per_step = ms_per_step(device, self.mode, self.batch_size)
        return None if per_step is None else self.steps * per_step / 3.6e6


@dataclass(frozen=True)
class Plan:
    sweep: SweepConfig
    tasks: list[PlannedTask]
    spots: dict[str, int]

    def axis_counts(self) -> dict[str, dict[str, int]]:
        """How many tasks take each value of each swept setting."""
        tasks = [planned.task for planned in self.tasks]
        settings = {**dict.fromkeys(SWEPT_SETTINGS), **optional_settings(tasks)}
        return {
            name: dict(Counter(str(task.setting(name, default)) for task in tasks))
            for name, default in settings.items()
        }

    def total_hours(self, device: str, todo_only: bool = True) -> tuple[float, int]:
        """(estimated hours of the tasks with a figure, how many tasks have none)."""
        chosen = [t for t in self.tasks if t.state != "done" or not todo_only]
        hours = [t.hours(device) for t in chosen if t.steps]
        return sum(h for h in hours if h is not None), sum(h is None for h in hours)


def ms_per_step(device: str, mode: str, batch_size: int) -> float | None:
    """The measured figure, interpolated (or extended) as a power law in the batch size."""
    table = MS_PER_STEP.get(device, {}).get(mode)
    if not table:
        return None
    sizes = sorted(table)
    if batch_size in table or len(sizes) == 1:
        return table.get(batch_size, table[sizes[0]])
    low, high = (sizes[0], sizes[1]) if batch_size < sizes[0] else (sizes[-2], sizes[-1])
    for a, b in itertools.pairwise(sizes):
        if a <= batch_size <= b:
            low, high = a, b
    slope = math.log(table[high] / table[low]) / math.log(high / low)
    return table[low] * (batch_size / low) ** slope


def _grid(dataset: DatasetConfig, window: float) -> Grid:
    subset = dataset.subset.grid_subset() if dataset.subset is not None else None
    return Grid(float(window), edge_rule=dataset.edge_rule, **({"subset": subset} if subset else {}))


def _count_windows(grid: Grid, chunks: Any) -> int:
    keys: set[int] = set()
    for xy in chunks:
        cell_keys, keep = grid.cell_keys(np.asarray(xy, dtype=float))
        keys.update(np.unique(cell_keys[keep]).tolist())
    return len(keys)


def _file_coordinates(given: InputConfig) -> np.ndarray:
    """The cells' coordinates, read without their counts."""
    import pandas as pd

    from toolkit.data.readers import open_cells

    if given.cells_table is not None:
        table = pd.read_csv(given.cells_table, sep=None, engine="python")
        return table[[given.x_key or "x", given.y_key or "y"]].to_numpy(dtype=float)
    return np.asarray(open_cells(given.path, **given.model_dump(exclude={"path"})).xy.compute())


def count_spots(dataset: DatasetConfig) -> int:
    """The dataset's spots, from coordinates only."""
    if dataset.spots is not None:
        import anndata as ad
        import zarr

        group = zarr.open_group(str(dataset.spots), mode="r")
        obs = ad.io.read_elem(group["obs"])
        built = ad.io.read_elem(group["uns"]["pseudospots"])
        if dataset.subset is None:
            return len(obs)
        grid = obs[["grid_x", "grid_y"]].to_numpy()
        return int(dataset.subset.grid_subset().keeps(grid, float(built["window"]), (0.0, 0.0)).sum())
    if dataset.simulate is not None:
        sim = dataset.simulate
        if sim.preset == "atlas":
            from toolkit.data.atlas import BASE_PRESET, atlas_positions
            from toolkit.data.synthetic import PRESETS

            grid = _grid(dataset, dataset.window or PRESETS[BASE_PRESET].window)
            return _count_windows(grid, atlas_positions(sim.seed, sim.n_spatial_cells))
        from toolkit.data.synthetic import PRESETS, spatial_positions

        grid = _grid(dataset, dataset.window or PRESETS[sim.preset].window)
        return _count_windows(grid, [spatial_positions(sim.preset, sim.seed, sim.n_spatial_cells)])
    assert dataset.spatial is not None and dataset.window is not None
    return _count_windows(_grid(dataset, dataset.window), [_file_coordinates(dataset.spatial)])


def plan_sweep(sweep: SweepConfig, out: Path | None = None) -> Plan:
    """Every task with its spots, batch, steps and state (from `out`, the sweep's output by default)."""
    spots = {dataset.name: count_spots(dataset) for dataset in sweep.datasets}
    layout = OutputLayout(Path(out or sweep.output))
    planned = []
    for task in expand(sweep):
        method = describe(task.method)  # its batch size as it runs (`auto` resolved), its steps, its engine
        batch, steps = method.steps(task, spots[task.dataset])
        state = task_state(layout, task).state if layout.root.exists() else "missing"
        planned.append(PlannedTask(task, spots[task.dataset], batch, steps, state, method.mode(task)))
    return Plan(sweep, planned, spots)

"""A packed array element's runner, called in-process (no SLURM): tasks side by side, failures apart.

tests/test_slurm_pack.py runs the same runner on the real SLURM, with a preemption; this checks what
a failing task does to its pack, cheaply: its neighbours finish, it keeps its own error.json, the
element ends failed naming it, and a requeue of the element does not rerun it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.backends.slurm.pack import PackedSweepTask
from toolkit.config import parse_sweep
from toolkit.launch import record_sweep
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare_dataset
from toolkit.status import task_state
from toolkit.sweep import expand

DATASET = {
    "name": "pack",
    "simulate": {"preset": "starmap-like", "seed": 4, "n_spatial_cells": 300, "n_reference_cells": 300, "n_genes": 40},
}


def test_a_failed_task_does_not_stop_its_pack_and_is_not_rerun_by_a_requeue(tmp_path: Path) -> None:
    methods = [
        {"name": "control", "kind": ["truth", "uniform"]},
        {  # fails for real: DestVI takes no such keyword
            "name": "destvi",
            "batch_size": 8,
            "max_epochs": 1,
            "plan_kwargs": {"optimizer": "NoSuchOptimizer"},  # valid to the schema, fails in training
            "reference": {"max_epochs": 1, "n_hidden": 8, "n_latent": 2, "n_layers": 1},
        },
    ]
    config = parse_sweep({"name": "pack", "output": str(tmp_path), "datasets": [DATASET], "methods": methods}, "t")
    layout = OutputLayout(tmp_path)
    tasks = expand(config)
    record_sweep(config, tasks, layout)
    prepare_dataset(config.datasets[0], layout)
    broken = next(task for task in tasks if task.method == "destvi")

    runner = PackedSweepTask(str(tmp_path), threads=1, every_n_epochs=5, grace_s=30.0, workers=2)
    with pytest.raises(RuntimeError, match=f"1 of the 3 tasks of this pack failed .* the first, {broken.id}"):
        runner([task.to_dict() for task in tasks])
    states = {task.id: task_state(layout, task).state for task in tasks}
    assert states == {task.id: "failed" if task == broken else "done" for task in tasks}
    assert "Optimizer not understood" in layout.error(broken.id).read_text()

    assert runner([task.to_dict() for task in tasks]) == {}  # the element again, as after a requeue
    assert task_state(layout, broken).state == "failed"

"""The reference model's own seed as a sweep axis (issue 38's E6): `reference: {seed: [0, 1, 2]}` in a destVI
grid gives each task its reference seed (`reference_seed`, in its settings and id only away from 0, so
today's ids stay), prepare trains one reference model per seed, and the summary has a dimension for it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TINY_SWEEP
from toolkit.aggregate import aggregate
from toolkit.config import parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare, reference_model_id
from toolkit.sweep import Task, count_tasks, expand


def _sweep(reference_seed: Any = None) -> dict[str, Any]:
    """TINY_SWEEP, its destVI reference trained with `reference_seed` where given (one or a list)."""
    data = copy.deepcopy(TINY_SWEEP)
    if reference_seed is not None:
        data["methods"][0]["reference"]["seed"] = reference_seed
    return data


def test_todays_ids_stay_and_seed_zero_is_as_before() -> None:
    plain = [task.id for task in expand(parse_sweep(_sweep(), "t"))]
    assert [task.id for task in expand(parse_sweep(_sweep(0), "t"))] == plain
    assert [task.id for task in expand(parse_sweep(_sweep([0]), "t"))] == plain
    swept = expand(parse_sweep(_sweep([0, 1, 2]), "t"))
    assert [task.id for task in swept if task.setting("reference_seed", 0) == 0] == plain


def test_three_reference_seeds_give_three_reference_models_each_task_recording_its_own() -> None:
    sweep = parse_sweep(_sweep([0, 1, 2]), "t")
    tasks = expand(sweep)
    assert len(tasks) == count_tasks(sweep) == 3 * len(expand(parse_sweep(_sweep(), "t")))
    for task in tasks:
        seed = task.setting("reference_seed", 0)
        assert task.reference_config is not None and task.reference_config["seed"] == seed
        assert ("reference_seed" in task.extra_settings) == (seed != 0)
        assert (f"-r{seed}-" in task.id) == (seed != 0)
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))).id == task.id  # as a task process reads it
    models = {task.setting("reference_seed", 0): reference_model_id(task) for task in tasks}
    assert len(set(models.values())) == 3
    assert {reference_model_id(task) for task in tasks if task.setting("reference_seed", 0) == 1} == {models[1]}


def test_prepare_trains_one_reference_model_per_seed(tmp_path: Path) -> None:
    """Real CondSCVI training (3 epochs on the tiny tissue): three models, each with its seed, not the same."""
    sweep = parse_sweep(_sweep([0, 1, 2]), "t")
    tasks = expand(sweep)
    done = prepare(sweep.model_dump(mode="json"), [task.to_dict() for task in tasks], str(tmp_path))
    assert done == {"datasets": 1, "reference_models": 3}
    layout = OutputLayout(tmp_path)
    weights = []
    for seed in (0, 1, 2):
        task = next(task for task in tasks if task.setting("reference_seed", 0) == seed)
        model_dir = layout.model_dir(task.dataset, str(reference_model_id(task)))
        assert (model_dir / "training.json").exists()
        weights.append((model_dir / "model.pt").read_bytes())
    assert len(set(weights)) == 3


def test_the_dumped_sweep_validates_again() -> None:
    """The prepare job validates the sweep as dumped: a listed reference seed survives the round trip."""
    sweep = parse_sweep(_sweep([0, 1, 2]), "t")
    again = parse_sweep(sweep.model_dump(mode="json"), "again")
    assert [task.id for task in expand(again)] == [task.id for task in expand(sweep)]


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ([0, 0], "lists a seed twice"),
        ([], "lists no seed"),
        ([0, -1], "seed -1 must be a whole number of at least 0"),
        ([0, 1.5], "seed 1.5 must be a whole number"),
        ([0, True], "seed True must be a whole number"),
        ("one", "seed 'one' must be a whole number"),
    ],
)
def test_a_bad_reference_seed_is_one_sentence(seed: Any, message: str) -> None:
    with pytest.raises(SpotsweepError, match=rf"^sweep.yaml: 'methods\[0\].reference.seed'.*{message}"):
        parse_sweep(_sweep(seed), "sweep.yaml")


def _write_results(root: Path, tasks: list[Task]) -> None:
    """sweep.json and a result.json per task, shaped like real ones (tests/benchmarks/bench_aggregate.py),
    each task's mean PCC standing for its reference seed and seed, so that its place can be checked."""
    layout = OutputLayout(root)
    spots, types, metrics = ["spot_0_0", "spot_0_1", "spot_1_0"], ["A", "B"], ["pcc", "ssim", "rmse", "js"]

    def frame(index: list[str], columns: list[str], values: np.ndarray) -> dict:
        return {"index": index, "columns": columns, "values": values.tolist()}

    layout.sweep_file.parent.mkdir(parents=True, exist_ok=True)
    layout.sweep_file.write_text(json.dumps({"name": "seeds", "tasks": [task.to_dict() for task in tasks]}))
    for task in tasks:
        mark = 10 * task.setting("reference_seed", 0) + task.seed
        result = {
            "task_id": task.id,
            "settings": task.settings,
            "scores": {
                "per_cell_type": frame(types, metrics, np.full((2, 4), 0.5)),
                "per_spot": frame(spots, metrics, np.full((3, 4), 0.5)),
                "means": {"pcc_cell_type": float(mark)},
                "grid_ssim": {"A": 0.5, "B": 0.5},
            },
            "proportions": frame(spots, types, np.full((3, 2), 0.5)),
            "n_steps": 10,
            "train_time_s": 1.0,
            "reference_time_s": 1.0,
            "task_time_s": 2.0,
            "method_settings": {"batch_size": task.batch_size},
            "provenance": {"versions": {}, "device": "cpu"},
        }
        path = layout.result(task.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result))


def test_the_summary_has_a_reference_seed_dimension(tmp_path: Path) -> None:
    data = _sweep([0, 1, 2])
    data["methods"][0]["seed"] = [0, 1]
    data["methods"].append({"name": "control", "kind": ["nnls"]})  # trains no reference: reference seed 0
    tasks = expand(parse_sweep(data, "t"))
    _write_results(tmp_path, tasks)
    summary = aggregate(tmp_path)
    assert "reference_seed" in summary["status"].dims
    assert summary["reference_seed"].values.tolist() == [0, 1, 2]
    assert int(summary.attrs["n_done"]) == len(tasks)
    picked = summary["mean_pcc_cell_type"].sel(
        {"method": "destvi", "variant": "2022", "amortization": "both", "batch_size": 8, "max_epochs": 3}
    )
    for reference_seed in (0, 1, 2):
        for seed in (0, 1):
            value = picked.sel(reference_seed=reference_seed, seed=seed).squeeze().item()
            assert value == 10 * reference_seed + seed
    assert (summary["status"].sel({"method": "control", "reference_seed": 0}) == "done").any()


def test_without_a_listed_reference_seed_the_summary_has_no_such_dimension(tmp_path: Path) -> None:
    tasks = expand(parse_sweep(_sweep(), "t"))
    _write_results(tmp_path, tasks)
    assert "reference_seed" not in aggregate(tmp_path)["status"].dims


def test_where_the_reference_seed_is_an_axis_every_line_names_it_seed_zero_too() -> None:
    """The report's line labels: seed 0's line said nothing of its reference where seeds 1 and 2 named theirs,
    so it read as a line of another sweep (E6's figures, 2026-12-08)."""
    from toolkit.methods.description import budget_words

    assert budget_words({"max_epochs": 2500, "reference_seed": 0}) == "2500 epochs, reference seed 0"
    assert budget_words({"max_epochs": 2500, "reference_seed": 2}) == "2500 epochs, reference seed 2"
    assert budget_words({"max_epochs": 2500}) == "2500 epochs"  # not swept: not said

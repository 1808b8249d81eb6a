"""Every method through the same task interface, on a small synthetic tissue, with real training."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from toolkit.config import DatasetConfig, parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, read_json
from toolkit.prepare import prepare_dataset
from toolkit.pseudospots import read_spots
from toolkit.sweep import expand
from toolkit.task import run_task

DATASET = {
    "name": "small",
    "simulate": {"preset": "starmap-like", "seed": 2, "n_spatial_cells": 400, "n_reference_cells": 500, "n_genes": 50},
}
TINY_REFERENCE = {"max_epochs": 2, "batch_size": 128, "n_hidden": 16, "n_latent": 2, "n_layers": 1}
METHODS = [
    {
        "name": "destvi",
        "amortization": ["both", "latent"],
        "batch_size": 16,
        "max_epochs": 3,
        "reference": TINY_REFERENCE,
    },
    {"name": "destvi", "variant": "current", "batch_size": "auto", "max_epochs": 2, "reference": TINY_REFERENCE},
    {
        "name": "cell2location",
        "max_epochs": 20,
        "num_samples": 5,
        "reference": {"max_epochs": 2, "batch_size": 256, "num_samples": 5},
    },
    {"name": "stereoscope", "max_epochs": 3, "batch_size": 32, "reference": {"max_epochs": 2}},
    {"name": "control"},
]


def sweep(methods: list[dict], output: Path) -> object:
    return parse_sweep({"name": "methods", "output": str(output), "datasets": [DATASET], "methods": methods}, "test")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Run every task of every method in-process, as a job would; return result.json by task id."""
    out = tmp_path_factory.mktemp("methods")
    config = sweep(METHODS, out)
    layout = OutputLayout(out)
    prepare_dataset(config.datasets[0], layout)
    tasks = expand(config)
    for task in tasks:
        assert run_task(task.to_dict(), str(out), threads=1) == "done"
    return {task.id: read_json(layout.result(task.id)) for task in tasks} | {"_out": out}


def by_method(results: dict, method: str, **settings: object) -> list[dict]:
    found = [r for key, r in results.items() if key != "_out" and r["settings"]["method"] == method]
    return [r for r in found if all(r["settings"][k] == v for k, v in settings.items())]


@pytest.mark.parametrize("method", ["destvi", "cell2location", "stereoscope", "control"])
def test_each_method_predicts_proportions_and_is_scored(results: dict, method: str) -> None:
    for result in by_method(results, method):
        proportions = np.asarray(result["proportions"]["values"])
        assert proportions.shape == (len(result["proportions"]["index"]), 12)
        assert np.allclose(proportions.sum(axis=1), 1.0, atol=1e-5)
        assert (proportions >= 0).all()
        means = result["scores"]["means"]
        assert set(means) >= {"pcc_cell_type", "ssim_cell_type", "rmse_cell_type", "js_cell_type"}
        assert result["provenance"]["versions"]["scvi-tools"]
        assert result["provenance"]["cpu"]  # the processor: a seed's digits, and a reference model, depend on it


def test_controls_calibrate_the_metrics(results: dict) -> None:
    pcc = {r["settings"]["variant"]: r["scores"]["means"]["pcc_cell_type"] for r in by_method(results, "control")}
    rmse = {r["settings"]["variant"]: r["scores"]["means"]["rmse_cell_type"] for r in by_method(results, "control")}
    assert pcc["truth"] == pytest.approx(1.0)
    assert rmse["truth"] == pytest.approx(0.0, abs=1e-12)
    # a constant prediction: PCC undefined for every cell type, so its mean is too (null, shown "n/a"), not a 0
    # the method would seem to have earned; where only some types are undefined they count as 0 (Li et al.)
    assert pcc["uniform"] is None
    assert pcc["nnls"] > 0.5  # a simple fit on well separated synthetic types already finds them


def test_destvi_records_steps_states_and_auto_batch_size(results: dict) -> None:
    out: Path = results["_out"]
    (both,) = by_method(results, "destvi", amortization="both", variant="2022")
    n_spots = len(both["proportions"]["index"])
    assert both["n_steps"] == 3 * -(-n_spots // 16)
    states = np.load(out / "tasks" / both["task_id"] / "states.npy")
    assert states.shape == (n_spots, 2, 12)
    assert "state_agreement" in both["scores"]
    (auto,) = by_method(results, "destvi", variant="current")
    assert auto["method_settings"]["batch_size"] == min(max(n_spots // 10, 1), 128)
    assert auto["method_settings"]["module_kwargs"] == {"amortization": "both"}
    assert both["method_settings"]["module_kwargs"] == {
        "amortization": "both",
        "prior_mode": "normal",
        "augmentation": False,
    }


def test_the_module_defaults_plan_reads_are_the_installed_scvi_tools_own() -> None:
    """`spotsweep plan` tells augmentation apart without importing scvi-tools (toolkit.methods.destvi)."""
    import inspect

    from scvi.module import MRDeconv

    from toolkit.methods.destvi import MODULE_DEFAULTS

    parameters = inspect.signature(MRDeconv.__init__).parameters
    assert {key: parameters[key].default for key in MODULE_DEFAULTS} == MODULE_DEFAULTS


def test_same_seed_same_result_other_seed_other_result(results: dict, tmp_path: Path) -> None:
    """On CPU a task is a pure function of its config: rerun it elsewhere and compare proportions."""
    (reference_run,) = by_method(results, "destvi", amortization="latent")
    config = sweep([{**METHODS[0], "amortization": "latent", "seed": [0, 1]}], tmp_path)
    prepare_dataset(config.datasets[0], OutputLayout(tmp_path))
    runs = {}
    for task in expand(config):
        run_task(task.to_dict(), str(tmp_path), threads=1)
        runs[task.seed] = np.asarray(read_json(OutputLayout(tmp_path).result(task.id))["proportions"]["values"])
    assert np.array_equal(runs[0], np.asarray(reference_run["proportions"]["values"]))
    assert not np.allclose(runs[0], runs[1])


def test_fast_engine_gives_stock_training_results_bit_for_bit(results: dict, tmp_path: Path) -> None:
    """The default engine (fast, eager) replays stock DestVI.train on CPU: the same proportions exactly."""
    config = sweep([{**METHODS[0], "engine": "scvi", "reference": {**TINY_REFERENCE, "engine": "scvi"}}], tmp_path)
    prepare_dataset(config.datasets[0], OutputLayout(tmp_path))
    for task in expand(config):
        run_task(task.to_dict(), str(tmp_path), threads=1)
        stock = read_json(OutputLayout(tmp_path).result(task.id))
        (fast,) = by_method(results, "destvi", amortization=task.amortization, variant="2022")
        assert (stock["method_settings"]["engine"], fast["method_settings"]["engine"]) == ("scvi", "fast")
        assert fast["n_steps"] == stock["n_steps"]
        assert np.array_equal(np.asarray(fast["proportions"]["values"]), np.asarray(stock["proportions"]["values"]))


def test_cell2location_reports_every_epoch_and_the_same_result(results: dict, tmp_path: Path) -> None:
    """Its fit cannot resume (Pyro's optimiser state), but inside a session it tells each epoch, which
    `spotsweep status` shows for an hour-long fit; the callback changes nothing of the result."""
    from toolkit.engines.checkpoint import CheckpointSession, use_session

    (alone,) = by_method(results, "cell2location")
    config = sweep([METHODS[2]], tmp_path)
    prepare_dataset(config.datasets[0], OutputLayout(tmp_path))
    (task,) = expand(config)
    epochs: list[int] = []
    with use_session(CheckpointSession(tmp_path / "checkpoint", 0, on_epoch=epochs.append)):
        assert run_task(task.to_dict(), str(tmp_path), threads=1) == "done"
    assert epochs == list(range(1, METHODS[2]["max_epochs"] + 1))
    reported = read_json(OutputLayout(tmp_path).result(task.id))
    assert np.array_equal(np.asarray(reported["proportions"]["values"]), np.asarray(alone["proportions"]["values"]))


def test_engines_agree_bit_for_bit_with_two_threads(tmp_path: Path) -> None:
    """With several CPU threads too (deterministic kernels): reference and destVI, fast against stock."""
    proportions = {}
    for engine in ("scvi", "fast"):
        method = {
            **METHODS[0],
            "amortization": "both",
            "engine": engine,
            "reference": {**TINY_REFERENCE, "engine": engine},
        }
        config = sweep([method], tmp_path / engine)
        prepare_dataset(config.datasets[0], OutputLayout(tmp_path / engine))
        (task,) = expand(config)
        run_task(task.to_dict(), str(tmp_path / engine), threads=2)
        proportions[engine] = read_json(OutputLayout(tmp_path / engine).result(task.id))["proportions"]["values"]
    assert np.array_equal(np.asarray(proportions["scvi"]), np.asarray(proportions["fast"]))


def test_a_sweep_of_many_destvi_tasks_trains_its_reference_once(results: dict) -> None:
    out: Path = results["_out"]
    trained = sorted(path.parent.name.split("-")[0] for path in (out / "models" / "small").glob("*/training.json"))
    # destvi 2022 and current share one CondSCVI; cell2location and stereoscope have their own.
    assert trained == ["c2l", "condscvi", "rnastereoscope"]


def _write_inputs(tmp_path: Path, reference: ad.AnnData, cells: ad.AnnData) -> DatasetConfig:
    reference.write_h5ad(tmp_path / "reference.h5ad")
    cells.write_h5ad(tmp_path / "cells.h5ad")
    return DatasetConfig(
        name="files", spatial=tmp_path / "cells.h5ad", reference=tmp_path / "reference.h5ad", window=750
    )


@pytest.fixture
def inputs() -> tuple[ad.AnnData, ad.AnnData]:
    from toolkit.data.synthetic import simulate

    return simulate("starmap-like", 0, n_spatial_cells=200, n_reference_cells=200, n_genes=20)


def test_no_shared_genes_is_refused_before_training(tmp_path: Path, inputs: tuple) -> None:
    reference, cells = inputs
    reference.var_names = [f"other{i}" for i in range(reference.n_vars)]
    with pytest.raises(SpotsweepError, match="share no gene names"):
        prepare_dataset(_write_inputs(tmp_path, reference, cells), OutputLayout(tmp_path / "out"))
    assert not (tmp_path / "out" / "data" / "files" / "spots.zarr").exists()


def test_reference_without_cell_type_key_is_refused(tmp_path: Path, inputs: tuple) -> None:
    reference, cells = inputs
    reference.obs = reference.obs.rename(columns={"cell_type": "label"})
    with pytest.raises(SpotsweepError, match="no cell-type column 'cell_type'"):
        prepare_dataset(_write_inputs(tmp_path, reference, cells), OutputLayout(tmp_path / "out"))


def test_spot_types_missing_from_the_reference_are_named(tmp_path: Path, inputs: tuple) -> None:
    reference, cells = inputs
    reference = reference[reference.obs["cell_type"] != "Vip"].copy()
    reference.obs["cell_type"] = reference.obs["cell_type"].cat.remove_unused_categories()
    config = _write_inputs(tmp_path, reference, cells)
    with pytest.raises(SpotsweepError, match="the spatial cell types Vip are absent from the reference"):
        prepare_dataset(config, OutputLayout(tmp_path / "out"))
    allowed = config.model_copy(update={"allow_missing_cell_types": True})
    prepare_dataset(allowed, OutputLayout(tmp_path / "out"))
    spots = read_spots(tmp_path / "out" / "data" / "files" / "spots.zarr")
    assert "Vip" in pd.Index(spots.obsm["cell_counts"].columns)

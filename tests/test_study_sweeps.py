"""Every study of the blog is a sweep file: subsets, spot stores, the atlas through Dask, and a dry run.

Real data where the study used it (STARmap slice 1 and Li et al.'s pseudospots), real prepare stages
and real (tiny) sweeps; the plans of the study files answer in seconds without training anything.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO, STARMAP, TINY_SWEEP
from toolkit.cli import app
from toolkit.config import SweepConfig, identity, parse_sweep, read_yaml
from toolkit.data.synthetic import simulate
from toolkit.errors import SpotsweepError
from toolkit.launch import load_sweep, run_sweep
from toolkit.layout import OutputLayout, read_json
from toolkit.plan import AUGMENTED_CPU, ms_per_step, plan_sweep
from toolkit.prepare import prepare_dataset, reference_model_id
from toolkit.pseudospots import build_pseudospots, read_spots
from toolkit.sweep import expand

LI2022 = STARMAP / "li2022" / "simulated"
STUDIES = ("starmap-189", "starmap-57", "starmap-like", "merfish", "merfish-scaled")
MEASURED = {8: 30.47, 32: 114.55, 128: 357.19}
"""Compiled destVI's ms per step with augmentation, one thread, CPU (results/engine.md, 2026-12-07): about
as much as eager's, so not the 2022 figure times a ratio, which would carry over the compile speed-up."""


@pytest.fixture(autouse=True)
def _repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweep files name their inputs relative to the repository root, as the README runs them."""
    monkeypatch.chdir(REPO)


# --- the study files -------------------------------------------------------------------------------


@pytest.mark.parametrize("study", STUDIES)
def test_plan_of_each_study_answers_without_training(study: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plan", f"sweeps/{study}.yaml", "--out", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert f"{study}: " in result.output and "optimizer steps" in result.output and "CPU hours" in result.output
    assert not (tmp_path / "none").exists()  # a dry run writes nothing


def test_the_plans_count_the_studys_spots_and_steps() -> None:
    spots = {name: plan_sweep(load_sweep(f"sweeps/{name}.yaml")).spots[name] for name in ("starmap-189", "starmap-57")}
    assert spots == {"starmap-189": 189, "starmap-57": 57}
    plan = plan_sweep(load_sweep("sweeps/starmap-57.yaml"))
    auto = [p for p in plan.tasks if p.task.batch_size == "auto"]
    assert auto and {p.batch_size for p in auto} == {5}  # min(57 // 10, 128)
    batch4 = next(p for p in plan.tasks if p.task.batch_size == 4)
    assert batch4.steps == 15 * 2500  # ceil(57 / 4) steps per epoch
    merfish = plan_sweep(load_sweep("sweeps/merfish.yaml"))
    assert 26_000 < merfish.spots["merfish"] < 28_000  # the study's 27,395 spots of 40 um
    assert {(p.task.batch_size, p.task.max_epochs) for p in merfish.tasks if p.task.method == "destvi"} >= {
        (512, 5000),
        (1024, 10000),
    }


def test_the_scaled_merfish_keeps_the_whole_depth_and_the_studys_epoch_ratios() -> None:
    """Scaled to a 2-core CPU, it says exactly what it scaled: a strip 19 windows wide over every row, 0.4x
    the epochs for every method, and F4's long arms at the study's 2x and 4x."""
    plan = plan_sweep(load_sweep("sweeps/merfish-scaled.yaml"))
    assert 2_500 < plan.spots["merfish-scaled"] < 2_900
    destvi = {
        (p.task.amortization, p.task.batch_size, p.task.max_epochs) for p in plan.tasks if p.task.method == "destvi"
    }
    assert {("both", b, 1000) for b in (32, 64, 128, 256, 512, 1024)} <= destvi
    assert {("latent", b, 1000) for b in (32, 128, 256, 1024)} <= destvi
    assert {("both", b, e) for b in (512, 1024) for e in (2000, 4000)} <= destvi
    assert {p.task.max_epochs for p in plan.tasks if p.task.method == "cell2location"} == {12000}
    assert all(p.task.params["n_epochs_kl_warmup"] == 80 for p in plan.tasks if p.task.method == "destvi")


def test_estimates_follow_the_measured_table() -> None:
    assert ms_per_step("cpu", "fast", 8) == pytest.approx(6.80)
    assert ms_per_step("cpu", "fast", 8) < ms_per_step("cpu", "fast", 16) < ms_per_step("cpu", "fast", 32)
    assert ms_per_step("cpu", "fast", 1024) > ms_per_step("cpu", "fast", 128)
    assert ms_per_step("gpu", "fast", 8) == pytest.approx(7.59)  # one H200 (results/gpu-h200/)
    assert ms_per_step("gpu", "fast+compile", 32) < ms_per_step("gpu", "fast", 32) < ms_per_step("gpu", "scvi", 32)
    assert ms_per_step("tpu", "fast", 8) is None  # not measured: left blank, never guessed


def _variant(name: str, variant: str) -> SweepConfig:
    """A sweep file read again with its destVI grid's variant replaced (the tasks' ids change with it)."""
    data = read_yaml(REPO / "sweeps" / f"{name}.yaml")
    next(method for method in data["methods"] if method["name"] == "destvi")["variant"] = variant
    return parse_sweep(data, f"{name} as {variant}")


def test_augmentation_costs_its_measured_step_on_a_cpu_and_has_no_gpu_figure() -> None:
    """Variant current augments every step, which the 2022 figures left out: plan said 1.0 CPU hours for
    starmap-189-current, where a batch-8 task ran about 34 ms a step against the 3.18 it assumed."""
    current = plan_sweep(_variant("starmap-189-current", "current"), REPO / "no-such-output")
    study = plan_sweep(_variant("starmap-189-current", "2022"), REPO / "no-such-output")
    pairs = [(a, b) for a, b in zip(current.tasks, study.tasks, strict=True) if a.task.method == "destvi"]
    assert len(pairs) == 24 and {(a.mode, b.mode) for a, b in pairs} == {("fast+compile+augmentation", "fast+compile")}
    assert AUGMENTED_CPU["fast+compile"] == MEASURED
    for with_it, without in pairs:
        assert with_it.steps == without.steps
        if with_it.batch_size in MEASURED:  # measured there: exactly the figure
            assert with_it.hours("cpu") == pytest.approx(with_it.steps * MEASURED[with_it.batch_size] / 3.6e6)
        assert with_it.hours("cpu") > 4 * without.hours("cpu")  # 4-11x the 2022 step
        assert with_it.hours("gpu") is None and without.hours("gpu") is not None  # never the 2022 figure
    (hours, unknown), (hours_2022, _) = current.total_hours("cpu"), study.total_hours("cpu")
    assert unknown == 0 and hours > 10 * hours_2022
    assert current.total_hours("gpu") == (0.0, 24)


def test_plan_says_which_gpu_figures_it_lacks_in_its_last_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit import cli

    monkeypatch.setattr(cli.console, "width", 200)  # the table's cells unwrapped
    result = CliRunner().invoke(app, ["plan", "sweeps/starmap-189-current.yaml", "--out", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    last = next(line for line in reversed(result.output.splitlines()) if "optimizer steps" in line)
    assert "CPU hours; about 0.0 GPU hours plus 24 tasks without a measured figure on one GPU" in last
    assert result.output.count("│ not measured │") == 24  # the GPU column of every destVI task


@pytest.mark.parametrize(
    ("variant", "module_kwargs", "mode"),
    [
        ("2022", {}, "fast+compile"),
        ("current", {}, "fast+compile+augmentation"),
        ("current", {"augmentation": False}, "fast+compile"),  # module_kwargs go over the variant's settings
        ("2022", {"augmentation": True}, "fast+compile+augmentation"),
        ("current", {"n_samples_augmentation": 4}, "fast+compile+augmentation4"),  # not the measured one
    ],
)
def test_the_plan_reads_augmentation_from_the_modules_settings(variant: str, module_kwargs: dict, mode: str) -> None:
    from types import SimpleNamespace

    from toolkit.methods.destvi import DESCRIPTION

    params = {"engine": "fast", "compile": True, "module_kwargs": module_kwargs}
    assert DESCRIPTION.mode(SimpleNamespace(variant=variant, params=params)) == mode
    assert (ms_per_step("cpu", mode, 8) is None) == mode.endswith("4")  # no figure for another sample count


# --- subsets ---------------------------------------------------------------------------------------


def test_the_57_spot_subset_built_by_a_sweep_is_li_et_als_first_three_columns(tmp_path: Path) -> None:
    dataset = load_sweep("sweeps/starmap-57.yaml").datasets[0]
    prepare_dataset(dataset, OutputLayout(tmp_path))
    spots = read_spots(OutputLayout(tmp_path).spots(dataset.name))
    assert spots.n_obs == 57 and set(spots.obs["grid_x"]) == {0, 1, 2}
    assert list(spots.uns["pseudospots"]["subset"]["columns"]) == [0, 1, 2]
    li = pd.read_csv(LI2022 / "combined_spatial_count.txt", sep="\t")
    where = pd.read_csv(LI2022 / "combined_Locations.txt", sep="\t")
    first_three = li[where["x"].isin([0, 1, 2]).to_numpy()]
    genes = [gene for gene in li.columns if gene in set(spots.var_names)]
    assert len(genes) >= 880  # Li et al.'s 882 genes, less what slice 2 names otherwise (Nkx2-1)
    np.testing.assert_array_equal(np.asarray(spots[:, genes].X), first_three[genes].to_numpy())
    np.testing.assert_array_equal(
        spots.obs[["grid_x", "grid_y"]].to_numpy(), where[where["x"].isin([0, 1, 2])][["x", "y"]].to_numpy()
    )


def _tiny_files(folder: Path) -> tuple[Path, Path]:
    """The tiny tissue's cells and reference as .h5ad files."""
    reference, cells = simulate("starmap-like", 1, n_spatial_cells=500, n_reference_cells=600, n_genes=60)
    folder.mkdir(parents=True, exist_ok=True)
    cells.write_h5ad(folder / "cells.h5ad")
    reference.write_h5ad(folder / "reference.h5ad")
    return folder / "cells.h5ad", folder / "reference.h5ad"


def _controls_sweep(tmp_path: Path, datasets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "stores",
        "output": str(tmp_path / "out"),
        "datasets": datasets,
        "methods": [
            {"name": "control", "kind": ["truth", "nnls"]},
            {**copy.deepcopy(TINY_SWEEP["methods"][0]), "amortization": "both", "batch_size": 8},
        ],
        "executor": {"kind": "local", "max_parallel": 2, "timeout_min": 20},
    }


def test_a_spot_store_and_a_subset_run_as_sweeps_and_agree_with_the_files(tmp_path: Path) -> None:
    cells, reference = _tiny_files(tmp_path / "inputs")
    store = tmp_path / "inputs" / "spots.zarr"
    built = CliRunner().invoke(app, ["build", str(cells), "--window", "750", "--out", str(store), "--no-progress"])
    assert built.exit_code == 0, built.output
    files = {"spatial": str(cells), "reference": str(reference), "window": 750}
    data = _controls_sweep(
        tmp_path,
        [
            {"name": "files", **files},
            {"name": "store", "spots": str(store), "reference": str(reference)},
            {"name": "files-cols", **files, "subset": {"columns": [1, 2]}},
            {"name": "store-cols", "spots": str(store), "reference": str(reference), "subset": {"columns": [1, 2]}},
        ],
    )
    summary = run_sweep(parse_sweep(data, "stores"), report=False)
    assert summary.states["done"] == 4 * 3 and summary.states["failed"] == 0
    layout = OutputLayout(tmp_path / "out")
    spots = {name: read_spots(layout.spots(name)) for name in ("files", "store", "files-cols", "store-cols")}
    for a, b in (("files", "store"), ("files-cols", "store-cols")):
        np.testing.assert_array_equal(np.asarray(spots[a].X), np.asarray(spots[b].X))
        pd.testing.assert_frame_equal(spots[a].obsm["cell_counts"], spots[b].obsm["cell_counts"])
    assert set(spots["store-cols"].obs["grid_x"]) == {1, 2}
    assert spots["store"].uns["pseudospots"]["store"] == str(store)
    scores = {}
    for task in expand(parse_sweep(data, "stores")):
        result = read_json(layout.result(task.id))
        scores[(task.dataset, task.method, task.variant)] = result["scores"]["means"]
    for method, variant in (("control", "nnls"), ("destvi", "2022")):
        assert scores[("files", method, variant)] == scores[("store", method, variant)]
        assert scores[("files-cols", method, variant)] == scores[("store-cols", method, variant)]
    from toolkit.aggregate import aggregate

    summary = aggregate(layout.root)
    subsets = dict(zip(summary["dataset"].values, summary["spots_subset"].values, strict=True))
    assert json.loads(subsets["files-cols"]) == json.loads(subsets["store-cols"]) == {"columns": [1, 2]}
    assert json.loads(subsets["files"]) == {} and summary["spots_window"].values.tolist() == [750.0] * 4


def test_an_atlas_sweep_goes_through_the_out_of_core_builder(tmp_path: Path) -> None:
    dataset = {
        "name": "atlas",
        "simulate": {
            "preset": "atlas",
            "seed": 2,
            "n_spatial_cells": 200_000,
            "n_reference_cells": 2000,
            "n_genes": 40,
        },
    }
    data = _controls_sweep(tmp_path, [dataset])
    data["methods"] = data["methods"][:1]
    summary = run_sweep(parse_sweep(data, "atlas"), report=False)
    assert summary.states == {"done": 2, "failed": 0, "started": 0, "missing": 0}
    layout = OutputLayout(tmp_path / "out")
    spots = read_spots(layout.spots("atlas"))
    assert spots.uns["pseudospots"]["engine"] == "dask"
    cells = ad.read_zarr(layout.dataset_dir("atlas") / "cells.zarr")
    assert cells.n_obs == 200_000
    in_memory = build_pseudospots(cells[:, list(spots.var_names)], 40.0)
    np.testing.assert_array_equal(np.asarray(spots.X), np.asarray(in_memory.X))
    pd.testing.assert_frame_equal(spots.obsm["cell_counts"], in_memory.obsm["cell_counts"])
    assert plan_sweep(parse_sweep(data, "atlas")).spots["atlas"] == spots.n_obs


# --- ids and bad input -----------------------------------------------------------------------------


def test_a_new_field_counts_in_an_id_only_when_set(tiny_sweep_data: dict) -> None:
    plain = parse_sweep(tiny_sweep_data, "t")
    assert "subset" not in identity(plain.datasets[0]) and "spots" not in identity(plain.datasets[0])
    tiny_sweep_data["datasets"][0]["subset"] = {"columns": [0]}
    cut = parse_sweep(tiny_sweep_data, "t")
    assert identity(cut.datasets[0])["subset"]["columns"] == [0]
    assert {t.id for t in expand(plain)}.isdisjoint({t.id for t in expand(cut)})


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        (
            {"spots": "{tmp}/cells.h5ad"},
            r"datasets\[0\].spots points to '.*cells.h5ad', which is not a pseudospot store",
        ),
        ({"spots": "{tmp}/nowhere.zarr"}, r"datasets\[0\].spots points to '.*nowhere.zarr', which does not exist"),
        ({"spatial": "{tmp}/cells.h5ad", "window": 750, "subset": {}}, r"subset' keeps everything; give columns"),
        ({"spots": "{tmp}/x.zarr", "window": 40}, r"a 'spots' store has its own; remove window"),
    ],
)
def test_bad_dataset_sources_are_one_sentence(tmp_path: Path, dataset: dict, expected: str) -> None:
    _, reference = _tiny_files(tmp_path)
    entry = {
        "name": "d",
        "reference": str(reference),
        **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in dataset.items()},
    }
    data = _controls_sweep(tmp_path, [entry])
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpotsweepError, match=expected):
        load_sweep(path)


def test_a_subset_with_no_cells_names_the_file_and_the_fix(tmp_path: Path) -> None:
    cells, reference = _tiny_files(tmp_path)
    data = _controls_sweep(
        tmp_path,
        [{"name": "d", "spatial": str(cells), "reference": str(reference), "window": 750, "subset": {"columns": [99]}}],
    )
    with pytest.raises(SpotsweepError, match=r"cells.h5ad: the subset \{'columns': \[99\]\} contains no cells; choose"):
        prepare_dataset(parse_sweep(data, "s").datasets[0], OutputLayout(tmp_path / "out"))
    assert not OutputLayout(tmp_path / "out").spots("d").exists()


def test_prepare_reports_its_stages(tmp_path: Path, tiny_sweep_data: dict) -> None:
    from toolkit.prepare import prepare

    sweep = parse_sweep(tiny_sweep_data, "t")
    prepare(sweep.model_dump(mode="json"), [t.to_dict() for t in expand(sweep)], str(tmp_path))
    assert json.loads((tmp_path / "progress" / "prepare.json").read_text())["stage"] == "prepared"


# --- issue 38's experiments (E2-E6) -------------------------------------------------------------------

ANSWER = {
    "starmap-189-reference-shift": "starmap-189",
    "starmap-189-drop-last": "starmap-189",
    "starmap-189-current": "starmap-189",
    "starmap-189-seeds": "starmap-189",
    "starmap-57-seeds": "starmap-57",
    "starmap-189-reference-seed": "starmap-189",
}
"""Each new sweep file and the study file whose data and settings it shares."""


def _ids(name: str) -> dict[str, Any]:
    return {task.id: task for task in expand(load_sweep(f"sweeps/{name}.yaml"))}


@pytest.mark.parametrize("name", sorted(ANSWER))
def test_each_answer_sweep_loads_and_its_header_states_its_plan(name: str) -> None:
    """It loads, writes into its own folder under results/study-2022, runs two tasks at a time, and the task
    count and CPU hours of its `# Cost` line are what `spotsweep plan` says now."""
    path = REPO / "sweeps" / f"{name}.yaml"
    sweep = load_sweep(path.relative_to(REPO))
    assert sweep.name == name and str(sweep.output) == f"results/study-2022/{name}"
    assert sweep.executor.kind == "local" and sweep.executor.max_parallel == 2
    plan = plan_sweep(sweep, REPO / "no-such-output")
    hours, unknown = plan.total_hours("cpu")
    header = path.read_text().split("\nname:")[0].replace("\n# ", " ")
    assert f"sweeps/{name}.yaml`): {len(plan.tasks)} tasks" in header
    assert f"about {hours:.1f} CPU hours" in header and unknown == 0
    assert all(task.method in ("destvi", "control") for task in expand(sweep))  # destVI and the controls


def test_the_five_seed_sweeps_repeat_seeds_0_to_2_of_the_study_with_the_same_ids() -> None:
    for name, study in (("starmap-189-seeds", "starmap-189"), ("starmap-57-seeds", "starmap-57")):
        new, old = _ids(name), _ids(study)
        destvi = [task for task in new.values() if task.method == "destvi"]
        assert {task.seed for task in destvi} == {0, 1, 2, 3, 4}
        assert {i for i, task in new.items() if task.seed < 3} <= set(old)  # seeds 0-2: the study's very tasks
        assert not {i for i, task in new.items() if task.seed >= 3} & set(old)
        settings = {(t.amortization, t.batch_size) for t in destvi}
        assert all(sum(t.seed == seed for t in destvi) == len(settings) for seed in range(5))
    assert {t.batch_size for t in _ids("starmap-189-seeds").values() if t.method == "destvi"} == {8, 16, 128, "auto"}
    assert {t.batch_size for t in _ids("starmap-57-seeds").values() if t.method == "destvi"} == {4, "auto"}


def test_the_drop_last_sweep_holds_its_anchors_under_one_reference() -> None:
    tasks = _ids("starmap-189-drop-last")
    destvi = [task for task in tasks.values() if task.method == "destvi"]
    assert {(t.batch_size, bool(t.setting("drop_last"))) for t in destvi} == {
        (batch, dropped) for batch in (12, 16, 17, 18, 19, 128) for dropped in (False, True)
    }
    assert len(destvi) == 6 * 2 * 2 * 3
    assert len({reference_model_id(task) for task in destvi}) == 1
    old = _ids("starmap-189")
    anchors = {t.batch_size for i, t in tasks.items() if i in old and t.method == "destvi"}
    assert anchors == {12, 16, 128}  # kept-last-minibatch tasks that starmap-189.yaml also ran, same ids


def test_the_reference_seed_sweep_trains_three_references() -> None:
    destvi = [task for task in _ids("starmap-189-reference-seed").values() if task.method == "destvi"]
    assert len(destvi) == 3 * 3 * 3 and {t.amortization for t in destvi} == {"both"}
    models: dict[int, set] = {}
    for task in destvi:
        models.setdefault(task.setting("reference_seed", 0), set()).add(reference_model_id(task))
    assert sorted(models) == [0, 1, 2] and all(len(ids) == 1 for ids in models.values())
    assert len(set.union(*models.values())) == 3


def test_the_reference_shift_sweep_has_a_reference_model_per_strength(tmp_path: Path) -> None:
    """Each dataset shifts starmap-189's reference its own way and trains its own model; prepared for real,
    the sd-0 dataset's redraw alone raises slice 2's zeros from 72% to 79% (as its header says), and the
    missing-genes one leaves the spots and the reference two thirds of their genes."""
    sweep = load_sweep("sweeps/starmap-189-reference-shift.yaml")
    shifts = {d.name: d.reference_shift for d in sweep.datasets}
    assert {name: (s.capture_sd, s.missing_genes) for name, s in shifts.items() if s} == {
        "starmap-189-resampled": (0.0, 0.0),
        "starmap-189-shift05": (0.5, 0.0),
        "starmap-189-shift10": (1.0, 0.0),
        "starmap-189-shift10-missing": (1.0, 0.33),
    }
    study = identity(load_sweep("sweeps/starmap-189.yaml").datasets[0])
    for dataset in sweep.datasets:  # the spots are starmap-189's: only the reference differs
        assert {k: v for k, v in identity(dataset).items() if k not in ("name", "reference_shift")} == {
            k: v for k, v in study.items() if k != "name"
        }
    tasks = expand(sweep)
    assert len({reference_model_id(t) for t in tasks if t.method == "destvi"}) == 4
    layout = OutputLayout(tmp_path)
    for dataset in sweep.datasets:
        if dataset.name in ("starmap-189-resampled", "starmap-189-shift10-missing"):
            prepare_dataset(dataset, layout)
    resampled = read_json(layout.dataset_dir("starmap-189-resampled") / "reference_shift.json")
    assert round(100 * resampled["zero_fraction"]["before"]) == 72
    assert round(100 * resampled["zero_fraction"]["after"]) == 79
    missing = read_json(layout.dataset_dir("starmap-189-shift10-missing") / "reference_shift.json")
    kept = ad.read_h5ad(layout.reference("starmap-189-shift10-missing"))
    spots = read_spots(layout.spots("starmap-189-shift10-missing"))
    full = ad.read_h5ad(layout.reference("starmap-189-resampled"))
    assert len(missing["genes_removed"]) == round(0.33 * full.n_vars)
    assert (
        list(kept.var_names)
        == list(spots.var_names)
        == [g for g in full.var_names if g not in missing["genes_removed"]]
    )
    assert spots.n_obs == 189

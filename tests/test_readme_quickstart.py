"""The README's first hour on one machine, run as written on a scaled-down demo sweep.

The Quick start block is `make demo` and `make test`: the test runs what `make demo` runs (its recipe as
`make -n demo` prints it, so a change to the Makefile is followed), then the "Using it" and the
"plan / export" blocks, each with only its paths pointed elsewhere: sweeps/demo.yaml at a two-task demo of
the same shape, results/ at a temporary folder. Then it checks what the README promises they leave:
summary.nc with the variables and dimensions it names, the report (markdown, HTML, the three figures and a
ranked table), an exported SpatialData store, and nothing written into the clone.
"""

from __future__ import annotations

import copy
import subprocess

import numpy as np
import pytest
import xarray as xr
import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.readme import readme_block, run_block, run_script


def _clone_status() -> str:
    """Files git would see as new or changed in the clone (ignored build outputs and venvs aside)."""
    return subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True).stdout


def _demo_recipe() -> str:
    """The commands `make demo` runs once installed (the install lines are `make test`'s too)."""
    printed = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    commands = [line for line in printed.splitlines() if "spotsweep " in line]
    assert commands, f"`make demo` runs no spotsweep command: {printed}"
    return "\n".join(commands)


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The Quick start's `make demo`, then "Using it" and "plan / export", on a two-task demo."""
    here = tmp_path_factory.mktemp("first-hour")
    demo = yaml.safe_load((REPO / "sweeps" / "demo.yaml").read_text())
    scaled = copy.deepcopy(TINY_SWEEP)
    scaled.update(name="demo", output=str(here / "demo"), executor=demo["executor"])
    scaled["datasets"][0]["name"] = demo["datasets"][0]["name"]  # the export line names the demo's task
    scaled["methods"][0].update(amortization="both", batch_size=demo["methods"][0]["batch_size"])
    (here / "demo.yaml").write_text(yaml.safe_dump(scaled))
    paths = {
        "sweeps/demo.yaml": str(here / "demo.yaml"),
        "results/demo": str(here / "demo"),
        "results/sim": str(here / "sim"),
        "/tmp/demo-task.zarr": str(here / "demo-task.zarr"),
    }
    before = _clone_status()
    quick_start = readme_block("quick-start")
    assert [line.split("#")[0].strip() for line in quick_start.splitlines()] == ["make demo", "make test"]
    logs = {"make demo": run_script("make demo", _demo_recipe(), paths).stdout}
    logs["using-it"] = run_block("using-it", paths).stdout
    logs["plan-export"] = run_block("plan-export", paths).stdout
    assert _clone_status() == before, "the README's commands wrote into the clone (they should write under results/)"
    return {"root": here, "logs": logs}


def test_make_demo_leaves_the_summary_the_readme_describes(first_hour: dict) -> None:
    summary = xr.open_dataset(first_hour["root"] / "demo" / "summary.nc", engine="h5netcdf")
    swept = ["dataset", "method", "variant", "amortization", "batch_size", "max_epochs", "seed"]
    for name in ("pcc", "ssim", "rmse", "js"):
        assert list(summary[name].dims) == [*swept, "cell_type"], name
    assert "spot" in summary["proportion"].dims and "spot" in summary["true_proportion"].dims
    for name in ("status", "train_time_s", "n_steps"):
        assert name in summary, name
    assert set(summary["status"].values.ravel()) == {"done"}
    assert summary.sizes["batch_size"] == 2
    # the accuracy trajectory: min(50, steps) points per task, each with its own optimizer step and epoch
    assert list(summary["trajectory_mean_pcc_cell_type"].dims) == [*swept, "point"]
    points = summary["trajectory_step"].notnull().sum("point")
    assert (points == np.minimum(50, summary["n_steps"])).all()
    assert (summary["trajectory_step"].max("point") == summary["n_steps"]).all()


def test_make_demo_leaves_the_report_with_its_figures(first_hour: dict) -> None:
    report = first_hour["root"] / "demo" / "report"
    page = (report / "index.md").read_text()
    figures = ("proportions_starmap-like.png", "metrics_vs_batch_size_starmap-like.png", "trajectory_starmap-like.png")
    for figure in figures:
        assert (report / figure).stat().st_size > 0 and figure in page
    assert (report / "runtime_vs_batch_size_starmap-like.png").exists()
    assert "ranked by accuracy score" in page
    assert (report / "index.html").stat().st_size > 0


def test_using_it_runs_every_command_as_written(first_hour: dict) -> None:
    root, log = first_hour["root"], first_hour["logs"]["using-it"]
    assert "Usage:" in log  # --help
    assert "2 done, 0 failed, 0 started, 0 missing" in log  # status
    assert (root / "sim" / "spots.zarr").is_dir() and (root / "sim" / "cells.h5ad").exists()
    assert not list((root / "demo" / "tasks").glob("*/error.json"))


def test_plan_and_export_run_as_written(first_hour: dict) -> None:
    log = first_hour["logs"]["plan-export"]
    assert "starmap-189" in log and "tasks" in log
    assert (first_hour["root"] / "demo-task.zarr").is_dir()
    spatialdata = pytest.importorskip("spatialdata")
    exported = spatialdata.read_zarr(first_hour["root"] / "demo-task.zarr").tables["proportions"]
    trajectory = exported.uns["spotsweep"]["trajectory"]  # the export keeps the accuracy trajectory
    n_points = min(50, int(exported.uns["spotsweep"]["settings"]["max_epochs"]) * 9)  # 66 spots at batch 8
    assert len(trajectory["step"]) == n_points and trajectory["pcc"].shape == (n_points, len(trajectory["cell_types"]))

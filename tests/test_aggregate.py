"""The aggregate keeps every configuration: done, failed (with its reason) and never run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from toolkit.aggregate import write_summary
from toolkit.config import parse_sweep
from toolkit.launch import record_sweep
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare_dataset
from toolkit.report import write_report
from toolkit.sweep import expand
from toolkit.task import run_task

DATASET = {
    "name": "agg",
    "simulate": {"preset": "starmap-like", "seed": 3, "n_spatial_cells": 300, "n_reference_cells": 300, "n_genes": 40},
}
REFERENCE = {"max_epochs": 1, "n_hidden": 8, "n_latent": 2, "n_layers": 1}


@pytest.fixture(scope="module")
def sweep_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Controls that finish, a destVI task that fails for real (an optimizer scvi-tools does not know), and a
    destVI task that is part of the sweep but never runs."""
    out = tmp_path_factory.mktemp("aggregate")
    methods = [
        {"name": "control", "kind": ["truth", "uniform"]},
        {
            "name": "destvi",
            "batch_size": 8,
            "max_epochs": 1,
            "plan_kwargs": {"optimizer": "NoSuchOptimizer"},  # valid to the schema, fails in training
            "reference": REFERENCE,
        },
        {"name": "destvi", "batch_size": 16, "max_epochs": 1, "reference": REFERENCE},
    ]
    config = parse_sweep({"name": "agg", "output": str(out), "datasets": [DATASET], "methods": methods}, "test")
    layout = OutputLayout(out)
    tasks = expand(config)
    record_sweep(config, tasks, layout)
    prepare_dataset(config.datasets[0], layout)
    for task in tasks[:3]:
        try:
            run_task(task.to_dict(), str(out), threads=1)
        except ValueError:  # the failing task's optimizer
            assert task.params["plan_kwargs"]
    write_summary(out)
    write_report(out)
    return out


def test_status_of_every_configuration(sweep_out: Path) -> None:
    with xr.open_dataset(sweep_out / "summary.nc") as summary:
        status = summary["status"].to_series()
        status = status[status != "absent"]
        assert sorted(status.tolist()) == ["done", "done", "failed", "missing"]
        failed = summary["reason"].where(summary["status"] == "failed", drop=True).values.ravel()
        assert any("Optimizer not understood" in str(reason) for reason in failed)
        assert int(summary.attrs["n_failed"]) == 1 and int(summary.attrs["n_missing"]) == 1
        # Not done means no numbers, never zeros.
        missing = summary["pcc"].where(summary["status"] != "done")
        assert bool(missing.isnull().all())
        truth = summary["pcc"].sel({"method": "control", "variant": "truth"}).squeeze(drop=True)
        assert np.allclose(truth.dropna("cell_type"), 1.0)


def test_the_maps_say_how_to_read_the_grid(sweep_out: Path) -> None:
    """The preset's unit and orientation reach the summary and the maps' caption."""
    from toolkit.report import _map_caption

    summary = xr.load_dataset(sweep_out / "summary.nc")
    assert summary["spots_units"].sel(dataset="agg").item() == "px"
    caption = _map_caption(summary, "agg", sideways=True)
    assert caption.startswith("one pixel = one spot, a window of 750 px; grid y to the right, grid x up; ")
    assert caption.endswith("cortical depth along y: pia at low y, white matter at high y")
    summary = summary.assign(spots_orientation=("dataset", ["costs $5 at $high y"]))
    assert _map_caption(summary, "agg", sideways=False).endswith(r"costs \$5 at \$high y")  # no math mode
    holed = _map_caption(summary, "agg", sideways=True, holes=True)
    assert "750 px; white = no spot (a window without cells); grid y" in holed


def test_the_zarr_copy_holds_the_same_dataset(sweep_out: Path) -> None:
    with xr.open_dataset(sweep_out / "summary.nc") as netcdf, xr.open_zarr(sweep_out / "summary.zarr") as zarr:
        xr.testing.assert_identical(netcdf.load(), zarr.load())


def test_report_lists_what_is_not_done(sweep_out: Path) -> None:
    page = (sweep_out / "report" / "index.md").read_text()
    assert "4 tasks: 2 done, 1 failed, 0 started, 1 missing." in page
    assert "**2 tasks are not done:**" in page
    assert "Optimizer not understood" in page
    assert "missing" in page


def test_each_task_records_what_it_ran_on_and_the_runtime_figure_names_it(sweep_out: Path) -> None:
    """Times from different machines are not comparable: every done task keeps its device and processor,
    and the runtime figure's title says what the times were measured on."""
    from toolkit.provenance import cpu_model
    from toolkit.report import _runtime_title, machines

    summary = xr.load_dataset(sweep_out / "summary.nc")
    done = summary["status"] == "done"
    assert set(summary["device"].where(done, drop=True).values.ravel()) - {""} == {"cpu"}
    assert set(summary["cpu"].where(done, drop=True).values.ravel()) - {""} == {cpu_model()}
    assert set(summary["device"].where(summary["status"] == "failed", drop=True).values.ravel()) <= {""}
    assert machines(summary, "agg") == []  # only controls finished: nothing trained
    assert _runtime_title("agg", ["NVIDIA H200"]).endswith("\non NVIDIA H200")
    assert "on 2 machines, not comparable: cpu: AMD EPYC; NVIDIA H200" in _runtime_title(
        "agg", ["cpu: AMD EPYC", "NVIDIA H200"]
    )
    # Tasks from before the CPU model was recorded are not known to differ: not called a second machine.
    unrecorded = _runtime_title("agg", ["cpu (model not recorded)", "cpu: AMD EPYC"])
    assert unrecorded.endswith("\non cpu: AMD EPYC (and, for tasks that did not record it, an unnamed CPU)")


def _trajectory_arrays_before(shape: tuple[int, ...], points: int, types: dict[str, int], tasks: list) -> dict:
    """TrajectoryArrays as it was before `compact` (issue 37's speed-up), kept here as the reference."""
    from toolkit.metrics import METRIC_NAMES

    axes = {name: np.full((*shape, points), np.nan, dtype=np.float32) for name in ("step", "epoch")}
    per_type = {m: np.full((*shape, points, len(types)), np.nan, dtype=np.float32) for m in METRIC_NAMES}
    means: dict[str, np.ndarray] = {}
    for at, trajectory in tasks:
        pts = trajectory["points"]
        if not pts:
            continue
        n = len(pts)
        for name in axes:
            axes[name][at][:n] = [point[name] for point in pts]
        rows = [types[t] for t in trajectory["cell_types"]]
        values = np.asarray([point["per_cell_type"] for point in pts], dtype=np.float32)
        for column, metric in enumerate(trajectory["metrics"]):
            per_type[metric][at][:n, rows] = values[:, :, column]
        for key in pts[0]["means"]:
            if key not in means:
                means[key] = np.full((*shape, points), np.nan, dtype=np.float32)
            means[key][at][:n] = [np.nan if p["means"][key] is None else p["means"][key] for p in pts]
    return {"axes": axes, "per_type": per_type, "means": means}


def test_trajectory_arrays_fill_exactly_as_before_from_raw_or_compact_trajectories() -> None:
    """The aggregate's trajectory variables are bitwise what they were before trajectories were read as
    arrays: ragged point counts, no points, cell types in another order, null scores (NaN) included."""
    from toolkit.trajectories import TrajectoryArrays, compact

    rng = np.random.default_rng(3)
    types = {f"t{i}": i for i in range(5)}
    metrics = ["pcc", "ssim", "rmse", "js"]
    tasks = []
    for task in range(7):
        n = [50, 50, 12, 0, 1, 50, 30][task]
        order = list(rng.permutation(list(types)))[: 5 if task % 2 else 4]
        points = []
        for step in range(1, n + 1):
            per_type = rng.random((len(order), 4)).tolist()
            per_type[0][1] = None  # an undefined metric is null in result.json
            means = {f"{m}_{d}": float(rng.random()) for m in metrics for d in ("cell_type", "spot")}
            means["pcc_spot"] = None if step % 7 == 0 else means["pcc_spot"]
            points.append({"step": step * 24, "epoch": step * 24 / 7, "means": means, "per_cell_type": per_type})
        tasks.append(((task % 2, task // 2), {"cell_types": order, "metrics": metrics, "points": points}))
    expected = _trajectory_arrays_before((2, 4), 50, types, tasks)
    for as_read in (lambda t: t, compact):
        arrays = TrajectoryArrays((2, 4), 50, types)
        for at, trajectory in tasks:
            if as_read(trajectory) is not None:
                arrays.add(at, as_read(trajectory))
        for name, values in expected["axes"].items():
            np.testing.assert_array_equal(arrays.axes[name], values)
        for metric, values in expected["per_type"].items():
            np.testing.assert_array_equal(arrays.per_type[metric], values)
        assert list(arrays.means) == list(expected["means"])
        for key, values in expected["means"].items():
            np.testing.assert_array_equal(arrays.means[key], values)

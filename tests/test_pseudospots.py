"""Pseudospots: Li et al.'s STARmap benchmark reproduced exactly, the Dask path equal to the in-memory one,
subsets that keep the grid, schedulers, and one clear sentence (and no output) for each kind of bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from toolkit.backends.dask_scheduler import DaskCluster
from toolkit.backends.slurm.dask import jobqueue_cluster
from toolkit.data.readers import lazy_from_anndata, open_cells, read_cells
from toolkit.data.synthetic import simulate
from toolkit.errors import SpotsweepError
from toolkit.pseudospots import GridSubset, build_pseudospots, read_spots, window_indices, write_spots
from toolkit.pseudospots.out_of_core import build_spots_store

STARMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "starmap"
LI2022 = STARMAP / "li2022" / "simulated"


@pytest.fixture(scope="module")
def slice1() -> ad.AnnData:
    return read_cells(STARMAP / "slice1_counts.csv.gz", cells_table=STARMAP / "slice1_cells.csv")


@pytest.fixture(scope="module")
def li2022() -> dict[str, pd.DataFrame]:
    return {
        "counts": pd.read_csv(LI2022 / "combined_spatial_count.txt", sep="\t"),
        "clusters": pd.read_csv(LI2022 / "combined_spot_clusters.txt", sep="\t", index_col=0),
        "cells": pd.read_csv(LI2022 / "combined_cell_counts.txt", sep="\t", index_col=0),
        "locations": pd.read_csv(LI2022 / "combined_Locations.txt", sep="\t"),
    }


@pytest.fixture(scope="module")
def tissue() -> ad.AnnData:
    """A small synthetic section with true cell states (so true_state is built too)."""
    _, cells = simulate("starmap-like", 2, n_spatial_cells=1500, n_reference_cells=50, n_genes=40)
    return cells


def assert_same_spots(actual: ad.AnnData, expected: ad.AnnData) -> None:
    """Same spots, counts and truths; provenance equal except how they were computed."""
    np.testing.assert_array_equal(np.asarray(actual.X), np.asarray(expected.X))
    pd.testing.assert_frame_equal(actual.obs, expected.obs)
    assert list(actual.var_names) == list(expected.var_names)
    for key in ("cell_counts", "proportions"):
        pd.testing.assert_frame_equal(actual.obsm[key], expected.obsm[key])
    np.testing.assert_array_equal(actual.obsm["spatial"], expected.obsm["spatial"])
    assert ("true_state" in actual.obsm) == ("true_state" in expected.obsm)
    if "true_state" in expected.obsm:
        np.testing.assert_allclose(actual.obsm["true_state"], expected.obsm["true_state"], rtol=1e-6, equal_nan=True)
    skip = {"engine", "dask"}
    got, want = actual.uns["pseudospots"], expected.uns["pseudospots"]
    assert {k for k in got if k not in skip} == {k for k in want if k not in skip}
    for key in set(want) - skip:
        if isinstance(want[key], dict):
            assert {k: list(np.atleast_1d(v)) for k, v in got[key].items()} == {
                k: list(np.atleast_1d(v)) for k, v in want[key].items()
            }, key
        else:
            assert list(np.atleast_1d(got[key])) == list(np.atleast_1d(want[key])), key


# --- Li et al. 2022, STARmap slice 1 --------------------------------------------------------------


def check_li2022(spots: ad.AnnData, li2022: dict[str, pd.DataFrame]) -> None:
    assert spots.shape == (189, 882)
    assert list(spots.var_names) == list(li2022["counts"].columns)
    np.testing.assert_array_equal(np.asarray(spots.X), li2022["counts"].to_numpy())
    grid = spots.obs[["grid_x", "grid_y"]].to_numpy()
    np.testing.assert_array_equal(grid, li2022["locations"][["x", "y"]].to_numpy())
    clusters = li2022["clusters"]
    np.testing.assert_array_equal(spots.obsm["cell_counts"][clusters.columns].to_numpy(), clusters.to_numpy())
    np.testing.assert_array_equal(spots.obs["n_cells"].to_numpy(), li2022["cells"]["cell_count"].to_numpy())
    np.testing.assert_allclose(spots.obsm["proportions"].sum(axis=1), 1.0)


def test_starmap_slice1_reproduces_li2022_in_memory(slice1: ad.AnnData, li2022: dict) -> None:
    genes = list(li2022["counts"].columns)
    spots = build_pseudospots(slice1, 750, edge_rule="li2022", genes=genes, source="slice1")
    check_li2022(spots, li2022)
    assert spots.uns["pseudospots"]["edge_rule"] == "li2022" and spots.uns["pseudospots"]["n_cells_used"] == 1523


def test_starmap_slice1_reproduces_li2022_with_dask(slice1: ad.AnnData, li2022: dict, tmp_path: Path) -> None:
    genes = list(li2022["counts"].columns)
    cells = lazy_from_anndata(slice1, chunk_cells=300, source="slice1")
    summary = build_spots_store(cells, tmp_path / "spots.zarr", 750, edge_rule="li2022", genes=genes)
    assert (summary.n_spots, summary.n_genes, summary.n_cells_used) == (189, 882, 1523)
    spots = read_spots(tmp_path / "spots.zarr")
    check_li2022(spots, li2022)
    assert spots.uns["pseudospots"]["engine"] == "dask"
    assert spots.uns["pseudospots"]["dask"]["n_chunks"] == 6


def test_blog_subset_is_the_first_three_columns(slice1: ad.AnnData) -> None:
    full = build_pseudospots(slice1, 750, edge_rule="li2022")
    subset = build_pseudospots(slice1, 750, edge_rule="li2022", subset=GridSubset(columns=(0, 1, 2)))
    assert subset.n_obs == 57
    assert set(subset.obs["grid_x"]) == {0, 1, 2}
    kept = full[full.obs["grid_x"].isin([0, 1, 2])]
    np.testing.assert_array_equal(subset.X, kept.X)  # whole windows: the same spots as in the full grid
    assert subset.uns["pseudospots"]["subset"] == {"columns": [0, 1, 2]}


def test_bbox_and_rows_keep_whole_windows(slice1: ad.AnnData) -> None:
    full = build_pseudospots(slice1, 750)
    boxed = build_pseudospots(slice1, 750, subset=GridSubset(bbox=(0, 0, 2000, 3000)))
    expected = full[(full.obs["center_x"] <= 2000) & (full.obs["center_y"] <= 3000)]
    assert list(boxed.obs_names) == list(expected.obs_names) and boxed.n_obs > 0
    np.testing.assert_array_equal(boxed.X, expected.X)
    rows = build_pseudospots(slice1, 750, subset=GridSubset(columns=(1, 2), rows=(5,)))
    assert set(zip(rows.obs["grid_x"], rows.obs["grid_y"], strict=True)) <= {(1, 5), (2, 5)}


def test_edge_rules_differ_only_on_grid_lines() -> None:
    xy = np.array([[0.0, 0.0], [10.0, 5.0], [5.0, 20.0], [3.0, 4.0]])
    grid, keep = window_indices(xy, 10.0, edge_rule="half-open")
    assert keep.all() and grid.tolist() == [[0, 0], [1, 0], [0, 2], [0, 0]]
    _, keep = window_indices(xy, 10.0, edge_rule="li2022")
    assert keep.tolist() == [False, False, False, True]
    _, keep = window_indices(xy, 10.0, origin=(1.0, 1.0), edge_rule="li2022")
    assert keep.all()


# --- the Dask path equals the in-memory path ------------------------------------------------------


@pytest.mark.parametrize("layout", ["zarr-dense", "h5ad-sparse"])
def test_dask_path_equals_in_memory_path(tissue: ad.AnnData, tmp_path: Path, layout: str) -> None:
    """Many chunks, several passes (a tiny memory budget), a gene subset and an origin: still identical."""
    cells = tissue.copy()
    genes = list(cells.var_names[::-2])
    if layout == "zarr-dense":
        cells.X = cells.X.toarray().astype(np.int32)
        cells.write_zarr(tmp_path / "cells.zarr")
        path = tmp_path / "cells.zarr"
    else:
        cells.write_h5ad(tmp_path / "cells.h5ad")
        path = tmp_path / "cells.h5ad"
    options = {"origin": (-50.0, 25.0), "edge_rule": "half-open", "genes": genes}
    expected = build_pseudospots(cells, 400.0, source=str(path), **options)
    lazy = open_cells(path, chunk_cells=97)
    row_bytes = 4 * len(genes) + 8 * 12 * (1 + 2)  # counts, cells per type, state sums (2 dims)
    budget = row_bytes * (expected.n_obs // 3 + 1)
    summary = build_spots_store(lazy, tmp_path / "spots.zarr", 400.0, memory_budget=budget, **options)
    assert summary.count_passes == 3 and len(lazy.chunks) > 10
    actual = read_spots(tmp_path / "spots.zarr")
    assert_same_spots(actual, expected)
    assert actual.obsm["true_state"].shape == (actual.n_obs, 2, 12)


def test_dask_path_equals_in_memory_path_on_a_local_cluster(tissue: ad.AnnData, tmp_path: Path) -> None:
    """Worker processes: every task and argument has to travel by pickle."""
    expected = build_pseudospots(tissue, 500.0, source="tissue")
    lazy = lazy_from_anndata(tissue, chunk_cells=400, source="tissue")
    cluster = DaskCluster("local", 1, {"processes": True, "dashboard_address": None, "threads_per_worker": 2})
    with cluster.open() as scheduler:
        build_spots_store(lazy, tmp_path / "spots.zarr", 500.0, scheduler=scheduler, memory_budget=60 * 40 * 4)
    actual = read_spots(tmp_path / "spots.zarr")
    assert_same_spots(actual, expected)
    assert actual.uns["pseudospots"]["dask"]["scheduler"] == "local"


def test_slurm_cluster_takes_plain_sbatch_options() -> None:
    options = {"queue": "short", "account": "lab", "cores": 4, "memory": "16GB", "walltime": "01:00:00"}
    cluster = jobqueue_cluster(options)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH -p short" in script and "#SBATCH -A lab" in script and "#SBATCH -t 01:00:00" in script


def test_progress_goes_to_stderr(tissue: ad.AnnData, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    lazy = lazy_from_anndata(tissue, chunk_cells=500)
    build_spots_store(lazy, tmp_path / "spots.zarr", 500.0, progress=True)
    captured = capsys.readouterr()
    assert "summing" in captured.err and captured.out == ""


def test_overwrite_replaces_a_store(tissue: ad.AnnData, tmp_path: Path) -> None:
    out = tmp_path / "spots.zarr"
    write_spots(build_pseudospots(tissue, 300.0), out)
    build_spots_store(lazy_from_anndata(tissue), out, 600.0, overwrite=True)
    assert read_spots(out).uns["pseudospots"]["window"] == 600.0
    assert [p.name for p in tmp_path.iterdir()] == ["spots.zarr"]  # no temporary left behind


# --- bad input: one sentence, and no output store -------------------------------------------------


def small_cells(**changes: object) -> ad.AnnData:
    counts = np.array([[1, 0, 2], [0, 3, 1], [4, 1, 0], [2, 2, 2]], dtype=np.float32)
    cells = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame({"cell_type": pd.Categorical(["A", "B", "A", "B"])}, index=[f"c{i}" for i in range(4)]),
        var=pd.DataFrame(index=["g1", "g2", "g3"]),
    )
    cells.obsm["spatial"] = np.array([[1.0, 1.0], [2.0, 3.0], [15.0, 2.0], [16.0, 14.0]])
    if "X" in changes:
        cells.X = changes["X"]
    if "xy" in changes:
        cells.obsm["spatial"] = changes["xy"]
    return cells


def bad(message_parts: tuple[str, ...], call: object, out: Path | None = None) -> None:
    with pytest.raises(SpotsweepError) as error:
        call()  # type: ignore[operator]
    message = str(error.value)
    assert "\n" not in message and message.endswith(".") and message.count(". ") == 0, message
    for part in message_parts:
        assert part in message, (part, message)
    if out is not None:
        assert not out.exists() and not any(out.parent.glob(f".{out.name}*")), "a partial store was left behind"


BAD_INPUTS = {
    "nan-coordinates": (
        {"xy": np.array([[1.0, 1.0], [np.nan, 3.0], [15.0, 2.0], [16.0, 14.0]])},
        {},
        ("spatial", "NaN"),
    ),
    "negative-counts": (
        {"X": np.array([[1, 0, 2], [0, -3, 1], [4, 1, 0], [2, 2, 2]], np.float32)},
        {},
        ("X", "negative"),
    ),
    "non-integer-counts": ({"X": np.full((4, 3), 0.5, np.float32)}, {}, ("X", "non-integer", "--allow-non-integer")),
    "zero-window": ({}, {"window": 0.0}, ("window", "positive")),
    "negative-window": ({}, {"window": -5.0}, ("window", "positive")),
    "empty-subset": ({}, {"subset": GridSubset(columns=(7,))}, ("subset", "no cells")),
    "unknown-gene": ({}, {"genes": ["g1", "Xist"]}, ("Xist", "genes")),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
@pytest.mark.parametrize("engine", ["in-memory", "dask"])
def test_bad_input_is_one_sentence_and_leaves_no_store(tmp_path: Path, name: str, engine: str) -> None:
    changes, options, parts = BAD_INPUTS[name]
    cells = small_cells(**changes)
    options = {"window": 10.0, **options}
    out = tmp_path / "spots.zarr"
    if engine == "in-memory":
        bad(("cells.h5ad", *parts), lambda: build_pseudospots(cells, source="cells.h5ad", **options))
    else:
        lazy = lazy_from_anndata(cells, chunk_cells=2, source="cells.h5ad")
        bad(("cells.h5ad", *parts), lambda: build_spots_store(lazy, out, **options), out)


def test_non_integer_values_are_summed_when_allowed(tmp_path: Path) -> None:
    cells = small_cells(X=np.full((4, 3), 0.5, np.float32))
    spots = build_pseudospots(cells, 10.0, allow_non_integer=True)
    assert spots.X.sum() == pytest.approx(6.0) and "values" in spots.uns["pseudospots"]["counts"]
    build_spots_store(lazy_from_anndata(cells), tmp_path / "s.zarr", 10.0, allow_non_integer=True)
    assert read_spots(tmp_path / "s.zarr").X.sum() == pytest.approx(6.0)


def test_missing_cell_type_key_and_missing_labels(tmp_path: Path) -> None:
    cells = small_cells()
    bad(
        ("cells.h5ad", "'celltype'", "--cell-type-key"),
        lambda: build_pseudospots(cells, 10.0, cell_type_key="celltype", source="cells.h5ad"),
    )
    path = tmp_path / "cells.zarr"
    cells.write_zarr(path)
    bad((str(path), "'celltype'", "--cell-type-key"), lambda: open_cells(path, cell_type_key="celltype"))
    cells.obs["cell_type"] = pd.Categorical(["A", None, "A", "B"])
    bad(("cells.h5ad", "no cell type for 1 cells"), lambda: build_pseudospots(cells, 10.0, source="cells.h5ad"))
    out = tmp_path / "spots.zarr"
    lazy = lazy_from_anndata(cells, source="cells.h5ad")
    bad(("cells.h5ad", "obs['cell_type']", "no cell type"), lambda: build_spots_store(lazy, out, 10.0), out)


def test_existing_output_is_kept_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "spots.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    lazy = lazy_from_anndata(small_cells())
    bad((str(out), "already exists", "--overwrite"), lambda: build_spots_store(lazy, out, 10.0))
    assert (out / "keep.txt").read_text() == "mine"


def test_cli_builds_a_subset_and_reports_errors_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from toolkit.cli import main

    genes = tmp_path / "genes.txt"
    genes.write_text("\n".join(pd.read_csv(LI2022 / "combined_spatial_count.txt", sep="\t", nrows=0).columns))
    out = tmp_path / "blog.zarr"
    common = [str(STARMAP / "slice1_counts.csv.gz"), "--cells-table", str(STARMAP / "slice1_cells.csv")]
    argv = [*common, "--out", str(out), "--window", "750", "--edge-rule", "li2022", "--genes", str(genes)]
    monkeypatch.setattr(sys, "argv", ["spotsweep", "build", *argv, "--columns", "0,1,2", "--no-progress"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    assert read_spots(out).shape == (57, 882)
    capsys.readouterr()

    monkeypatch.setattr(sys, "argv", ["spotsweep", "build", *common, "--out", str(out), "--window", "-1"])
    with pytest.raises(SystemExit) as failed:
        main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert failed.value.code == 2 and len(lines) == 1 and "already exists" in lines[0]
    monkeypatch.setattr(
        sys, "argv", ["spotsweep", "build", *common, "--out", str(tmp_path / "x.zarr"), "--window", "-1"]
    )
    with pytest.raises(SystemExit) as failed:
        main()
    lines = capsys.readouterr().err.strip().splitlines()
    assert failed.value.code == 2 and len(lines) == 1 and "window must be a positive size" in lines[0]
    assert not (tmp_path / "x.zarr").exists()


def test_cell_type_names_with_a_slash_survive_the_store(tmp_path: Path) -> None:
    """Zarr keys cannot hold '/', STARmap's labels do ('eL2/3'): the store keeps the names in uns."""
    from toolkit.data.synthetic import simulate

    _, cells = simulate("starmap-like", 0, n_spatial_cells=200, n_reference_cells=50, n_genes=10)
    cells.obs["cell_type"] = cells.obs["cell_type"].cat.rename_categories(lambda name: name.replace("and", "/"))
    write_spots(build_pseudospots(cells, 750), tmp_path / "spots.zarr")
    spots = read_spots(tmp_path / "spots.zarr")
    assert "ExcitatoryL2/3" in spots.obsm["cell_counts"].columns
    assert spots.obsm["proportions"].sum(axis=1).to_numpy() == pytest.approx(1.0)

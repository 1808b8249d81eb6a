"""The `atlas` preset at reduced size: a tiled MERFISH-like tissue written chunk by chunk into Zarr.

The 10-million-cell figures (time, peak memory) come from the command in the closing note of issue 4;
here the same code writes 60,000 cells in three tiles and the store is read back, built into
pseudospots by `spotsweep build` (Dask, out of core) and regenerated from its seed.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.data.atlas import write_atlas
from toolkit.data.synthetic import PRESETS
from toolkit.errors import SpotsweepError

N_CELLS = 60_000
SIZES = {"n_cells": N_CELLS, "tile_cells": 20_000, "chunk_cells": 8192, "workers": 2, "show_progress": False}


@pytest.fixture(scope="module")
def atlas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("atlas") / "cells.zarr"
    return out, write_atlas(out, seed=3, **SIZES)


def test_shapes_integer_counts_and_truths(atlas: tuple[Path, dict]) -> None:
    path, summary = atlas
    cells = ad.read_zarr(path)
    assert cells.shape == (N_CELLS, PRESETS["merfish-like"].n_genes)
    assert summary["tiles"] == "2 x 2" and summary["n_cells"] == N_CELLS
    assert cells.X.dtype == np.int32 and cells.X.min() >= 0
    assert int(cells.X.sum(dtype=np.int64)) == summary["total_counts"]
    assert cells.obsm["spatial"].shape == (N_CELLS, 2) and cells.obsm["state"].shape[0] == N_CELLS
    assert (cells.obsm["spatial"] >= 0).all() and (cells.obsm["spatial"] <= summary["extent"]).all()
    assert cells.uns["simulation"]["preset"] == "atlas"
    stored = zarr.open_array(str(path / "X"), mode="r")
    assert stored.chunks == (8192, cells.n_vars)  # written a chunk of cells at a time


def test_type_frequencies_match_the_merfish_table(atlas: tuple[Path, dict]) -> None:
    """Each tile allocates by largest remainder: every type within one cell per tile of n * frequency."""
    cells = ad.read_zarr(atlas[0])
    preset = PRESETS["merfish-like"]
    counts = cells.obs["cell_type"].value_counts().reindex(preset.type_names).to_numpy()
    assert np.abs(counts - N_CELLS * preset.spatial_frequencies).max() <= 3


def test_reference_of_the_same_seed_shares_the_genes(tmp_path: Path) -> None:
    command = ["simulate", "--out", str(tmp_path), "--preset", "atlas", "--seed", "1", "--n-spatial-cells", "5000"]
    result = CliRunner().invoke(app, [*command, "--n-reference-cells", "2000", "--n-genes", "60"])
    assert result.exit_code == 0, result.output
    reference, cells = ad.read_h5ad(tmp_path / "reference.h5ad"), ad.read_zarr(tmp_path / "cells.zarr")
    assert list(reference.var_names) == list(cells.var_names)
    assert reference.n_obs == 2000 and cells.n_obs == 5000
    assert list(reference.obs["cell_type"].cat.categories) == list(cells.obs["cell_type"].cat.categories)


def test_spots_from_the_store_out_of_core(atlas: tuple[Path, dict], tmp_path: Path) -> None:
    """`spotsweep build` reads the store lazily and keeps every cell and count; MERFISH-like spot sizes."""
    path, summary = atlas
    spots_path = tmp_path / "spots.zarr"
    result = CliRunner().invoke(app, ["build", str(path), "--out", str(spots_path), "--window", "40"])
    assert result.exit_code == 0, result.output
    spots = ad.read_zarr(spots_path)
    per_spot = np.asarray(spots.obsm["cell_counts"]).sum(axis=1)
    assert per_spot.sum() == N_CELLS
    assert float(np.asarray(spots.X).sum(dtype=np.float64)) == summary["total_counts"]
    assert per_spot.min() >= 1 and per_spot.max() <= 20


def test_same_seed_same_store_other_seed_other(atlas: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = atlas
    again = write_atlas(tmp_path / "again.zarr", seed=3, **SIZES)
    other = write_atlas(tmp_path / "other.zarr", seed=4, **SIZES)
    first = zarr.open_array(str(path / "X"), mode="r")[:1000]
    assert np.array_equal(first, zarr.open_array(str(tmp_path / "again.zarr" / "X"), mode="r")[:1000])
    assert not np.array_equal(first, zarr.open_array(str(tmp_path / "other.zarr" / "X"), mode="r")[:1000])
    assert again["total_counts"] == atlas[1]["total_counts"] != other["total_counts"]


def test_existing_output_is_refused(atlas: tuple[Path, dict]) -> None:
    with pytest.raises(SpotsweepError, match="already exists"):
        write_atlas(atlas[0], seed=3, **SIZES)

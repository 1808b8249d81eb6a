"""Spot stores: the spots AnnData assembled from summed truths, and its Zarr form on disk.

A store is AnnData's own Zarr layout (format 2), so scanpy and squidpy open it with `anndata.read_zarr`;
`uns['pseudospots']` records how it was built (grid, subset, engine, versions).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

import toolkit
from toolkit.data.checks import write_all_chunks
from toolkit.layout import write_dir_atomically
from toolkit.provenance import package_version
from toolkit.pseudospots.grid import Grid, decode_keys


def provenance(grid: Grid, *, engine: str, **extra: Any) -> dict[str, Any]:
    """What `uns['pseudospots']` records about how the spots were made."""
    return {
        **grid.describe(),
        "subset": grid.subset.describe(),
        "engine": engine,
        **extra,
        "toolkit_version": toolkit.__version__,
        "anndata_version": package_version("anndata"),
        "versions": {name: package_version(name) for name in ("numpy", "scipy", "pandas")},
    }


def assemble_spots(
    spot_keys: np.ndarray,
    grid: Grid,
    cell_counts: np.ndarray,
    state_sums: np.ndarray | None,
    type_names: Sequence[str],
    genes: pd.Index,
    counts: np.ndarray | None,
    uns: dict[str, Any],
) -> ad.AnnData:
    """The spots AnnData from summed truths: obs grid and centres, obsm truths, uns provenance.

    `counts` may be None for a builder that writes X itself, chunk by chunk.
    """
    grid_x, grid_y = decode_keys(spot_keys)
    n_cells = cell_counts.sum(axis=1)
    names = "spot_" + pd.Series(grid_x).astype(str) + "_" + pd.Series(grid_y).astype(str)
    obs = pd.DataFrame(
        {
            "grid_x": grid_x,
            "grid_y": grid_y,
            "center_x": grid.origin[0] + (grid_x + 0.5) * grid.window,
            "center_y": grid.origin[1] + (grid_y + 0.5) * grid.window,
            "n_cells": n_cells.astype(np.int64),
        },
        index=pd.Index(names.to_numpy(), name="spot"),
    )
    spots = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=pd.Index(genes, dtype=str)))
    type_names = list(type_names)
    spots.obsm["spatial"] = obs[["center_x", "center_y"]].to_numpy()
    spots.obsm["cell_counts"] = pd.DataFrame(np.asarray(cell_counts, np.int64), index=obs.index, columns=type_names)
    spots.obsm["proportions"] = pd.DataFrame(cell_counts / n_cells[:, None], index=obs.index, columns=type_names)
    if state_sums is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = state_sums / cell_counts[:, :, None]  # NaN where a type is absent from a spot
        spots.obsm["true_state"] = np.ascontiguousarray(mean.transpose(0, 2, 1), dtype=np.float32)
    spots.uns["pseudospots"] = {
        **uns,
        "cell_types": type_names,
        "n_spots": len(spot_keys),
        "n_genes": len(genes),
    }
    return spots


TYPE_TABLES = ("cell_counts", "proportions")
"""obsm tables with one column per cell type."""


def storable_obsm(obsm: Any) -> dict[str, Any]:
    """obsm with the per-type tables as plain arrays: Zarr keys cannot hold a '/' (STARmap's 'eL2/3'),
    so the type names are kept once, in uns['pseudospots']['cell_types'], and `read_spots` puts them back."""
    return {key: value.to_numpy() if key in TYPE_TABLES else value for key, value in dict(obsm).items()}


def write_zarr_v2(spots: ad.AnnData, path: Path) -> None:
    """anndata's Zarr writer in format 2, which every anndata >= 0.8 (and so scanpy, squidpy) can open."""
    stored = spots.copy()
    stored.obsm = storable_obsm(spots.obsm)
    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings(), write_all_chunks():
        warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
        stored.write_zarr(path)


def write_spots(spots: ad.AnnData, path: Path, *, overwrite: bool = True) -> None:
    """An AnnData Zarr store (scanpy and squidpy open it with `anndata.read_zarr`), written atomically."""
    write_dir_atomically(Path(path), lambda tmp: write_zarr_v2(spots, tmp), overwrite=overwrite)


def read_spots(path: Path) -> ad.AnnData:
    """The spots with their per-type tables as DataFrames named by cell type again."""
    spots = ad.read_zarr(path)
    types = [str(name) for name in spots.uns["pseudospots"]["cell_types"]]
    for key in TYPE_TABLES:
        spots.obsm[key] = pd.DataFrame(np.asarray(spots.obsm[key]), index=spots.obs_names, columns=types)
    return spots

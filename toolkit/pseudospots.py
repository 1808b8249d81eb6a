"""Pseudospots: cut single-cell-resolution spatial data into square windows and sum each window's cells.

Each spot keeps the truth that real spot data never give: cells per type, true proportions and, where
the input carries it, the per-type mean cell state. The sum is one sparse matrix product (windows x cells
indicator times cells x genes), which is what a groupby-sum does without materialising a dense table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import toolkit
from toolkit.errors import SpotsweepError
from toolkit.layout import write_dir_atomically

EdgeRule = Literal["half-open", "li2022"]


def window_indices(
    xy: np.ndarray, window: float, origin: tuple[float, float] = (0.0, 0.0), edge_rule: EdgeRule = "half-open"
) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices of each cell's window and a mask of the cells kept.

    `half-open` keeps every cell ([k*w, (k+1)*w)); `li2022` reproduces Li et al.'s benchmark, whose
    strict bounds on both sides drop a cell lying exactly on a grid line.
    """
    scaled = (xy - np.asarray(origin, dtype=float)) / window
    grid = np.floor(scaled).astype(np.int64)
    keep = np.ones(len(xy), dtype=bool)
    if edge_rule == "li2022":
        keep &= ~np.any(scaled == grid, axis=1)
    return grid, keep


def _check_cells(cells: ad.AnnData, window: float, cell_type_key: str, source: str) -> None:
    if not window > 0:
        raise SpotsweepError(f"{source}: window must be a positive size, got {window}; pass --window > 0.")
    if cell_type_key not in cells.obs:
        raise SpotsweepError(
            f"{source}: obs has no cell-type column '{cell_type_key}' (it has {', '.join(cells.obs.columns)}); "
            "name the right one with cell_type_key."
        )
    if "spatial" not in cells.obsm:
        raise SpotsweepError(f"{source}: obsm['spatial'] with the cell coordinates is missing; add it.")
    if not np.isfinite(np.asarray(cells.obsm["spatial"], dtype=float)).all():
        raise SpotsweepError(f"{source}: obsm['spatial'] has missing or infinite coordinates; drop those cells.")


def build_pseudospots(
    cells: ad.AnnData,
    window: float,
    *,
    cell_type_key: str = "cell_type",
    origin: tuple[float, float] = (0.0, 0.0),
    edge_rule: EdgeRule = "half-open",
    source: str = "cells",
) -> ad.AnnData:
    """Sum the cells of each non-empty window into one spot; spots ordered by grid x, then grid y."""
    _check_cells(cells, window, cell_type_key, source)
    xy = np.asarray(cells.obsm["spatial"], dtype=float)[:, :2]
    grid, keep = window_indices(xy, window, origin, edge_rule)
    grid, kept = grid[keep], np.flatnonzero(keep)

    windows, spot_of_cell = np.unique(grid, axis=0, return_inverse=True)  # lexicographic: x outer, y inner
    spot_of_cell = spot_of_cell.ravel()
    membership = sp.csr_matrix(
        (np.ones(len(kept), dtype=np.float32), (spot_of_cell, kept)), shape=(len(windows), cells.n_obs)
    )
    counts = sp.csr_matrix(membership @ sp.csr_matrix(cells.X, dtype=np.float32))

    names = [f"spot_{x}_{y}" for x, y in windows]
    labels = cells.obs[cell_type_key].astype("category")
    type_names = list(labels.cat.categories)
    one_hot = sp.csr_matrix(
        (np.ones(cells.n_obs, dtype=np.float32), (np.arange(cells.n_obs), labels.cat.codes.to_numpy())),
        shape=(cells.n_obs, len(type_names)),
    )
    cell_counts = np.asarray((membership @ one_hot).todense())
    n_cells = cell_counts.sum(axis=1)

    obs = pd.DataFrame(
        {
            "grid_x": windows[:, 0],
            "grid_y": windows[:, 1],
            "center_x": origin[0] + (windows[:, 0] + 0.5) * window,
            "center_y": origin[1] + (windows[:, 1] + 0.5) * window,
            "n_cells": n_cells.astype(np.int64),
        },
        index=pd.Index(names, name="spot"),
    )
    spots = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=cells.var_names.copy()))
    spots.obsm["spatial"] = obs[["center_x", "center_y"]].to_numpy()
    spots.obsm["cell_counts"] = pd.DataFrame(cell_counts.astype(np.int64), index=spots.obs_names, columns=type_names)
    spots.obsm["proportions"] = pd.DataFrame(cell_counts / n_cells[:, None], index=spots.obs_names, columns=type_names)
    if "state" in cells.obsm:
        spots.obsm["true_state"] = _mean_state_per_type(membership, one_hot, np.asarray(cells.obsm["state"]))
    spots.uns["pseudospots"] = {
        "window": float(window),
        "origin": list(map(float, origin)),
        "edge_rule": edge_rule,
        "cell_type_key": cell_type_key,
        "cell_types": type_names,
        "source": source,
        "n_cells_in": int(cells.n_obs),
        "n_cells_used": len(kept),
        "n_spots": len(windows),
        "toolkit_version": toolkit.__version__,
        "anndata_version": ad.__version__,
    }
    return spots


def _mean_state_per_type(membership: sp.csr_matrix, one_hot: sp.csr_matrix, state: np.ndarray) -> np.ndarray:
    """(spots, state dims, cell types): the mean true state of each type's cells in each spot, NaN if absent.

    The same layout as destVI's `get_gamma`, so predictions and truth line up axis for axis.
    """
    n_spots, n_types, n_dims = membership.shape[0], one_hot.shape[1], state.shape[1]
    result = np.full((n_spots, n_dims, n_types), np.nan, dtype=np.float32)
    for t in range(n_types):
        in_type = sp.diags(np.asarray(one_hot[:, t].todense()).ravel())
        per_type = membership @ in_type
        n = np.asarray(per_type.sum(axis=1)).ravel()
        sums = per_type @ state
        present = n > 0
        result[present, :, t] = sums[present] / n[present, None]
    return result


def write_spots(spots: ad.AnnData, path: Path) -> None:
    """An AnnData Zarr store (scanpy and squidpy open it with `anndata.read_zarr`), written atomically."""
    with ad.settings.override(zarr_write_format=2):
        write_dir_atomically(Path(path), lambda tmp: spots.write_zarr(tmp))


def read_spots(path: Path) -> ad.AnnData:
    return ad.read_zarr(path)

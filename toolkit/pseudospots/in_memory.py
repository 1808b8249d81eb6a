"""The in-memory pseudospot builder: every cell in one AnnData, summed at once.

The reference the out-of-core builder (`out_of_core.build_spots_store`) is tested against, and quick for
a section of thousands of cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np

from toolkit.data.checks import check_coordinates, check_counts, check_labels
from toolkit.errors import SpotsweepError
from toolkit.pseudospots.grid import (
    EDGE_RULES,
    EdgeRule,
    Grid,
    GridSubset,
    check_some_spots,
    check_window,
    select_genes,
    sum_counts,
    sum_types,
)
from toolkit.pseudospots.store import assemble_spots, provenance


def _labels(cells: ad.AnnData, cell_type_key: str, source: str) -> tuple[np.ndarray, list[str]]:
    if cell_type_key not in cells.obs:
        raise SpotsweepError(
            f"{source}: obs has no cell-type column '{cell_type_key}' (it has {', '.join(cells.obs.columns)}); "
            "name the right one with --cell-type-key."
        )
    labels = cells.obs[cell_type_key].astype("category")
    codes = labels.cat.codes.to_numpy().astype(np.int64)
    check_labels(codes, source, f"obs['{cell_type_key}']")
    return codes, [str(name) for name in labels.cat.categories]


def _coordinates(cells: ad.AnnData, source: str) -> np.ndarray:
    if "spatial" not in cells.obsm:
        raise SpotsweepError(
            f"{source}: obsm['spatial'] with the cell coordinates is missing; name them with --spatial-key, "
            "or give coordinate columns with --x-key and --y-key."
        )
    xy = np.asarray(cells.obsm["spatial"], dtype=float)[:, :2]
    check_coordinates(xy, source, "obsm['spatial']")
    return xy


def build_pseudospots(
    cells: ad.AnnData,
    window: float,
    *,
    cell_type_key: str = "cell_type",
    origin: tuple[float, float] = (0.0, 0.0),
    edge_rule: EdgeRule = "half-open",
    source: str = "cells",
    genes: Sequence[str] | None = None,
    subset: GridSubset | None = None,
    allow_non_integer: bool = False,
) -> ad.AnnData:
    """Sum the cells of each non-empty window into one spot, in memory; spots ordered by grid x, then y.

    `genes` keeps those genes in that order (e.g. the genes shared with a reference); `subset` keeps part
    of the grid without moving it. For inputs larger than memory use `out_of_core.build_spots_store`, which
    gives the same result.
    """
    check_window(window, source)
    if edge_rule not in EDGE_RULES:
        raise SpotsweepError(f"{source}: edge rule '{edge_rule}' is unknown; use {' or '.join(EDGE_RULES)}.")
    grid = Grid(float(window), (float(origin[0]), float(origin[1])), edge_rule, subset or GridSubset())
    codes, type_names = _labels(cells, cell_type_key, source)
    xy = _coordinates(cells, source)
    gene_index = select_genes(cells.var_names, genes, source)
    counts = cells.X if genes is None else cells.X[:, gene_index]
    check_counts(counts, source, "X", allow_non_integer)

    keys, keep = grid.cell_keys(xy)
    spot_keys = np.unique(keys[keep])
    check_some_spots(len(spot_keys), grid, cells.n_obs, source)
    spot = grid.spot_index(xy, spot_keys)
    state = np.asarray(cells.obsm["state"]) if "state" in cells.obsm else None
    cell_counts, state_sums = sum_types(spot, codes, len(spot_keys), len(type_names), state)
    uns = provenance(
        grid,
        engine="in-memory",
        cell_type_key=cell_type_key,
        source=source,
        n_cells_in=int(cells.n_obs),
        n_cells_used=int(keep.sum()),
        counts="raw counts summed per window" if not allow_non_integer else "values summed per window",
    )
    return assemble_spots(
        spot_keys,
        grid,
        cell_counts,
        state_sums,
        type_names,
        cells.var_names[gene_index],
        sum_counts(counts, spot, len(spot_keys)),
        uns,
    )

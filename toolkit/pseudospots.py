"""Pseudospots: cut single-cell-resolution spatial data into square windows and sum each window's cells.

Each spot keeps the truth that real spot data never give: cells per type, true proportions and, where
the input carries it, the per-type mean cell state. The sum is one sparse matrix product (windows x cells
indicator times cells x genes), which is what a groupby-sum does without materialising a dense table.

This module holds the grid, the per-chunk kernels and the checks that both builders share: the in-memory
`build_pseudospots` below and the out-of-core Dask builder in `toolkit.grid_dask`, which applies the same
kernels chunk by chunk and adds the partial sums. Sharing them is what makes the two agree exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

import toolkit
from toolkit.errors import SpotsweepError

EdgeRule = Literal["half-open", "li2022"]
EDGE_RULES: tuple[str, ...] = ("half-open", "li2022")
_OFFSET = 1 << 31  # grid indices are packed into one uint64 key: (x + 2^31) << 32 | (y + 2^31)


# --- the grid -------------------------------------------------------------------------------------


def window_indices(
    xy: np.ndarray, window: float, origin: tuple[float, float] = (0.0, 0.0), edge_rule: EdgeRule = "half-open"
) -> tuple[np.ndarray, np.ndarray]:
    """Grid indices of each cell's window and a mask of the cells kept.

    `half-open` keeps every cell ([k*w, (k+1)*w)); `li2022` reproduces Li et al.'s benchmark, whose
    strict bounds on both sides drop a cell lying exactly on a grid line.
    """
    scaled = (np.asarray(xy, dtype=float)[:, :2] - np.asarray(origin, dtype=float)) / window
    grid = np.floor(scaled).astype(np.int64)
    keep = np.ones(len(grid), dtype=bool)
    if edge_rule == "li2022":
        keep &= ~np.any(scaled == grid, axis=1)
    return grid, keep


@dataclass(frozen=True)
class GridSubset:
    """The part of the grid to keep, in the full grid's own indices.

    Whole windows are kept or dropped, never clipped, so every kept spot equals the full build's spot
    (the blog's 57-spot STARmap subset is `columns=(0, 1, 2)`). `bbox` is (xmin, ymin, xmax, ymax) and
    keeps the windows whose centre lies inside it, bounds included.
    """

    columns: tuple[int, ...] | None = None
    rows: tuple[int, ...] | None = None
    bbox: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.bbox is not None and (
            len(self.bbox) != 4 or self.bbox[0] > self.bbox[2] or self.bbox[1] > self.bbox[3]
        ):
            raise SpotsweepError(
                f"subset bbox {self.bbox} is not (xmin, ymin, xmax, ymax) with xmin <= xmax and ymin <= ymax; fix it."
            )

    @classmethod
    def parse(cls, *, columns: str | None = None, rows: str | None = None, bbox: str | None = None) -> GridSubset:
        """From command-line text: columns "0,1,2", rows "4,5", bbox "xmin,ymin,xmax,ymax"."""

        def numbers(text: str | None, kind: type, option: str) -> tuple | None:
            if text is None:
                return None
            try:
                return tuple(kind(part) for part in text.split(",") if part.strip())
            except ValueError:
                raise SpotsweepError(
                    f"--{option} '{text}' is not a comma-separated list of {kind.__name__}s; write it like 0,1,2."
                ) from None

        box = numbers(bbox, float, "bbox")
        if box is not None and len(box) != 4:
            raise SpotsweepError(f"--bbox '{bbox}' needs four numbers; write xmin,ymin,xmax,ymax.")
        return cls(numbers(columns, int, "columns"), numbers(rows, int, "rows"), box)  # type: ignore[arg-type]

    @property
    def is_everything(self) -> bool:
        return self.columns is None and self.rows is None and self.bbox is None

    def keeps(self, grid: np.ndarray, window: float, origin: tuple[float, float]) -> np.ndarray:
        """Mask of the cells (given their grid indices) whose window is in the subset."""
        keep = np.ones(len(grid), dtype=bool)
        if self.columns is not None:
            keep &= np.isin(grid[:, 0], np.asarray(self.columns, dtype=np.int64))
        if self.rows is not None:
            keep &= np.isin(grid[:, 1], np.asarray(self.rows, dtype=np.int64))
        if self.bbox is not None:
            xmin, ymin, xmax, ymax = self.bbox
            centre = np.asarray(origin, dtype=float) + (grid + 0.5) * window
            keep &= (centre[:, 0] >= xmin) & (centre[:, 0] <= xmax) & (centre[:, 1] >= ymin) & (centre[:, 1] <= ymax)
        return keep

    def describe(self) -> dict[str, list]:
        """The subset for provenance (`uns`): only the parts that were set."""
        parts = {"columns": self.columns, "rows": self.rows, "bbox": self.bbox}
        return {name: list(value) for name, value in parts.items() if value is not None}


@dataclass(frozen=True)
class Grid:
    """Window size, origin, edge rule and subset: everything that decides which spot a cell joins."""

    window: float
    origin: tuple[float, float] = (0.0, 0.0)
    edge_rule: EdgeRule = "half-open"
    subset: GridSubset = GridSubset()

    def cell_keys(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint64 window key of every cell, mask of the cells kept); keys sort as grid x, then grid y."""
        grid, keep = window_indices(xy, self.window, self.origin, self.edge_rule)
        if not self.subset.is_everything:
            keep &= self.subset.keeps(grid, self.window, self.origin)
        if len(grid) and (np.abs(grid[keep]).max(initial=0) >= _OFFSET):
            raise SpotsweepError(
                f"coordinates lie more than 2^31 windows of {self.window} from the origin {self.origin}; "
                "use a larger window or check the coordinate unit."
            )
        shifted = (grid + _OFFSET).astype(np.uint64)
        return (shifted[:, 0] << np.uint64(32)) | shifted[:, 1], keep

    def spot_index(self, xy: np.ndarray, spot_keys: np.ndarray) -> np.ndarray:
        """Row of each cell's spot in the sorted `spot_keys`, -1 for a cell the grid drops."""
        keys, keep = self.cell_keys(xy)
        spot = np.full(len(keys), -1, dtype=np.int64)
        spot[keep] = np.searchsorted(spot_keys, keys[keep])
        return spot

    def describe(self) -> dict[str, Any]:
        return {"window": float(self.window), "origin": [float(v) for v in self.origin], "edge_rule": self.edge_rule}


def decode_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid x and y of packed window keys."""
    keys = np.asarray(keys, dtype=np.uint64)
    grid_x = (keys >> np.uint64(32)).astype(np.int64) - _OFFSET
    grid_y = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64) - _OFFSET
    return grid_x, grid_y


# --- the sums -------------------------------------------------------------------------------------


def sum_counts(counts: np.ndarray | sp.spmatrix, group: np.ndarray, n_groups: int) -> np.ndarray:
    """(groups x genes) float32 sums of the cells' counts; cells with group -1 are left out.

    One sparse indicator (groups x cells) times the counts, so no dense cells x genes copy is made.
    """
    cells = np.flatnonzero(group >= 0)
    membership = sp.csr_matrix(
        (np.ones(len(cells), dtype=np.float32), (group[cells], cells)), shape=(n_groups, counts.shape[0])
    )
    values = sp.csr_matrix(counts, dtype=np.float32) if sp.issparse(counts) else np.asarray(counts, np.float32)
    summed = membership @ values
    return np.asarray(summed.toarray() if sp.issparse(summed) else summed, dtype=np.float32)


def sum_types(
    group: np.ndarray, codes: np.ndarray, n_groups: int, n_types: int, state: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Cells of each type per group (groups x types) and, given states, their sums (groups x types x dims)."""
    cells = np.flatnonzero(group >= 0)
    flat = group[cells] * n_types + codes[cells]
    counts = np.bincount(flat, minlength=n_groups * n_types).reshape(n_groups, n_types).astype(np.int64)
    if state is None:
        return counts, None
    values = np.asarray(state, dtype=np.float64)[cells]
    sums = [np.bincount(flat, weights=values[:, d], minlength=n_groups * n_types) for d in range(values.shape[1])]
    return counts, np.stack(sums, axis=-1).reshape(n_groups, n_types, values.shape[1])


@dataclass(frozen=True)
class RowSums:
    """Sums for some spots only: `rows` (sorted spot rows) and arrays whose first axis follows `rows`.

    A chunk of cells touches only some spots (few, when the input is spatially ordered), so its partial
    sums carry only those rows.
    """

    rows: np.ndarray
    arrays: tuple[np.ndarray, ...]


def local_rows(spot: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted spot rows in [lo, hi) that a chunk's cells fall in, each cell's position among them or -1)."""
    inside = (spot >= lo) & (spot < hi)
    rows, position = np.unique(spot[inside], return_inverse=True)
    group = np.full(len(spot), -1, dtype=np.int64)
    group[inside] = position.ravel()
    return rows, group


def add_into(block: Sequence[np.ndarray], lo: int, part: RowSums) -> None:
    """Add a partial's rows that fall in the dense `block` (rows lo, lo+1, ...) into it, in place."""
    first, stop = np.searchsorted(part.rows, [lo, lo + len(block[0])])
    if stop > first:
        position = part.rows[first:stop] - lo
        for total, array in zip(block, part.arrays, strict=True):
            total[position] += array[first:stop]


# --- checks: one sentence naming the file, the field and the fix ----------------------------------


def check_window(window: float, source: str) -> None:
    if not (isinstance(window, int | float) and np.isfinite(window) and window > 0):
        raise SpotsweepError(f"{source}: window must be a positive size, got {window}; pass --window > 0.")


def check_coordinates(xy: np.ndarray, source: str, field: str) -> None:
    bad = ~np.isfinite(np.asarray(xy, dtype=float)).all(axis=1)
    if bad.any():
        raise SpotsweepError(
            f"{source}: {field} has missing (NaN) or infinite coordinates for {int(bad.sum())} cells; "
            "drop those cells or fill in their coordinates."
        )


def check_counts(counts: np.ndarray | sp.spmatrix, source: str, field: str, allow_non_integer: bool) -> None:
    """Raw counts: finite, non-negative and whole, unless the user says the data are not counts.

    Negative values are refused even then: every deconvolution model expects non-negative expression.
    """
    values = counts.data if sp.issparse(counts) else np.asarray(counts)
    if values.dtype.kind in "ub" or values.size == 0:
        return
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise SpotsweepError(f"{source}: {field} has missing (NaN) or infinite values; fill or drop those cells.")
    if (values < 0).any():
        raise SpotsweepError(
            f"{source}: {field} has negative values (min {values.min():g}); give the raw counts "
            "(such as --layer counts) since pseudospots sum raw counts."
        )
    if values.dtype.kind == "f" and not allow_non_integer:
        fractional = values != np.rint(values)
        if fractional.any():
            raise SpotsweepError(
                f"{source}: {field} has non-integer values (such as {values[fractional][0]:g}); give the raw counts "
                "(such as --layer counts), or pass --allow-non-integer (allow_non_integer=True) if they are not counts."
            )


def check_labels(codes: np.ndarray, source: str, field: str) -> None:
    missing = int((np.asarray(codes) < 0).sum())
    if missing:
        raise SpotsweepError(
            f"{source}: {field} has no cell type for {missing} cells; label them or drop them before building."
        )


def select_genes(var_names: pd.Index, genes: Sequence[str] | None, source: str) -> np.ndarray:
    """Column positions of the requested genes, in the requested order (all genes when None)."""
    if genes is None:
        return np.arange(len(var_names))
    genes = list(genes)
    if not genes:
        raise SpotsweepError(f"{source}: the gene list is empty; give at least one gene or no list at all.")
    position = pd.Index(var_names).get_indexer(genes)
    if (position < 0).any():
        missing = [gene for gene, pos in zip(genes, position, strict=True) if pos < 0]
        raise SpotsweepError(
            f"{source}: {len(missing)} requested genes are not in var_names ({', '.join(missing[:3])}, ...); "
            "list only genes the cells have, such as the genes shared with the reference."
        )
    return position


def check_some_spots(n_spots: int, grid: Grid, n_cells: int, source: str) -> None:
    if n_spots:
        return
    if not grid.subset.is_everything:
        raise SpotsweepError(
            f"{source}: the subset {grid.subset.describe()} contains no cells; choose grid columns, rows "
            "or a box that the cells cover."
        )
    raise SpotsweepError(
        f"{source}: none of the {n_cells} cells falls inside a window (edge rule {grid.edge_rule}); "
        "check the coordinates, the origin and the window."
    )


# --- the spots AnnData ----------------------------------------------------------------------------


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


def package_version(name: str) -> str:
    """An installed distribution's version, for provenance ('unknown' if it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


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
    of the grid without moving it. For inputs larger than memory use `toolkit.grid_dask.build_spots_store`,
    which gives the same result.
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


# --- storage --------------------------------------------------------------------------------------


def replace_dir(path: Path, write: Callable[[Path], None], *, overwrite: bool = False) -> None:
    """Build a folder aside with `write(tmp)` and move it to `path` only once complete.

    A failed build leaves no store behind; with `overwrite` an existing store is replaced only after the
    new one is finished, so a failure keeps the old one.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SpotsweepError(f"{path}: already exists; choose another output path or pass --overwrite.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        write(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)


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
    with ad.settings.override(zarr_write_format=2), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Writing zarr v2 data", category=UserWarning)
        stored.write_zarr(path)


def write_spots(spots: ad.AnnData, path: Path, *, overwrite: bool = True) -> None:
    """An AnnData Zarr store (scanpy and squidpy open it with `anndata.read_zarr`), written atomically."""
    replace_dir(Path(path), lambda tmp: write_zarr_v2(spots, tmp), overwrite=overwrite)


def read_spots(path: Path) -> ad.AnnData:
    """The spots with their per-type tables as DataFrames named by cell type again."""
    spots = ad.read_zarr(path)
    types = [str(name) for name in spots.uns["pseudospots"]["cell_types"]]
    for key in TYPE_TABLES:
        spots.obsm[key] = pd.DataFrame(np.asarray(spots.obsm[key]), index=spots.obs_names, columns=types)
    return spots

"""The pseudospot grid: which square window each cell falls in, and the sums that make a window a spot.

Each spot keeps the truth that real spot data never give: cells per type, true proportions and, where
the input carries it, the per-type mean cell state. The sum is one sparse matrix product (windows x cells
indicator times cells x genes), which is what a groupby-sum does without materialising a dense table.

Both builders use these kernels: the in-memory one (`in_memory.build_pseudospots`) and the out-of-core
one (`out_of_core.build_spots_store`), which applies them chunk by chunk and adds the partial sums.
Sharing them is what makes the two agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

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
    with np.errstate(over="ignore", invalid="ignore"):
        scaled = (np.asarray(xy, dtype=float)[:, :2] - np.asarray(origin, dtype=float)) / window
    if len(scaled) and not (np.abs(scaled) < _OFFSET).all():  # int64 would wrap round into nonsense keys
        raise SpotsweepError(
            f"coordinates lie more than 2^31 windows of {window:g} from the origin {tuple(origin)}; "
            "use a larger window or check the coordinate unit."
        )
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


# --- checks of the grid: one sentence naming the source, the field and the fix -----------------


def check_window(window: float, source: str) -> None:
    if not (isinstance(window, int | float) and np.isfinite(window) and window > 0):
        raise SpotsweepError(f"{source}: window must be a positive size, got {window}; pass --window > 0.")


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

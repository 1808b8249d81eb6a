"""Pseudospots: single-cell-resolution spatial data cut into square windows, each window's cells summed.

- `grid`: which window each cell falls in, and the per-chunk sums (shared by both builders);
- `in_memory`: `build_pseudospots`, every cell at once (the reference the other is tested against);
- `out_of_core`: `build_spots_store`, Dask over chunks of cells straight into Zarr, any size;
- `scheduler`: where Dask computes, as given by the caller (threads here, or a distributed Client);
- `store`: the spots AnnData and its Zarr store (`write_spots`, `read_spots`).

The out-of-core builder is imported from its module (it pulls in distributed's machinery).
"""

from toolkit.pseudospots.grid import EDGE_RULES, EdgeRule, Grid, GridSubset, window_indices
from toolkit.pseudospots.in_memory import build_pseudospots
from toolkit.pseudospots.store import read_spots, write_spots

__all__ = [
    "EDGE_RULES",
    "EdgeRule",
    "Grid",
    "GridSubset",
    "build_pseudospots",
    "read_spots",
    "window_indices",
    "write_spots",
]

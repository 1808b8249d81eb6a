"""SpatialData stores in: the scverse format that spatialdata-io's MERSCOPE, Xenium and CosMx readers write.

A store holds tables (AnnData) that annotate regions (shapes, labels, points). spotsweep reads the table
the user names (default `table`) into its canonical cells: counts in X (or a layer), the cell type from
a named obs column, coordinates from obsm['spatial'] or, where the table has none, the centroids of the
region's shapes, matched through the region and instance keys the table's uns['spatialdata_attrs']
names. Needs the optional `spatialdata` package (`pip install spotsweep[spatialdata]`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np

from toolkit.data.checks import check_coordinates
from toolkit.errors import SpotsweepError

DEFAULT_TABLE = "table"
SPATIAL = "spatial"


def is_spatialdata(path: Path) -> bool:
    """A SpatialData Zarr store: a folder whose root attributes carry spatialdata's format."""
    path = Path(path)
    for name in ("zarr.json", ".zattrs"):
        try:
            attrs = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        attrs = attrs.get("attributes", attrs)
        if "spatialdata_attrs" in attrs:
            return True
    return False


def require_spatialdata() -> Any:
    """The spatialdata module, or one sentence on how to get it."""
    try:
        import spatialdata
    except ImportError:
        raise SpotsweepError(
            "reading or writing SpatialData needs the optional spatialdata package; install it with "
            "`pip install 'spotsweep[spatialdata]'`."
        ) from None
    return spatialdata


def read_spatialdata(path: Path, *, table: str = DEFAULT_TABLE, layer: str | None = None) -> ad.AnnData:
    """The named table of a SpatialData store with counts in X and coordinates in obsm['spatial']."""
    spatialdata = require_spatialdata()
    path = Path(path)
    try:
        sdata = spatialdata.read_zarr(path, selection=("tables", "shapes"))
    except Exception as exc:
        raise SpotsweepError(f"{path}: spatialdata cannot read this store ({exc}); check that it is one.") from None
    if table not in sdata.tables:
        found = ", ".join(sdata.tables) or "none"
        raise SpotsweepError(
            f"{path}: the SpatialData store has no table '{table}' (it has {found}); name the table of cells "
            "with --table (`table:` in a sweep's spatial input)."
        )
    cells = sdata.tables[table].copy()
    if layer is not None:
        if layer not in cells.layers:
            raise SpotsweepError(
                f"{path}: table '{table}' has no layer '{layer}' (layers: {', '.join(cells.layers) or 'none'}); "
                "name the layer holding the raw counts or leave --layer out to use X."
            )
        cells.X = cells.layers[layer]
    if SPATIAL not in cells.obsm:
        cells.obsm[SPATIAL] = _shape_centroids(sdata, cells, path, table)
    xy = np.asarray(cells.obsm[SPATIAL], dtype=float)[:, :2]
    check_coordinates(xy, str(path), f"tables/{table} obsm['spatial']")
    cells.obsm[SPATIAL] = xy
    return cells


def _shape_centroids(sdata: Any, cells: ad.AnnData, path: Path, table: str) -> np.ndarray:
    """Each cell's centroid from the shapes its table annotates (polygons, or circles as points)."""
    attrs = dict(cells.uns.get("spatialdata_attrs", {}))
    fix = "give the cells' coordinates in the table's obsm['spatial'] or annotate a shapes element"
    regions, region_key, instance_key = attrs.get("region"), attrs.get("region_key"), attrs.get("instance_key")
    if regions is None or instance_key is None:
        raise SpotsweepError(
            f"{path}: table '{table}' has no obsm['spatial'] and no region/instance keys in "
            f"uns['spatialdata_attrs'] to find its cells' shapes; {fix}."
        )
    regions = [regions] if isinstance(regions, str) else list(regions)
    xy = np.full((cells.n_obs, 2), np.nan)
    for region in regions:
        if region not in sdata.shapes:
            raise SpotsweepError(
                f"{path}: table '{table}' annotates '{region}', which is not a shapes element of the store "
                f"(shapes: {', '.join(sdata.shapes) or 'none'}); {fix}."
            )
        shapes = sdata.shapes[region]
        centroids = shapes.geometry.centroid
        where = dict(zip(shapes.index, np.column_stack([centroids.x, centroids.y]), strict=True))
        rows = (
            np.flatnonzero(cells.obs[region_key].astype(str).to_numpy() == region)
            if region_key
            else np.arange(cells.n_obs)
        )
        for row in rows:
            xy[row] = where.get(cells.obs[instance_key].iloc[row], (np.nan, np.nan))
    missing = int(np.isnan(xy).any(axis=1).sum())
    if missing:
        raise SpotsweepError(f"{path}: {missing} cells of table '{table}' match no shape by '{instance_key}'; {fix}.")
    return xy

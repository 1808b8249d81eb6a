"""SpatialData in and out: a store written with the spatialdata API itself feeds `build` and a sweep, and a
finished task comes back out as a store that `spatialdata.read_zarr` opens (windows + a table of proportions).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_SWEEP
from toolkit.cli import app
from toolkit.config import parse_sweep
from toolkit.data.readers import read_cells
from toolkit.data.synthetic import simulate
from toolkit.errors import SpotsweepError
from toolkit.launch import run_sweep
from toolkit.layout import OutputLayout, read_json
from toolkit.pseudospots import build_pseudospots, read_spots
from toolkit.sweep import expand

if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
    import spatialdata  # CI installs the dev extra: a missing package fails here rather than skipping
else:
    spatialdata = pytest.importorskip("spatialdata")  # `pip install 'spotsweep[spatialdata]'` runs these


def _tissue() -> tuple[ad.AnnData, ad.AnnData]:
    return simulate("starmap-like", 1, n_spatial_cells=500, n_reference_cells=600, n_genes=60)


def write_store(path: Path, cells: ad.AnnData, *, with_obsm: bool, table: str = "table") -> Path:
    """The tissue as spatialdata-io lays out a MERSCOPE/Xenium section: cell circles plus a table."""
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata.models import ShapesModel, TableModel

    ids = np.arange(cells.n_obs)
    xy = np.asarray(cells.obsm["spatial"], dtype=float)
    circles = gpd.GeoDataFrame(
        {"radius": np.full(cells.n_obs, 5.0)}, geometry=[Point(x, y) for x, y in xy], index=pd.Index(ids)
    )
    adata = ad.AnnData(X=cells.X, obs=pd.DataFrame({"celltype": cells.obs["cell_type"].to_numpy()}), var=cells.var)
    adata.obs.index = adata.obs.index.astype(str)
    adata.obs["region"] = pd.Categorical(["cell_circles"] * cells.n_obs)
    adata.obs["cell_id"] = ids
    if with_obsm:
        adata.obsm["spatial"] = xy
    sdata = spatialdata.SpatialData(
        shapes={"cell_circles": ShapesModel.parse(circles)},
        tables={table: TableModel.parse(adata, region="cell_circles", region_key="region", instance_key="cell_id")},
    )
    sdata.write(path)
    return path


@pytest.mark.parametrize("with_obsm", [True, False], ids=["obsm-spatial", "shape-centroids"])
def test_a_spatialdata_store_reads_as_cells(tmp_path: Path, with_obsm: bool) -> None:
    _, cells = _tissue()
    store = write_store(tmp_path / "section.zarr", cells, with_obsm=with_obsm)
    read = read_cells(store, cell_type_key="celltype")
    np.testing.assert_allclose(read.obsm["spatial"], np.asarray(cells.obsm["spatial"]), rtol=1e-9)
    assert list(read.obs["cell_type"]) == list(cells.obs["cell_type"].astype(str))
    out = tmp_path / "spots.zarr"
    result = CliRunner().invoke(
        app, ["build", str(store), "--window", "750", "--cell-type-key", "celltype", "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    expected = build_pseudospots(cells, 750.0)
    np.testing.assert_array_equal(np.asarray(read_spots(out).X), np.asarray(expected.X))


def test_a_sweep_reads_a_spatialdata_store_and_exports_a_task_as_one(tmp_path: Path) -> None:
    reference, cells = _tissue()
    store = write_store(tmp_path / "section.zarr", cells, with_obsm=False, table="cells")
    reference.write_h5ad(tmp_path / "reference.h5ad")
    data = copy.deepcopy(TINY_SWEEP)
    data["output"] = str(tmp_path / "out")
    data["datasets"] = [
        {
            "name": "sd",
            "spatial": {"path": str(store), "table": "cells", "cell_type_key": "celltype"},
            "reference": str(tmp_path / "reference.h5ad"),
            "window": 750,
        }
    ]
    data["methods"] = [{"name": "control", "kind": ["nnls"]}]
    summary = run_sweep(parse_sweep(data, "sd"), report=False)
    assert summary.states["done"] == 1
    (task,) = expand(parse_sweep(data, "sd"))
    exported = tmp_path / "task.zarr"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "out"), task.id[:30], "--to", str(exported)])
    assert result.exit_code == 0, result.output
    back = spatialdata.read_zarr(exported)
    table = back.tables["proportions"]
    spots = read_spots(OutputLayout(tmp_path / "out").spots("sd"))
    assert len(back.shapes["windows"]) == spots.n_obs == table.n_obs
    saved = read_json(OutputLayout(tmp_path / "out").result(task.id))["proportions"]
    np.testing.assert_allclose(np.asarray(table.X), np.asarray(saved["values"]), rtol=1e-6)
    truth = spots.obsm["proportions"][list(table.var_names)].to_numpy()
    np.testing.assert_allclose(table.obsm["true_proportions"], truth, rtol=1e-6)
    area = back.shapes["windows"].geometry.area.to_numpy()
    np.testing.assert_allclose(area, 750.0**2)  # square windows in the data's units


def test_bad_spatialdata_input_is_one_sentence(tmp_path: Path) -> None:
    _, cells = _tissue()
    store = write_store(tmp_path / "section.zarr", cells, with_obsm=True)
    no_table = r"section.zarr: the SpatialData store has no table 'cells' \(it has table\); name the table"
    with pytest.raises(SpotsweepError, match=no_table):
        read_cells(store, table="cells", cell_type_key="celltype")
    bare = tmp_path / "bare.zarr"
    table = spatialdata.read_zarr(store).tables["table"]
    lone = ad.AnnData(X=table.X, obs=table.obs[["celltype"]].copy(), var=table.var)
    spatialdata.SpatialData(tables={"table": spatialdata.models.TableModel.parse(lone)}).write(bare)
    with pytest.raises(SpotsweepError, match=r"bare.zarr: table 'table' has no obsm\['spatial'\] and no region"):
        read_cells(bare, cell_type_key="celltype")

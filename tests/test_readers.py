"""Readers: every supported layout gives the same canonical AnnData, eagerly and lazily."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from toolkit.data.readers import (
    detect_format,
    lazy_from_anndata,
    load_gene_list,
    load_label_map,
    open_cells,
    read_cells,
)
from toolkit.errors import SpotsweepError

STARMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "starmap"
LI_TO_SLICE2 = {
    "ExcitatoryL2and3": "eL2/3",
    "ExcitatoryL4": "eL4",
    "ExcitatoryL5": "eL5",
    "ExcitatoryL6": "eL6",
    "Olig": "Oligo",
    "Pvalb": "PVALB",
    "Sst": "SST",
    "Vip": "VIP",
}


@pytest.fixture(scope="module")
def slice1() -> ad.AnnData:
    return read_cells(STARMAP / "slice1_counts.csv.gz", cells_table=STARMAP / "slice1_cells.csv")


def toy_cells(n: int = 60, seed: int = 0) -> ad.AnnData:
    """Raw counts in a layer, normalised values in X, coordinates in obs columns, labels in 'celltype'."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(1.0, (n, 8)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "celltype": pd.Categorical(rng.choice(["T", "B", "NK"], n)),
            "px": rng.random(n) * 100,
            "py": rng.random(n) * 100,
        },
        index=[f"cell{i}" for i in range(n)],
    )
    cells = ad.AnnData(X=counts / 3.0, obs=obs, var=pd.DataFrame(index=[f"G{g}" for g in range(8)]))
    cells.layers["counts"] = sp.csr_matrix(counts)
    return cells


def test_counts_csv_and_cell_table(slice1: ad.AnnData) -> None:
    assert slice1.shape == (1523, 1020)
    assert slice1.obs_names[0] == "s1_0000" and slice1.var_names[0] == "1110008F13Rik"
    assert isinstance(slice1.X, sp.csr_matrix) and np.array_equal(slice1.X.data, np.rint(slice1.X.data))
    assert slice1.obs["cell_type"].dtype == "category" and len(slice1.obs["cell_type"].cat.categories) == 15
    assert slice1.obsm["spatial"].shape == (1523, 2)
    assert slice1.obsm["spatial"][0].tolist() == pytest.approx([24.08588420500263, 8867.800069966766])
    assert "alt_cell_type" in slice1.obs  # other columns are kept


def test_other_label_column_and_label_maps(tmp_path: Path) -> None:
    alt = read_cells(
        STARMAP / "slice1_counts.csv.gz", cells_table=STARMAP / "slice1_cells.csv", cell_type_key="alt_cell_type"
    )
    assert "eL2/3" in set(alt.obs["cell_type"]) and len(alt.obs["cell_type"].cat.categories) == 14
    table = tmp_path / "labels.csv"
    pd.DataFrame({"old": list(LI_TO_SLICE2), "new": list(LI_TO_SLICE2.values())}).to_csv(table, index=False)
    assert load_label_map(table) == {"old": "new", **LI_TO_SLICE2}  # a header row is one harmless extra entry
    for labels in (LI_TO_SLICE2, table):
        mapped = read_cells(STARMAP / "slice1_counts.csv.gz", cells_table=STARMAP / "slice1_cells.csv", labels=labels)
        names = set(mapped.obs["cell_type"].cat.categories)
        assert {"eL2/3", "Oligo", "PVALB", "Astro", "HPC"} <= names and "ExcitatoryL4" not in names
    merged = read_cells(
        STARMAP / "slice1_counts.csv.gz",
        cells_table=STARMAP / "slice1_cells.csv",
        labels={"ExcitatoryL4": "Excitatory", "ExcitatoryL5": "Excitatory"},
    )
    counts = merged.obs["cell_type"].value_counts()
    original = pd.read_csv(STARMAP / "slice1_cells.csv")["cell_type"].value_counts()
    assert counts["Excitatory"] == original["ExcitatoryL4"] + original["ExcitatoryL5"]
    with pytest.raises(SpotsweepError, match="first column holds these names"):
        read_cells(STARMAP / "slice1_counts.csv.gz", cells_table=STARMAP / "slice1_cells.csv", labels={"x": "y"})


def write_merscope(folder: Path, with_blanks: bool = True) -> None:
    folder.mkdir()
    ids = [101, 102, 103, 104]
    counts = pd.DataFrame({"Gad1": [1, 0, 2, 5], "Slc17a7": [0, 4, 1, 0]}, index=pd.Index(ids, name="cell"))
    if with_blanks:
        counts["Blank-1"] = [1, 0, 0, 1]
        counts["Blank-2"] = [0, 0, 3, 0]
    counts.to_csv(folder / "cell_by_gene.csv")
    metadata = pd.DataFrame(
        {"fov": [0, 0, 1, 1], "volume": [900.0] * 4, "center_x": [10.5, 20.0, 55.0, 61.0], "center_y": [5.0] * 4},
        index=pd.Index(ids[::-1], name="EntityID"),  # another order than the counts
    )
    metadata.to_csv(folder / "cell_metadata.csv")


def test_merscope_folder(tmp_path: Path) -> None:
    folder = tmp_path / "region_0"
    write_merscope(folder)
    annotations = tmp_path / "types.csv"
    pd.DataFrame({"cell": [101, 102, 103, 104], "subclass": ["Inh", "Exc", "Inh", "Astro"]}).to_csv(
        annotations, index=False
    )
    assert detect_format(folder) == "merscope"
    cells = read_cells(folder, annotations=annotations, cell_type_key="subclass")
    assert list(cells.var_names) == ["Gad1", "Slc17a7"]  # Blank-* controls dropped
    assert list(cells.obs_names) == ["101", "102", "103", "104"]
    np.testing.assert_array_equal(cells.obsm["spatial"][:, 0], [61.0, 55.0, 20.0, 10.5])  # matched by id
    assert list(cells.obs["cell_type"]) == ["Inh", "Exc", "Inh", "Astro"]
    assert cells.X.toarray()[3].tolist() == [5, 0]
    with pytest.raises(SpotsweepError, match="--annotations"):
        read_cells(folder)
    lazy = open_cells(folder, annotations=annotations, cell_type_key="subclass", chunk_cells=3)
    assert lazy.chunks == (3, 1) and lazy.cell_types == ["Astro", "Exc", "Inh"]


def test_anndata_layer_and_coordinate_columns(tmp_path: Path) -> None:
    toy = toy_cells()
    toy.write_h5ad(tmp_path / "toy.h5ad")
    toy.write_zarr(tmp_path / "toy.zarr")
    for name in ("toy.h5ad", "toy.zarr"):
        cells = read_cells(tmp_path / name, layer="counts", cell_type_key="celltype", x_key="px", y_key="py")
        np.testing.assert_array_equal(cells.X.toarray(), toy.layers["counts"].toarray())
        np.testing.assert_array_equal(cells.obsm["spatial"], toy.obs[["px", "py"]].to_numpy())
        assert list(cells.obs["cell_type"]) == list(toy.obs["celltype"])
    with pytest.raises(SpotsweepError, match="no layer 'raw'"):
        read_cells(tmp_path / "toy.h5ad", layer="raw", cell_type_key="celltype", x_key="px", y_key="py")
    with pytest.raises(SpotsweepError, match=r"obsm has no 'xy'.*--x-key"):
        read_cells(tmp_path / "toy.h5ad", cell_type_key="celltype", spatial_key="xy")
    reference = read_cells(tmp_path / "toy.h5ad", layer="counts", cell_type_key="celltype")  # a reference: no xy
    assert "spatial" not in reference.obsm and reference.obs["cell_type"].dtype == "category"


@pytest.mark.parametrize("name", ["toy.h5ad", "toy.zarr"])
def test_lazy_opening_equals_eager_reading(tmp_path: Path, name: str) -> None:
    toy = toy_cells()
    toy.obs["celltype"] = toy.obs["celltype"].astype(str)  # written as strings: factorised on opening
    toy.obsm["xy"] = toy.obs[["px", "py"]].to_numpy()
    path = tmp_path / name
    toy.write_h5ad(path) if name.endswith(".h5ad") else toy.write_zarr(path)
    options = {"layer": "counts", "cell_type_key": "celltype", "spatial_key": "xy", "labels": {"NK": "T"}}
    eager = read_cells(path, **options)
    lazy = open_cells(path, chunk_cells=16, **options)
    assert lazy.chunks == (16, 16, 16, 12) and lazy.counts_field == "layers['counts']"
    np.testing.assert_array_equal(lazy.counts.compute().toarray(), eager.X.toarray())
    np.testing.assert_array_equal(lazy.xy.compute(), eager.obsm["spatial"])
    assert lazy.cell_types == list(eager.obs["cell_type"].cat.categories) == ["B", "T"]
    np.testing.assert_array_equal(lazy.codes.compute(), eager.obs["cell_type"].cat.codes.to_numpy())
    in_memory = lazy_from_anndata(eager, chunk_cells=16)
    np.testing.assert_array_equal(in_memory.counts.compute().toarray(), eager.X.toarray())


def test_counts_stored_by_gene_are_refused(tmp_path: Path) -> None:
    toy = toy_cells()
    toy.X = sp.csc_matrix(toy.layers["counts"])
    toy.obsm["spatial"] = toy.obs[["px", "py"]].to_numpy()
    toy.write_zarr(tmp_path / "toy.zarr")
    with pytest.raises(SpotsweepError, match="CSC"):
        open_cells(tmp_path / "toy.zarr", cell_type_key="celltype")


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(SpotsweepError, match="no such file"):
        detect_format(tmp_path / "missing.h5ad")
    (tmp_path / "counts.csv").write_text("cell,G1\nc1,1\n")
    with pytest.raises(SpotsweepError, match="--cells-table"):
        read_cells(tmp_path / "counts.csv")
    (tmp_path / "cells.csv").write_text("cell,x,y,cell_type\nc2,1,2,A\n")
    with pytest.raises(SpotsweepError, match=r"cells\.csv: 1 cells of the counts are not in this table"):
        read_cells(tmp_path / "counts.csv", cells_table=tmp_path / "cells.csv")
    (tmp_path / "cells.csv").write_text("cell,x,y,cell_type\nc1,,2,A\n")
    with pytest.raises(SpotsweepError, match=r"cells\.csv: columns x/y has missing \(NaN\)"):
        read_cells(tmp_path / "counts.csv", cells_table=tmp_path / "cells.csv")
    (tmp_path / "counts.csv").write_text("cell,G1\nc1,-1\n")
    (tmp_path / "cells.csv").write_text("cell,x,y,cell_type\nc1,1,2,A\n")
    with pytest.raises(SpotsweepError, match=r"counts\.csv: counts has negative values"):
        read_cells(tmp_path / "counts.csv", cells_table=tmp_path / "cells.csv")
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(SpotsweepError, match="unknown layout"):
        read_cells(tmp_path / "notes.md")


def test_gene_lists(tmp_path: Path, slice1: ad.AnnData) -> None:
    (tmp_path / "genes.txt").write_text("Aamp\n\nAbat\n")
    assert load_gene_list(tmp_path / "genes.txt", slice1.var_names) == ["Aamp", "Abat"]
    reference = ad.AnnData(
        X=np.zeros((2, 3), np.float32),
        var=pd.DataFrame(index=["Abat", "Nope", "Aamp"]),
        obs=pd.DataFrame(index=["a", "b"]),
    )
    reference.write_h5ad(tmp_path / "reference.h5ad")
    assert load_gene_list(tmp_path / "reference.h5ad", slice1.var_names) == ["Aamp", "Abat"]  # the cells' order

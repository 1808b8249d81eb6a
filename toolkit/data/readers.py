"""Readers: single-cell-resolution spatial data from common layouts into one canonical AnnData.

Canonical means raw counts in X (cells x genes), the cell type in obs['cell_type'] (categorical) and the
coordinates in obsm['spatial'] (cells x 2), whatever the input called them, so the pseudospot builders
and the sweep read one shape only. `read_cells` loads it into memory; `open_cells` gives the same content
as dask arrays (`LazyCells`) so that an AnnData Zarr or h5ad store larger than memory is read chunk by
chunk of cells. Layouts:

- AnnData `.h5ad` or `.zarr`: counts in X or a named layer, coordinates in an obsm key or two obs columns;
- a SpatialData Zarr store (what spatialdata-io's MERSCOPE, Xenium and CosMx readers write): the table
  named by `table`, coordinates from its obsm['spatial'] or its shapes' centroids (toolkit.data.spatialdata);
- a Vizgen MERSCOPE output folder: `cell_by_gene.csv` + `cell_metadata.csv` (center_x/center_y in um),
  `Blank-*` control columns dropped; cell types come from an annotation table;
- a counts CSV (first column the cell id, one column per gene) plus a cell table CSV (cell id, x, y,
  cell type), as Li et al.'s STARmap benchmark files are laid out.

Any of them can take an annotation table (cell id -> extra obs columns) and a label map (old -> new).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import dask.array as da
import numpy as np
import pandas as pd
import scipy.sparse as sp

from toolkit.data.checks import check_coordinates, check_counts, check_unique_genes
from toolkit.data.spatialdata import DEFAULT_TABLE, is_spatialdata, read_spatialdata
from toolkit.errors import SpotsweepError

CELL_TYPE = "cell_type"
SPATIAL = "spatial"
Format = Literal["h5ad", "zarr", "spatialdata", "merscope", "counts-csv"]
_CSV_ROWS = 20_000  # cells parsed at a time: bounds the dense text-to-numbers step
_CHUNK_ELEMENTS = 1 << 23  # cells x genes per dask chunk (32 MiB of float32)

LabelMap = Mapping[str, str] | Path | str | None


@dataclass(frozen=True)
class ReadOptions:
    """How to read a layout into the canonical AnnData: the keywords of `read_cells` and `open_cells`, of
    `spotsweep build`'s options and of a sweep's input block, named once here."""

    cell_type_key: str = CELL_TYPE
    layer: str | None = None
    """AnnData layer with the raw counts (default X)."""
    spatial_key: str = SPATIAL
    x_key: str | None = None
    y_key: str | None = None
    cells_table: Path | None = None
    """For a counts CSV: the table of cell id, x, y, cell type."""
    annotations: Path | None = None
    """A CSV of extra obs columns by cell id."""
    labels: LabelMap = None
    """Rename cell types (old -> new): a mapping or a two-column CSV."""
    allow_non_integer: bool = False
    table: str = DEFAULT_TABLE
    """For a SpatialData store: the table of cells."""

    @classmethod
    def of(cls, options: ReadOptions | None = None, **keywords: Any) -> ReadOptions:
        """`options` (the defaults without) with `keywords` over them; an unknown keyword is a TypeError."""
        return replace(options or cls(), **keywords)


# --- labels ---------------------------------------------------------------------------------------


def load_label_map(labels: LabelMap) -> dict[str, str]:
    """A label map from a dict or a two-column CSV (old name, new name; a header row is harmless)."""
    if labels is None:
        return {}
    if isinstance(labels, Mapping):
        return {str(old): str(new) for old, new in labels.items()}
    path = Path(labels)
    try:
        table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SpotsweepError(f"{path}: cannot read the label map ({exc}); give a CSV with columns old,new.") from None
    if table.shape[1] != 2:
        raise SpotsweepError(f"{path}: the label map has {table.shape[1]} columns; give exactly two, old and new.")
    return dict(zip(table[0], table[1], strict=True))


def map_labels(categories: Sequence[str], mapping: Mapping[str, str], source: str) -> tuple[list[str], np.ndarray]:
    """(new categories in order of first appearance, old code -> new code lookup); unmapped names stay."""
    categories = [str(name) for name in categories]
    if not mapping:
        return categories, np.arange(len(categories), dtype=np.int64)
    if not set(mapping) & set(categories):
        raise SpotsweepError(
            f"{source}: no name in the label map's first column is a cell type here ({', '.join(categories[:5])}, "
            "...); give a map whose first column holds these names."
        )
    renamed = [mapping.get(name, name) for name in categories]
    new = list(pd.unique(pd.Series(renamed, dtype=object)))
    return new, np.asarray([new.index(name) for name in renamed], dtype=np.int64)


def _apply_label_map(labels: pd.Series, mapping: Mapping[str, str], source: str) -> pd.Categorical:
    labels = labels.astype("category")
    categories, lookup = map_labels(list(labels.cat.categories), mapping, source)
    codes = _lookup_codes(labels.cat.codes.to_numpy().astype(np.int64), lookup)
    return pd.Categorical.from_codes(codes, categories=categories)


def load_gene_list(path: Path, available: pd.Index) -> list[str]:
    """Genes to keep: from an AnnData (.h5ad/.zarr), the `available` genes it also has, in their order
    (e.g. the genes shared with a reference); else a text file with one gene per line, as listed."""
    path = Path(path)
    if not path.exists():
        raise SpotsweepError(f"{path}: no such gene list; give a text file with one gene per line or an AnnData.")
    if path.name.lower().endswith((".h5ad", ".zarr")):
        from anndata.io import read_elem

        group = _open_group(path)
        try:
            other = pd.Index(read_elem(group["var"]).index.astype(str))
        finally:
            if hasattr(group, "close"):
                group.close()
        shared = [gene for gene in available if gene in set(other)]
        if not shared:
            raise SpotsweepError(
                f"{path}: shares no gene name with the cells; check that both use the same gene identifiers."
            )
        return shared
    genes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not genes:
        raise SpotsweepError(f"{path}: the gene list is empty; write one gene per line.")
    check_unique_genes(genes, str(path), "genes of the list")
    return genes


# --- eager readers --------------------------------------------------------------------------------


def detect_format(path: Path, cells_table: Path | None = None) -> Format:
    """Which layout `path` is, from its name and contents."""
    path = Path(path)
    if not path.exists():
        raise SpotsweepError(f"{path}: no such file or folder; give the path of the spatial cells.")
    name = path.name.lower()
    if path.is_dir() and (path / "cell_by_gene.csv").exists():
        return "merscope"
    if name.endswith(".h5ad"):
        return "h5ad"
    if path.is_dir() and is_spatialdata(path):
        return "spatialdata"
    if name.endswith(".zarr") or (path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())):
        return "zarr"
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        if cells_table is None:
            raise SpotsweepError(
                f"{path}: a counts table needs the cell table (cell id, x, y, cell type); pass it with --cells-table "
                "(in a sweep file, the input's cells_table)."
            )
        return "counts-csv"
    raise SpotsweepError(
        f"{path}: unknown layout; give an AnnData .h5ad or .zarr, a SpatialData .zarr store, a MERSCOPE folder "
        "with cell_by_gene.csv, or a counts CSV with --cells-table."
    )


def check_openable(path: Path, cells_table: Path | None = None) -> None:
    """A known layout, and an AnnData store that opens (its header only): a sweep's reference was first
    read inside the prepare job, so an empty or foreign file passed `plan` and failed only there."""
    if detect_format(path, cells_table) in ("h5ad", "zarr"):
        group = _open_group(Path(path))
        if hasattr(group, "close"):
            group.close()


def read_cells(path: Path, options: ReadOptions | None = None, **keywords: Any) -> ad.AnnData:
    """The canonical AnnData of any supported layout (see the module docstring), in memory.

    Coordinates are optional here, so that a single-cell reference reads the same way: absent default
    keys (obsm 'spatial', columns x/y) leave obsm['spatial'] out; keys the caller named must exist.
    `keywords` are `ReadOptions` fields, over those of `options`.
    """
    path, o = Path(path), ReadOptions.of(options, **keywords)
    kind = detect_format(path, o.cells_table)
    if kind in ("h5ad", "zarr"):
        cells = read_anndata(path, layer=o.layer, spatial_key=o.spatial_key, x_key=o.x_key, y_key=o.y_key)
    elif kind == "spatialdata":
        cells = read_spatialdata(path, table=o.table, layer=o.layer)
    elif kind == "merscope":
        cells = read_merscope(path, allow_non_integer=o.allow_non_integer)
    else:
        cells = read_counts_table(
            path, Path(o.cells_table), x_key=o.x_key, y_key=o.y_key, allow_non_integer=o.allow_non_integer
        )
    check_unique_genes(cells.var_names, str(path))
    if kind in ("h5ad", "zarr", "spatialdata"):  # the other layouts check their counts as they parse them
        check_counts(cells.X, str(path), f"layers['{o.layer}']" if o.layer else "X", o.allow_non_integer)
    if o.annotations is not None:
        cells.obs = _join_annotations(cells.obs, Path(o.annotations))
    return canonical(cells, cell_type_key=o.cell_type_key, labels=o.labels, source=str(path))


def canonical(cells: ad.AnnData, *, cell_type_key: str, labels: LabelMap, source: str) -> ad.AnnData:
    """obs['cell_type'] from `cell_type_key`, label map applied; other obs columns are kept."""
    if cell_type_key not in cells.obs:
        raise SpotsweepError(
            f"{source}: the cells have no cell-type column '{cell_type_key}' (they have "
            f"{', '.join(map(str, cells.obs.columns)) or 'none'}); name it with --cell-type-key or add one "
            "with --annotations."
        )
    cells.obs[CELL_TYPE] = _apply_label_map(cells.obs[cell_type_key], load_label_map(labels), source)
    return cells


def read_anndata(
    path: Path,
    *,
    layer: str | None = None,
    spatial_key: str = SPATIAL,
    x_key: str | None = None,
    y_key: str | None = None,
) -> ad.AnnData:
    """An AnnData file with counts moved to X and coordinates to obsm['spatial']."""
    path = Path(path)
    try:
        cells = ad.read_h5ad(path) if path.name.lower().endswith(".h5ad") else ad.read_zarr(path)
    except (OSError, KeyError, ValueError) as exc:
        raise SpotsweepError(f"{path}: cannot read the AnnData ({exc}); check the file.") from None
    if layer is not None:
        if layer not in cells.layers:
            raise SpotsweepError(
                f"{path}: there is no layer '{layer}' (layers: {', '.join(cells.layers) or 'none'}); "
                "name the layer holding the raw counts or leave --layer out to use X."
            )
        cells.X = cells.layers[layer]
    xy = _anndata_xy(cells.obs, cells.obsm, path, spatial_key, x_key, y_key)
    if xy is not None:
        cells.obsm[SPATIAL] = xy
    return cells


def _anndata_xy(
    obs: pd.DataFrame, obsm: Mapping[str, Any], path: Path, spatial_key: str, x_key: str | None, y_key: str | None
) -> np.ndarray | None:
    if x_key is not None or y_key is not None:
        missing = [key for key in (x_key, y_key) if key is None or key not in obs]
        if missing:
            raise SpotsweepError(
                f"{path}: obs has no coordinate column {missing[0]!r}; give both --x-key and --y-key as obs columns."
            )
        xy = obs[[x_key, y_key]].to_numpy(dtype=float)
        check_coordinates(xy, str(path), f"obs['{x_key}']/obs['{y_key}']")
        return xy
    if spatial_key not in obsm:
        if spatial_key == SPATIAL:
            return None  # a reference, or coordinates the build will ask for
        raise SpotsweepError(
            f"{path}: obsm has no '{spatial_key}' coordinates (it has {', '.join(obsm) or 'none'}); name them "
            "with --spatial-key, or give obs columns with --x-key and --y-key."
        )
    return np.asarray(obsm[spatial_key], dtype=float)[:, :2]


def read_merscope(folder: Path, *, allow_non_integer: bool = False) -> ad.AnnData:
    """A Vizgen MERSCOPE output folder: counts of cell_by_gene.csv, centres (um) of cell_metadata.csv."""
    folder = Path(folder)
    metadata_path = folder / "cell_metadata.csv"
    if not metadata_path.exists():
        raise SpotsweepError(f"{folder}: cell_metadata.csv is missing; give the whole MERSCOPE output folder.")
    ids, genes, counts = _read_counts_csv(folder / "cell_by_gene.csv", drop_prefix="Blank-")
    check_counts(counts, str(folder / "cell_by_gene.csv"), "counts", allow_non_integer)
    metadata = _read_table(metadata_path)
    obs = _match_cells(metadata, ids, metadata_path)
    xy = _table_xy(obs, metadata_path, "center_x", "center_y", required=True)
    return ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes), obsm={SPATIAL: xy})


def read_counts_table(
    counts_path: Path,
    cells_path: Path,
    *,
    x_key: str | None = None,
    y_key: str | None = None,
    allow_non_integer: bool = False,
) -> ad.AnnData:
    """A counts CSV (first column the cell id) plus a cell table (cell id first; x, y and labels)."""
    ids, genes, counts = _read_counts_csv(Path(counts_path))
    check_counts(counts, str(counts_path), "counts", allow_non_integer)
    table = _read_table(Path(cells_path))
    obs = _match_cells(table, ids, Path(cells_path))
    required = x_key is not None or y_key is not None
    xy = _table_xy(obs, Path(cells_path), x_key or "x", y_key or "y", required=required)
    cells = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes))
    if xy is not None:
        cells.obsm[SPATIAL] = xy
    return cells


def _read_table(path: Path) -> pd.DataFrame:
    try:
        tabs = path.name.lower().endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz"))
        table = pd.read_csv(path, index_col=0, sep="\t" if tabs else ",")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpotsweepError(
            f"{path}: cannot read the table ({exc}); give a CSV whose first column is the cell id."
        ) from None
    table.index = table.index.astype(str)
    if not table.index.is_unique:
        raise SpotsweepError(f"{path}: the cell ids in the first column repeat; give each cell one row.")
    return table


def _read_counts_csv(path: Path, drop_prefix: str | None = None) -> tuple[pd.Index, pd.Index, sp.csr_matrix]:
    """Parse a cells x genes CSV a block of rows at a time into a sparse float32 matrix."""
    if not path.exists():
        raise SpotsweepError(f"{path}: no such file; give the counts table.")
    ids, blocks, genes = [], [], None
    try:
        for frame in pd.read_csv(path, index_col=0, chunksize=_CSV_ROWS):
            if drop_prefix is not None:
                frame = frame.loc[:, ~frame.columns.astype(str).str.startswith(drop_prefix)]
            genes = frame.columns if genes is None else genes
            ids.append(frame.index.astype(str))
            blocks.append(sp.csr_matrix(frame.to_numpy(dtype=np.float32)))
    except ValueError as exc:
        raise SpotsweepError(
            f"{path}: a count is not a number ({exc}); give numeric counts after the id column."
        ) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SpotsweepError(f"{path}: cannot read the counts ({exc}); give a CSV with the cell id first.") from None
    if genes is None:
        raise SpotsweepError(f"{path}: the counts table has no cells; give a table with one row per cell.")
    check_unique_genes(pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0, 1:], str(path), "gene columns")
    index = pd.Index(np.concatenate(ids), dtype=str)
    if not index.is_unique:
        raise SpotsweepError(f"{path}: the cell ids in the first column repeat; give each cell one row.")
    return index, pd.Index(genes.astype(str)), sp.vstack(blocks, format="csr")


def _match_cells(table: pd.DataFrame, ids: pd.Index, path: Path) -> pd.DataFrame:
    missing = ids.difference(table.index)
    if len(missing):
        raise SpotsweepError(
            f"{path}: {len(missing)} cells of the counts are not in this table ({missing[0]}, ...); "
            "give a table with a row for every cell id."
        )
    return table.loc[ids]


def _table_xy(table: pd.DataFrame, path: Path, x_key: str, y_key: str, *, required: bool) -> np.ndarray | None:
    for key in (x_key, y_key):
        if key not in table:
            if not required:
                return None
            raise SpotsweepError(
                f"{path}: there is no coordinate column '{key}' (columns: {', '.join(map(str, table.columns))}); "
                "name the coordinate columns with --x-key and --y-key."
            )
    xy = pd.DataFrame(
        {"x": pd.to_numeric(table[x_key], errors="coerce"), "y": pd.to_numeric(table[y_key], errors="coerce")}
    )
    xy = xy.to_numpy(dtype=float)
    check_coordinates(xy, str(path), f"columns {x_key}/{y_key}")
    return xy


def _join_annotations(obs: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Extra obs columns (e.g. cell types for MERSCOPE) from a CSV keyed by cell id; they win on a clash."""
    table = _read_table(path)
    if not obs.index.isin(table.index).any():
        raise SpotsweepError(
            f"{path}: none of its cell ids ({table.index[0]}, ...) matches the cells ({obs.index[0]}, ...); "
            "give an annotation table keyed by the same cell ids."
        )
    return obs.drop(columns=[c for c in table.columns if c in obs]).join(table, how="left")


# --- lazy readers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class LazyCells:
    """Canonical cells as dask arrays sharing one chunking over cells (genes in one chunk).

    `counts` blocks are numpy or scipy.sparse CSR; `codes` index `cell_types` (-1: no label). The
    `*_field` strings name where each came from, for error messages.
    """

    counts: da.Array
    xy: da.Array
    codes: da.Array
    cell_types: list[str]
    genes: pd.Index
    state: da.Array | None
    source: str
    cell_type_key: str = CELL_TYPE
    counts_field: str = "X"
    coordinate_field: str = "obsm['spatial']"

    @property
    def cell_type_field(self) -> str:
        return f"obs['{self.cell_type_key}']"

    @property
    def n_cells(self) -> int:
        return int(self.counts.shape[0])

    @property
    def chunks(self) -> tuple[int, ...]:
        return self.counts.chunks[0]


def default_chunk_cells(n_genes: int) -> int:
    """Cells per chunk: about 32 MiB of float32 counts, whatever the number of genes."""
    return max(1024, _CHUNK_ELEMENTS // max(1, n_genes))


def open_cells(
    path: Path, options: ReadOptions | None = None, *, chunk_cells: int | None = None, **keywords: Any
) -> LazyCells:
    """Any supported layout as `LazyCells`; AnnData Zarr/h5ad stores stay on disk, the rest are read first.
    `keywords` are `ReadOptions` fields, over those of `options`; `chunk_cells` (cells per chunk) defaults
    to about 32 MiB of counts."""
    path, o = Path(path), ReadOptions.of(options, **keywords)
    kind = detect_format(path, o.cells_table)
    if kind in ("h5ad", "zarr") and o.annotations is None:
        return _open_anndata(path, chunk_cells, o)
    return lazy_from_anndata(read_cells(path, o), chunk_cells=chunk_cells, source=str(path))


def lazy_from_anndata(
    cells: ad.AnnData,
    *,
    chunk_cells: int | None = None,
    cell_type_key: str = CELL_TYPE,
    labels: LabelMap = None,
    source: str = "cells",
) -> LazyCells:
    """An in-memory AnnData (with obsm['spatial']) as `LazyCells`, for the Dask builder."""
    if cell_type_key not in cells.obs:
        canonical(cells, cell_type_key=cell_type_key, labels=None, source=source)  # raises the clear error
    if SPATIAL not in cells.obsm:
        raise SpotsweepError(
            f"{source}: obsm['spatial'] with the cell coordinates is missing; name them with --spatial-key, "
            "or give coordinate columns with --x-key and --y-key."
        )
    chunk = chunk_cells or default_chunk_cells(cells.n_vars)
    counts = cells.X
    if sp.issparse(counts):
        counts = sp.csr_matrix(counts)
        array = da.from_array(counts, chunks=(chunk, -1), asarray=False, meta=sp.csr_matrix((0, 0), dtype=counts.dtype))
    else:
        array = da.from_array(np.asarray(counts), chunks=(chunk, -1))
    mapped = _apply_label_map(cells.obs[cell_type_key], load_label_map(labels), source)
    state = cells.obsm.get("state")
    return LazyCells(
        counts=array,
        xy=da.from_array(np.asarray(cells.obsm[SPATIAL], dtype=float)[:, :2], chunks=(chunk, -1)),
        codes=da.from_array(np.asarray(mapped.codes, dtype=np.int64), chunks=chunk),
        cell_types=[str(name) for name in mapped.categories],
        genes=pd.Index(cells.var_names.astype(str)),
        state=None if state is None else da.from_array(np.asarray(state), chunks=(chunk, -1)),
        source=source,
        cell_type_key=cell_type_key,
    )


def _open_anndata(path: Path, chunk_cells: int | None, options: ReadOptions) -> LazyCells:
    """Dask arrays over an AnnData store's elements; only var, categories and small metadata are read."""
    from anndata.experimental import read_elem_lazy
    from anndata.io import read_elem

    source, layer, cell_type_key = str(path), options.layer, options.cell_type_key
    group = _open_group(path)
    try:
        counts_field = f"layers['{layer}']" if layer else "X"
        if layer is not None and ("layers" not in group or layer not in group["layers"]):
            raise SpotsweepError(
                f"{path}: there is no layer '{layer}'; name the layer holding the raw counts or leave --layer out."
            )
        element = group["layers"][layer] if layer else group["X"]
        encoding = _attr(element, "encoding-type")
        if encoding == "csc_matrix":
            raise SpotsweepError(
                f"{path}: {counts_field} is stored by gene (CSC), which cannot be read a chunk of cells at a time; "
                "store it as CSR (adata.X = adata.X.tocsr()) or dense."
            )
        _check_chunks_present(element, path, counts_field)
        genes = pd.Index(read_elem(group["var"]).index.astype(str))
        check_unique_genes(genes, source)
        chunk = chunk_cells or default_chunk_cells(len(genes))
        stored_rows = getattr(element, "chunks", None)
        if chunk_cells is None and stored_rows:  # whole stored chunks: each is decompressed once
            chunk = max(1, round(chunk / stored_rows[0])) * stored_rows[0]
        counts = read_elem_lazy(element, chunks=(chunk, len(genes)))
        xy, coordinate_field = _lazy_xy(group, path, chunk, options, read_elem_lazy)
        codes, categories = _lazy_codes(group, path, chunk, options, read_elem_lazy, read_elem)
        state = None
        if "obsm" in group and "state" in group["obsm"]:
            state = read_elem_lazy(group["obsm"]["state"], chunks=(chunk, -1))
    finally:
        if hasattr(group, "close"):
            group.close()
    return LazyCells(
        counts=counts,
        xy=xy,
        codes=codes,
        cell_types=categories,
        genes=genes,
        state=state,
        source=source,
        counts_field=counts_field,
        coordinate_field=coordinate_field,
        cell_type_key=cell_type_key,
    )


def _check_chunks_present(element: Any, path: Path, field: str) -> None:
    """A Zarr array whose chunks are missing on disk reads as zeros (its fill value), which would build
    spots of nothing without a word: refuse it (an interrupted copy, a partial download)."""
    arrays = [element] if hasattr(element, "nchunks_initialized") else []
    if not arrays and hasattr(element, "get"):  # a sparse matrix group: data, indices, indptr
        arrays = [element[name] for name in ("data", "indices", "indptr") if name in element]
    for array in arrays:
        present, expected = getattr(array, "nchunks_initialized", None), getattr(array, "nchunks", None)
        if present is not None and expected and present < expected and array.size:
            raise SpotsweepError(
                f"{path}: {field} has {expected - present} of its {expected} stored chunks missing, which would "
                "read as zeros; copy the store again completely."
            )


def _open_group(path: Path) -> Any:
    try:
        if path.name.lower().endswith(".h5ad"):
            import h5py

            return h5py.File(path, "r")
        import zarr

        return zarr.open_group(path, mode="r")
    except (OSError, ValueError, KeyError) as exc:
        raise SpotsweepError(f"{path}: cannot open the AnnData store ({exc}); check the file.") from None


def _attr(element: Any, name: str) -> Any:
    value = element.attrs.get(name)
    return value.decode() if isinstance(value, bytes) else value


def _lazy_xy(group: Any, path: Path, chunk: int, options: ReadOptions, read_lazy: Any) -> tuple[da.Array, str]:
    spatial_key, x_key, y_key = options.spatial_key, options.x_key, options.y_key
    if x_key is not None or y_key is not None:
        for key in (x_key, y_key):
            if key is None or key not in group["obs"]:
                raise SpotsweepError(
                    f"{path}: obs has no coordinate column {key!r}; give both --x-key and --y-key as obs columns."
                )
        columns = [read_lazy(group["obs"][key], chunks=(chunk,)).astype(float) for key in (x_key, y_key)]
        return da.stack(columns, axis=1), f"obs['{x_key}']/obs['{y_key}']"
    if "obsm" not in group or spatial_key not in group["obsm"]:
        raise SpotsweepError(
            f"{path}: obsm has no '{spatial_key}' coordinates; name them with --spatial-key, or give obs "
            "columns with --x-key and --y-key."
        )
    xy = read_lazy(group["obsm"][spatial_key], chunks=(chunk, -1))[:, :2].astype(float)
    return xy, f"obsm['{spatial_key}']"


def _lazy_codes(
    group: Any, path: Path, chunk: int, options: ReadOptions, read_lazy: Any, read_elem: Any
) -> tuple[da.Array, list[str]]:
    """Cell-type codes: lazily for a categorical column, else read and factorised (one value per cell)."""
    obs, key = group["obs"], options.cell_type_key
    if key not in obs:
        order = _attr(obs, "column-order")  # an array: empty where obs has no columns
        columns = [str(name) for name in ([] if order is None else list(np.atleast_1d(order)))]
        raise SpotsweepError(
            f"{path}: obs has no cell-type column '{key}' (it has {', '.join(columns) or 'no columns at all'}); "
            + (
                "name the right one with --cell-type-key."
                if columns
                else "add one, or give the cell types by cell id in a CSV with --annotations."
            )
        )
    if _attr(obs[key], "encoding-type") == "categorical":
        categories = [str(name) for name in read_elem(obs[key]["categories"])]
        codes = read_lazy(obs[key]["codes"], chunks=(chunk,)).astype(np.int64)
    else:
        labels_in_memory = pd.Categorical(pd.Series(read_elem(obs[key])).astype(str))
        categories = [str(name) for name in labels_in_memory.categories]
        codes = da.from_array(labels_in_memory.codes.astype(np.int64), chunks=chunk)
    new, lookup = map_labels(categories, load_label_map(options.labels), str(path))
    if len(new) != len(categories) or (lookup != np.arange(len(lookup))).any():
        codes = codes.map_blocks(_lookup_codes, lookup, dtype=np.int64)
    return codes, new


def _lookup_codes(codes: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    return np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1)

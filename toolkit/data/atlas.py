"""The `atlas` preset: millions of MERFISH-like cells written chunk by chunk into an AnnData Zarr store.

Scale runs need inputs far larger than memory. The atlas is a grid of MERFISH-like sections (tiles)
sharing one gene model and one state field, so it has the `merfish-like` preset's cell types, layers,
density and counts, and its reference is the `merfish-like` reference of the same seed. Two passes:

1. layout, tile by tile: cell types, positions and true states of every cell (a few floats per cell)
   go into obs/obsm through anndata;
2. counts, a chunk of cells at a time in worker processes: negative-binomial counts from the same
   gene model are written straight into the store's dense X (int32, compressed), so no process ever
   holds more than one chunk of counts.

Same seed and sizes, same store.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.data.synthetic import (
    GeneModel,
    allocate_types,
    check_seed,
    check_size,
    expected_counts,
    gene_model,
    lookup_preset,
    sample_positions,
    scaled_extent,
    simulation_parameters,
    state_field,
    type_profiles,
)
from toolkit.errors import SpotsweepError

BASE_PRESET = "merfish-like"
DEFAULT_CELLS = 10_000_000
DEFAULT_CHUNK_CELLS = 16_384


def _models(seed: int, n_genes: int) -> tuple[Any, GeneModel, Any]:
    """The merfish-like preset's gene model and state field for `seed`, drawn as `simulate` draws them."""
    spec = lookup_preset(BASE_PRESET)
    gene_rng, field_rng, *_ = np.random.default_rng(seed).spawn(6)
    return spec, gene_model(spec, n_genes, gene_rng), state_field(spec, field_rng)


def tile_grid(n_cells: int, tile_cells: int) -> tuple[int, int, np.ndarray]:
    """(columns, rows, cells per tile): a near-square grid of tiles of at most `tile_cells` cells."""
    n_tiles = math.ceil(n_cells / tile_cells)
    columns = math.ceil(math.sqrt(n_tiles))
    rows = math.ceil(n_tiles / columns)
    sizes = np.full(n_tiles, n_cells // n_tiles)
    sizes[: n_cells % n_tiles] += 1
    return columns, rows, sizes


def _layout(seed: int, n_cells: int, n_genes: int, tile_cells: int, progress: Any) -> dict[str, np.ndarray]:
    """Pass 1: cell type codes, positions and states of every cell, tile by tile."""
    spec, _, state_field = _models(seed, n_genes)
    columns, rows, sizes = tile_grid(n_cells, tile_cells)
    tile_extent = scaled_extent(spec, int(sizes[0]))  # the preset's cell density, whatever the tile size
    extent = np.asarray(tile_extent)
    whole = extent * (columns, rows)
    codes = np.empty(n_cells, dtype=np.int8)
    positions = np.empty((n_cells, 2), dtype=np.float32)
    states = np.empty((n_cells, spec.n_state_dims), dtype=np.float32)
    tile_rngs = np.random.default_rng([seed, 1]).spawn(len(sizes))
    start = 0
    for tile, (size, rng) in enumerate(zip(sizes, tile_rngs, strict=True)):
        stop = start + int(size)
        tile_codes = allocate_types(int(size), spec.spatial_frequencies, rng)
        offset = extent * (tile % columns, tile // columns)
        xy = sample_positions(spec, tile_codes, tile_extent, rng) + offset
        codes[start:stop] = tile_codes
        positions[start:stop] = xy
        states[start:stop] = state_field.sample(xy / whole, rng)
        start = stop
        progress(1)
    return {"codes": codes, "positions": positions, "states": states, "extent": whole}


def atlas_positions(seed: int = 0, n_cells: int | None = None, tile_cells: int | None = None) -> Iterator[np.ndarray]:
    """The atlas' cell positions tile by tile, exactly as `write_atlas` places them, without states or
    counts: what counting its windows needs (`spotsweep plan`)."""
    spec = lookup_preset(BASE_PRESET)
    seed = check_seed(seed)
    n_cells = check_size("n_spatial_cells", n_cells, DEFAULT_CELLS)
    tile_cells = check_size("tile_cells", tile_cells, spec.n_spatial_cells)
    columns, _, sizes = tile_grid(n_cells, tile_cells)
    tile_extent = scaled_extent(spec, int(sizes[0]))
    extent = np.asarray(tile_extent)
    for tile, (size, rng) in enumerate(zip(sizes, np.random.default_rng([seed, 1]).spawn(len(sizes)), strict=True)):
        tile_codes = allocate_types(int(size), spec.spatial_frequencies, rng)
        yield (
            sample_positions(spec, tile_codes, tile_extent, rng) + extent * (tile % columns, tile // columns)
        ).astype(np.float32)


def _fill_counts(store: str, start: int, stop: int, seed: int, n_genes: int) -> int:
    """Pass 2 for cells [start, stop): negative-binomial counts written into X; returns their total."""
    import zarr

    spec, model, _ = _models(seed, n_genes)
    codes = zarr.open_array(f"{store}/obs/cell_type/codes", mode="r")[start:stop].astype(np.int64)
    states = zarr.open_array(f"{store}/obsm/state", mode="r")[start:stop]
    rng = np.random.default_rng([seed, 2, start])
    median, sd = spec.spatial_library
    sizes = median * np.exp(rng.normal(0.0, sd, stop - start))
    mean = expected_counts(model, codes, states, sizes, spatial=True)
    shape = model.dispersion.astype(np.float32)
    gamma = rng.standard_gamma(shape, size=mean.shape, dtype=np.float32)
    counts = rng.poisson(mean * (gamma / shape)).astype(np.int32)
    zarr.open_array(f"{store}/X", mode="r+")[start:stop] = counts
    return int(counts.sum(dtype=np.int64))


def _skeleton(cells: dict[str, Any], model: Any, params: dict[str, Any], n_cells: int, n_genes: int) -> Any:
    """The atlas's AnnData without its counts: cell types, positions, states, genes and provenance."""
    import anndata as ad

    spec = lookup_preset(BASE_PRESET)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(cells.pop("codes"), categories=spec.type_names)},
        index=pd.Index(np.char.add("cell", np.arange(n_cells).astype(str)).astype(object)),
    )
    var = pd.DataFrame(
        {"marker_of": pd.Series(model.marker_of, dtype=str).to_numpy()},
        index=pd.Index([f"Gene{i:0{max(4, len(str(n_genes)))}d}" for i in range(1, n_genes + 1)]),
    )
    skeleton = ad.AnnData(
        obs=obs,
        var=var,
        obsm={"spatial": cells.pop("positions"), "state": cells.pop("states")},
        varm={"type_profile": type_profiles(model).T.astype(np.float32)},
        uns={"simulation": {**params, "preset": "atlas", "base_preset": BASE_PRESET, "modality": "spatial"}},
    )
    skeleton.var["platform_effect"] = model.platform.astype(np.float32)
    return skeleton


def _write_counts(
    tmp: Path, n_cells: int, n_genes: int, chunk_cells: int, seed: int, workers: int, progress: Any
) -> int:
    """X, chunk by chunk of cells in `workers` processes, into the store at `tmp`; the total of the counts."""
    import zarr

    x = zarr.open_group(tmp, mode="r+", use_consolidated=False).create_array(
        "X", shape=(n_cells, n_genes), chunks=(chunk_cells, n_genes), dtype="int32", fill_value=0
    )
    x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    starts = list(range(0, n_cells, chunk_cells))
    counts_bar = progress.add_task("atlas: counts (chunks)", total=len(starts))
    total = 0
    with ProcessPoolExecutor(workers) as pool:
        stops = [min(n_cells, s + chunk_cells) for s in starts]
        for chunk_total in pool.map(
            _fill_counts, [str(tmp)] * len(starts), starts, stops, [seed] * len(starts), [n_genes] * len(starts)
        ):
            total += chunk_total
            progress.advance(counts_bar)
    return total


def write_atlas(
    out: Path,
    n_cells: int | None = None,
    seed: int = 0,
    *,
    n_genes: int | None = None,
    tile_cells: int | None = None,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    workers: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write the atlas's spatial cells to the AnnData Zarr store `out`; returns what was written.

    `tile_cells` defaults to the merfish-like section (84,000 cells); `workers` to the CPU count.
    The store is written next to `out` and renamed into place at the end: an interrupted run leaves
    no half-written atlas behind.
    """
    import anndata as ad
    import zarr
    from rich.progress import Progress

    from toolkit.layout import write_dir_atomically

    spec = lookup_preset(BASE_PRESET)
    seed = check_seed(seed)
    n_cells = check_size("n_spatial_cells", n_cells, DEFAULT_CELLS)
    n_genes = check_size("n_genes", n_genes, spec.n_genes)
    tile_cells = check_size("tile_cells", tile_cells, spec.n_spatial_cells)
    chunk_cells = check_size("chunk_cells", chunk_cells, DEFAULT_CHUNK_CELLS)
    workers = workers or len(os.sched_getaffinity(0))
    out = Path(out)
    if out.exists():
        raise SpotsweepError(f"{out} already exists; remove it or pass another --out for the atlas.")
    columns, rows, sizes = tile_grid(n_cells, tile_cells)
    summary: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        with Progress(transient=False, disable=not show_progress) as progress:
            layout_bar = progress.add_task("atlas: layout (tiles)", total=len(sizes))
            cells = _layout(seed, n_cells, n_genes, tile_cells, lambda n: progress.advance(layout_bar, n))
            _, model, _ = _models(seed, n_genes)
            params = simulation_parameters(spec, seed, n_cells, 0, n_genes, tuple(cells["extent"]))
            skeleton = _skeleton(cells, model, params, n_cells, n_genes)
            with ad.settings.override(zarr_write_format=3):
                skeleton.write_zarr(tmp)
            del skeleton
            total = _write_counts(tmp, n_cells, n_genes, chunk_cells, seed, workers, progress)
            zarr.consolidate_metadata(tmp)
        extent = [float(v) for v in params["extent"]]
        summary.update(n_cells=n_cells, n_genes=n_genes, tiles=f"{columns} x {rows}", extent=extent, total_counts=total)

    write_dir_atomically(out, write)
    summary["store_bytes"] = sum(path.stat().st_size for path in out.rglob("*") if path.is_file())
    return summary

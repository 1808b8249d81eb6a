"""Pseudospots out of core: Dask sums the cells chunk by chunk and writes the spots into an AnnData Zarr store.

Neither the input nor the output has to fit in memory. Two kinds of passes over the chunks of cells:

1. windows: the grid keys of each chunk's cells (2 floats per cell) give the non-empty windows, i.e. the
   spots, and the range of spots each chunk reaches;
2. sums: for each group of spot rows whose sums fit `memory_budget`, the chunks are read a wave at a time
   (two per worker thread); each chunk's counts and cell types are summed by spot with the in-memory
   kernels (one sparse product), and those partial sums are added in place into one dense accumulator
   per block of rows. Finished blocks go straight into the store's X, their truths (cells per type,
   state sums) back to the caller. A chunk is read for a group only if its spots reach into it, so
   spatially ordered input is read once; unordered input is read once per group.

Memory is therefore the budget plus one wave of chunks, however many cells there are; a tree reduction
would instead hold several partial copies of every block. `in_memory.build_pseudospots` gives the same
spots in memory from the same kernels. Where the chunks are computed is the `Scheduler` the caller
gives (`scheduler`: threads, or a Client it opened): this module never decides it.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import zarr
from dask.delayed import Delayed, delayed

from toolkit.data.checks import check_coordinates, check_counts, check_labels, write_all_chunks
from toolkit.data.readers import LazyCells
from toolkit.errors import SpotsweepError
from toolkit.layout import write_dir_atomically
from toolkit.provenance import package_version
from toolkit.pseudospots.grid import (
    EDGE_RULES,
    EdgeRule,
    Grid,
    GridSubset,
    RowSums,
    add_into,
    check_some_spots,
    check_window,
    local_rows,
    select_genes,
    sum_counts,
    sum_types,
)
from toolkit.pseudospots.scheduler import Scheduler, use_scheduler
from toolkit.pseudospots.store import assemble_spots, provenance, storable_obsm

DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of output sums held at once
_STORE_CHUNK_BYTES = 1 << 23  # rows of X per Zarr chunk: about 8 MiB
_BLOCK_BYTES = 1 << 25  # rows of X in one accumulator (one task): about 32 MiB


# --- per-chunk kernels (module level so that distributed workers can unpickle them) ---------------


def _chunk_window_keys(xy: np.ndarray, grid: Grid, source: str, field: str) -> np.ndarray:
    """The sorted distinct windows of a chunk's kept cells."""
    check_coordinates(xy, source, field)
    keys, keep = grid.cell_keys(xy)
    return np.unique(keys[keep])


def _union(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.unique(np.concatenate(parts))


def _key_range(keys: np.ndarray) -> tuple[int, int] | None:
    return (int(keys[0]), int(keys[-1])) if len(keys) else None


@dataclass(frozen=True)
class _SumSpec:
    """Everything a chunk's sums need besides the chunk itself (one object, shipped once per graph)."""

    grid: Grid
    spot_keys: np.ndarray
    gene_index: np.ndarray | None
    n_types: int
    allow_non_integer: bool
    source: str
    counts_field: str
    cell_type_field: str

    @classmethod
    def of(
        cls, cells: LazyCells, grid: Grid, spot_keys: np.ndarray, gene_index: np.ndarray, allow_non_integer: bool
    ) -> _SumSpec:
        """The spec of summing `cells` onto these spots; no gene selection when every gene is kept in order."""
        selection = None if np.array_equal(gene_index, np.arange(len(cells.genes))) else gene_index
        return cls(
            grid,
            spot_keys,
            selection,
            len(cells.cell_types),
            allow_non_integer,
            cells.source,
            cells.counts_field,
            cells.cell_type_field,
        )


def _chunk_sums(
    counts: Any, xy: np.ndarray, codes: np.ndarray, state: np.ndarray | None, spec: _SumSpec, lo: int, hi: int
) -> RowSums:
    """The chunk's counts, cells per type (and state sums) summed into its spots among rows [lo, hi)."""
    check_labels(codes, spec.source, spec.cell_type_field)
    if spec.gene_index is not None:
        counts = counts[:, spec.gene_index]
    check_counts(counts, spec.source, spec.counts_field, spec.allow_non_integer)
    rows, group = local_rows(spec.grid.spot_index(xy, spec.spot_keys), lo, hi)
    type_counts, state_sums = sum_types(group, np.asarray(codes, dtype=np.int64), len(rows), spec.n_types, state)
    arrays = (sum_counts(counts, group, len(rows)), type_counts)
    return RowSums(rows, arrays if state_sums is None else (*arrays, state_sums))


def _new_block(n_rows: int, n_genes: int, n_types: int, n_dims: int | None) -> tuple[np.ndarray, ...]:
    """Zeroed accumulators of one block: counts (float32), cells per type, state sums if any."""
    block = (np.zeros((n_rows, n_genes), np.float32), np.zeros((n_rows, n_types), np.int64))
    return block if n_dims is None else (*block, np.zeros((n_rows, n_types, n_dims), np.float64))


def _fold(block: tuple[np.ndarray, ...], lo: int, parts: Sequence[RowSums]) -> tuple[np.ndarray, ...]:
    """Add partial sums into a block's accumulators in place; the block is this task's alone."""
    for part in parts:
        add_into(block, lo, part)
    return block


def _finish_block(block: tuple[np.ndarray, ...], x_path: str, lo: int) -> tuple[np.ndarray, ...]:
    """Write the block's counts into X; hand back its (small) truths."""
    with write_all_chunks():  # an all-zero chunk is written too: a missing one then means a damaged store
        x = zarr.open_array(x_path, mode="r+")
    x[lo : lo + len(block[0])] = block[0]
    return block[1:]


def _release_freed_memory() -> None:
    """Hand memory freed by a pass back to the OS: glibc keeps large freed blocks in its heap otherwise,
    and they would add to the peak of the next pass (best effort; a no-op without glibc)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# --- running waves on threads or a cluster --------------------------------------------------------


class _Runner:
    """Computes graphs on the threaded scheduler or a distributed client.

    Block accumulators stay where they are: numpy arrays in this process with threads, futures on the
    workers with a cluster. Each wave's graph takes them in and hands back the updated ones.
    """

    def __init__(self, client: Any, scheduler: Scheduler) -> None:
        self.client = client
        self.threads = scheduler.n_workers or os.cpu_count() or 1
        self._names = itertools.count()

    @property
    def slots(self) -> int:
        if self.client is None:
            return self.threads
        return max(1, sum(self.client.nthreads().values()))

    def run(self, objects: Sequence[Any]) -> list[Any]:
        """Values with threads; futures (finished, data left on the workers) with a cluster."""
        if self.client is None:
            return list(dask.compute(*objects))
        from distributed import wait

        futures = self.client.compute(list(objects))
        wait(futures)
        for future in futures:
            if future.status == "error":
                future.result()  # raises the task's own exception, e.g. a SpotsweepError
        return futures

    def gather(self, results: list[Any]) -> list[Any]:
        return results if self.client is None else self.client.gather(results)

    def hold(self, block: Any) -> Any:
        """A graph input for an accumulator, without hashing its data."""
        if self.client is None:
            return delayed(block, name=f"spotsweep-block-{next(self._names)}", traverse=False)
        return block

    def share(self, value: Any) -> Any:
        """A graph input used by many tasks (the spot keys): one key, sent to each worker once."""
        if self.client is None:
            return delayed(value, name=f"spotsweep-shared-{next(self._names)}", traverse=False)
        return self.client.scatter(value, broadcast=True)


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def task(self, description: str, total: int) -> Any:
        return None if self.bar is None else self.bar.add_task(description, total=total)

    def advance(self, task: Any, steps: int) -> None:
        if self.bar is not None:
            self.bar.advance(task, steps)


# --- the build ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildSummary:
    """What a build did, for the CLI and the benchmark."""

    out: Path
    n_cells_in: int
    n_cells_used: int
    n_spots: int
    n_genes: int
    count_passes: int
    seconds: float

    @property
    def cells_per_second(self) -> float:
        return self.n_cells_in / self.seconds if self.seconds else float("inf")


@dataclass(frozen=True)
class _Chunks:
    """The cells' chunks as delayed pieces, one per chunk, in the same order."""

    counts: list[Delayed]
    xy: list[Delayed]
    codes: list[Delayed]
    state: list[Delayed] | None

    @classmethod
    def of(cls, cells: LazyCells) -> _Chunks:
        rows = cells.chunks
        pieces = [
            cells.counts.rechunk({1: -1}),
            cells.xy.rechunk((rows, -1)),
            cells.codes.rechunk((rows,)),
            None if cells.state is None else cells.state.rechunk((rows, -1)),
        ]
        return cls(*(None if a is None else list(a.to_delayed().ravel()) for a in pieces))

    def __len__(self) -> int:
        return len(self.xy)


def _check_arguments(
    source: str, window: float, edge_rule: str, memory_budget: int, out: Path, overwrite: bool
) -> None:
    """`build_spots_store`'s settings, each refused in one sentence before anything is read."""
    check_window(window, source)
    if edge_rule not in EDGE_RULES:
        raise SpotsweepError(f"{source}: edge rule '{edge_rule}' is unknown; use {' or '.join(EDGE_RULES)}.")
    if memory_budget <= 0:
        raise SpotsweepError(f"memory budget {memory_budget} must be positive; give a size in bytes (or MiB).")
    if out.exists() and not overwrite:
        raise SpotsweepError(f"{out}: already exists; choose another output path or pass --overwrite.")


def build_spots_store(
    cells: LazyCells,
    out: Path,
    window: float,
    *,
    origin: tuple[float, float] = (0.0, 0.0),
    edge_rule: EdgeRule = "half-open",
    genes: Sequence[str] | None = None,
    subset: GridSubset | None = None,
    allow_non_integer: bool = False,
    overwrite: bool = False,
    scheduler: Scheduler | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
) -> BuildSummary:
    """Build the pseudospots of `cells` chunk by chunk into the AnnData Zarr store `out`.

    Same arguments and same result as `build_pseudospots`, but written to disk: X dense float32 (spots x
    genes), the truth in obsm, provenance in uns['pseudospots']. Nothing is left at `out` if it fails.
    """
    started = time.perf_counter()
    source, out = cells.source, Path(out)
    _check_arguments(source, window, edge_rule, memory_budget, out, overwrite)
    grid = Grid(float(window), (float(origin[0]), float(origin[1])), edge_rule, subset or GridSubset())
    gene_index = select_genes(cells.genes, genes, source)
    scheduler = scheduler or Scheduler()
    chunks = _Chunks.of(cells)
    done: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        with use_scheduler(scheduler) as client, _Progress(progress) as bar:
            runner = _Runner(client, scheduler)
            spot_keys, ranges = _find_spots(chunks, grid, cells, runner, bar)
            check_some_spots(len(spot_keys), grid, cells.n_cells, source)
            spec = _SumSpec.of(cells, grid, spot_keys, gene_index, allow_non_integer)
            n_dims = None if cells.state is None else int(cells.state.shape[1])
            job = _SumJob(chunks, ranges, spec, len(gene_index), n_dims)
            truths, done["passes"] = job.run(tmp, memory_budget, runner, bar)
        cell_counts = truths[0]
        uns = _provenance(grid, cells, int(cell_counts.sum()), allow_non_integer, scheduler, memory_budget)
        genes_out = cells.genes[gene_index]
        state_sums = truths[1] if len(truths) > 1 else None
        skeleton = assemble_spots(spot_keys, grid, cell_counts, state_sums, cells.cell_types, genes_out, None, uns)
        _write_skeleton(skeleton, tmp)
        done.update(n_spots=len(spot_keys), n_genes=len(genes_out), n_used=int(cell_counts.sum()))

    write_dir_atomically(out, write, overwrite=overwrite)
    return BuildSummary(
        out=out,
        n_cells_in=cells.n_cells,
        n_cells_used=done["n_used"],
        n_spots=done["n_spots"],
        n_genes=done["n_genes"],
        count_passes=done["passes"],
        seconds=time.perf_counter() - started,
    )


def _provenance(
    grid: Grid, cells: LazyCells, n_used: int, allow_non_integer: bool, scheduler: Scheduler, memory_budget: int
) -> dict[str, Any]:
    """uns['pseudospots'] of a store built here: the grid's, and how Dask built it."""
    return provenance(
        grid,
        engine="dask",
        cell_type_key=cells.cell_type_key,
        source=cells.source,
        n_cells_in=cells.n_cells,
        n_cells_used=n_used,
        counts="raw counts summed per window" if not allow_non_integer else "values summed per window",
        dask=_dask_provenance(scheduler, cells, memory_budget),
    )


def _dask_provenance(scheduler: Scheduler, cells: LazyCells, memory_budget: int) -> dict[str, Any]:
    return {
        "scheduler": scheduler.kind,
        "chunk_cells": int(max(cells.chunks)),
        "n_chunks": len(cells.chunks),
        "memory_budget": int(memory_budget),
        "dask_version": package_version("dask"),
        "zarr_version": package_version("zarr"),
    }


def _write_skeleton(spots: Any, store: Path) -> None:
    """Everything but X (already in `store`) with anndata's element writer, then consolidated metadata."""
    import anndata as ad

    with write_all_chunks():
        group = zarr.open_group(str(store), mode="a", zarr_format=2)
    elements = {
        "obs": spots.obs,
        "var": spots.var,
        "obsm": storable_obsm(spots.obsm),
        "varm": {},
        "obsp": {},
        "varp": {},
        "layers": {},
        "uns": dict(spots.uns),
    }
    with write_all_chunks():
        for key, value in elements.items():
            ad.io.write_elem(group, key, value)
    group.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    zarr.consolidate_metadata(str(store))


def _find_spots(
    chunks: _Chunks, grid: Grid, cells: LazyCells, runner: _Runner, bar: _Progress
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Pass 1: the sorted keys of the non-empty windows and each chunk's [first, last] spot row."""
    task = bar.task("pseudospots: finding the windows", 1)
    per_chunk = [delayed(_chunk_window_keys)(xy, grid, cells.source, cells.coordinate_field) for xy in chunks.xy]
    level = per_chunk
    while len(level) > 1:
        level = [delayed(_union)(level[k : k + 8]) for k in range(0, len(level), 8)]
    spot_keys, *spans = runner.gather(runner.run([level[0], *(delayed(_key_range)(k) for k in per_chunk)]))
    bar.advance(task, 1)
    spot_keys = np.asarray(spot_keys, dtype=np.uint64)
    ranges = []
    for span in spans:
        if span is None:
            ranges.append((0, 0))
        else:
            first, last = np.searchsorted(spot_keys, np.asarray(span, dtype=np.uint64))
            ranges.append((int(first), int(last) + 1))
    return spot_keys, ranges


def _row_sizes(n_spots: int, row_bytes: int, x_row_bytes: int, memory_budget: int) -> tuple[int, int, int]:
    """Spot rows per pass, per accumulator block and per Zarr chunk of X.

    A pass holds about `memory_budget` of sums (at most one block more), passes are of equal size, a
    block is a whole number of Zarr chunks (parallel writes never share one) and a pass of blocks.
    """
    group_rows = max(1, min(n_spots, memory_budget // row_bytes))
    block_rows = max(1, min(group_rows, _BLOCK_BYTES // row_bytes))
    chunk_rows = max(1, min(block_rows, _STORE_CHUNK_BYTES // max(1, x_row_bytes)))
    block_rows -= block_rows % chunk_rows
    n_passes = -(-n_spots // (group_rows - group_rows % block_rows))
    group_rows = -(-n_spots // n_passes)
    group_rows += -group_rows % block_rows
    return group_rows, block_rows, chunk_rows


@dataclass(frozen=True)
class _SumJob:
    """Pass 2: every sum, one group of spot rows per pass, the chunks a wave at a time."""

    chunks: _Chunks
    ranges: list[tuple[int, int]]
    spec: _SumSpec
    n_genes: int
    n_dims: int | None

    def run(self, store: Path, memory_budget: int, runner: _Runner, bar: _Progress) -> tuple[list[np.ndarray], int]:
        """(truth arrays over all spots, number of passes); X is written into `store` on the way."""
        n_spots, n_types, n_genes = len(self.spec.spot_keys), self.spec.n_types, self.n_genes
        row_bytes = 4 * n_genes + 8 * n_types * (1 + (self.n_dims or 0))
        group_rows, block_rows, chunk_rows = _row_sizes(n_spots, row_bytes, 4 * n_genes, memory_budget)
        x = zarr.open_group(str(store), mode="w", zarr_format=2).create_array(
            "X", shape=(n_spots, n_genes), chunks=(chunk_rows, n_genes), dtype="float32", fill_value=0.0
        )
        x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
        truths = [np.zeros((n_spots, n_types), np.int64)]
        if self.n_dims is not None:
            truths.append(np.zeros((n_spots, n_types, self.n_dims), np.float64))
        starts = range(0, n_spots, group_rows)
        for number, lo in enumerate(starts, start=1):
            hi = min(n_spots, lo + group_rows)
            label = f"pseudospots: summing ({number}/{len(starts)})" if len(starts) > 1 else "pseudospots: summing"
            for start, block_truths in self._pass(str(store / "X"), lo, hi, block_rows, runner, bar, label):
                for total, part in zip(truths, block_truths, strict=True):
                    total[start : start + len(part)] = part
            _release_freed_memory()
        return truths, len(starts)

    def _touching(self, lo: int, hi: int, among: Sequence[int]) -> list[int]:
        return [i for i in among if self.ranges[i][0] < hi and self.ranges[i][1] > lo]

    def _pass(
        self, x_path: str, lo: int, hi: int, block_rows: int, runner: _Runner, bar: _Progress, label: str
    ) -> list[tuple[int, tuple[np.ndarray, ...]]]:
        """Sum the chunks reaching rows [lo, hi) into dense blocks; write X, return (first row, truths)."""
        bounds = [(start, min(hi, start + block_rows)) for start in range(lo, hi, block_rows)]
        shape = (self.n_genes, self.spec.n_types, self.n_dims)
        blocks = runner.run([delayed(_new_block)(stop - start, *shape) for start, stop in bounds])
        chunks = self._touching(lo, hi, range(len(self.chunks)))
        spec = runner.share(self.spec)
        task = bar.task(label, len(chunks))
        wave_size = 2 * runner.slots
        for first in range(0, len(chunks), wave_size):
            wave = chunks[first : first + wave_size]
            parts = {i: self._part(i, spec, lo, hi) for i in wave}
            updates = []
            for j, (start, stop) in enumerate(bounds):
                reaching = self._touching(start, stop, wave)
                if reaching:
                    fold = delayed(_fold)(runner.hold(blocks[j]), start, [parts[i] for i in reaching])
                    updates.append((j, fold))
            for (j, _), block in zip(updates, runner.run([fold for _, fold in updates]), strict=True):
                blocks[j] = block
            bar.advance(task, len(wave))
        finished = [
            delayed(_finish_block)(runner.hold(block), x_path, start)
            for block, (start, _) in zip(blocks, bounds, strict=True)
        ]
        truths = runner.gather(runner.run(finished))
        return [(start, truth) for (start, _), truth in zip(bounds, truths, strict=True)]

    def _part(self, i: int, spec: Any, lo: int, hi: int) -> Delayed:
        state = None if self.chunks.state is None else self.chunks.state[i]
        return delayed(_chunk_sums)(self.chunks.counts[i], self.chunks.xy[i], self.chunks.codes[i], state, spec, lo, hi)

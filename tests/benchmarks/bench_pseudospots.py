"""Benchmark of the out-of-core pseudospot build against a plain pandas groupby-sum.

    .venv/bin/python -m tests.benchmarks.bench_pseudospots --cells 10000000 --genes 500 --window 100

1. generate: a synthetic cells x genes AnnData Zarr store written chunk by chunk (Poisson counts, random
   coordinates in random order, 15 random cell types), so the input never sits in memory;
2. build: `open_cells` + `build_spots_store` (threads scheduler) over the whole store;
3. pandas: `DataFrame.groupby([grid_x, grid_y]).sum()` on the first `--pandas-cells` cells, in memory;
4. in-memory: `build_pseudospots` on the same cells, the toolkit's one-sparse-product path;
5. verify: the spots' total counts and cells equal the input's.

Each stage runs in its own process; its peak memory is that whole process's maximum resident set size
(`os.wait4`, the same figure as `/usr/bin/time -v`). Not a test: it takes minutes and tens of GB of disk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

N_TYPES = 15
CELLS_PER_WINDOW_AT_40 = 3.0  # the blog's MERFISH section: 83,546 cells in 27,395 spots of 40 um


# --- stage 1: the input ---------------------------------------------------------------------------


def _extent(n_cells: int) -> float:
    """Side of the square section (um) at the MERFISH density of about 3 cells per 40 um window."""
    return 40.0 * math.sqrt(n_cells / CELLS_PER_WINDOW_AT_40)


def _fill_rows(path: str, start: int, stop: int, n_genes: int, seed: int) -> int:
    """Poisson counts of cells [start, stop) written into the store's X; returns their total."""
    import zarr

    rng = np.random.default_rng([seed, start])
    means = np.random.default_rng(seed).gamma(0.5, 1.2, n_genes)  # about 300 counts per cell
    counts = rng.poisson(means, size=(stop - start, n_genes)).astype(np.int32)
    zarr.open_array(path, mode="r+")[start:stop] = counts
    return int(counts.sum(dtype=np.int64))


def generate(out: Path, n_cells: int, n_genes: int, chunk: int, seed: int, workers: int) -> dict[str, Any]:
    """The input store: small parts (obs, coordinates) through anndata, X chunk by chunk in worker processes."""
    import anndata as ad
    import pandas as pd
    import zarr

    rng = np.random.default_rng(seed)
    codes = rng.integers(0, N_TYPES, n_cells).astype(np.int8)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(codes, categories=[f"Type{t:02d}" for t in range(N_TYPES)])},
        index=pd.Index(np.char.add("c", np.arange(n_cells).astype(str)).astype(object)),
    )
    del codes
    var = pd.DataFrame(index=[f"Gene{g:04d}" for g in range(n_genes)])
    cells = ad.AnnData(obs=obs, var=var, obsm={"spatial": rng.random((n_cells, 2)) * _extent(n_cells)})
    with ad.settings.override(zarr_write_format=3):
        cells.write_zarr(out)
    del cells, obs
    x = zarr.open_group(out, mode="r+").create_array(
        "X", shape=(n_cells, n_genes), chunks=(chunk, n_genes), dtype="int32", fill_value=0
    )
    x.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    starts = range(0, n_cells, chunk)
    with ProcessPoolExecutor(workers) as pool:
        totals = pool.map(
            _fill_rows,
            [str(out / "X")] * len(starts),
            starts,
            [min(n_cells, s + chunk) for s in starts],
            [n_genes] * len(starts),
            [seed] * len(starts),
        )
        total = sum(totals)
    zarr.consolidate_metadata(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"total_counts": total, "store_bytes": size, "extent_um": _extent(n_cells)}


# --- stages 2-5 -----------------------------------------------------------------------------------


def build(store: Path, out: Path, window: float, memory_budget: int) -> dict[str, Any]:
    from toolkit.data.readers import open_cells
    from toolkit.pseudospots.out_of_core import build_spots_store

    started = time.perf_counter()
    summary = build_spots_store(open_cells(store), out, window, overwrite=True, memory_budget=memory_budget)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cells_per_s": summary.n_cells_in / seconds,
        "n_spots": summary.n_spots,
        "count_passes": summary.count_passes,
    }


def _first_cells(store: Path, n: int, window: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    import anndata as ad
    import zarr

    group = zarr.open_group(store, mode="r")
    counts = group["X"][:n]
    xy = group["obsm"]["spatial"][:n]
    labels = ad.io.read_elem(group["obs"]["cell_type"])[:n]
    return counts, xy, np.floor(xy / window).astype(np.int64), labels


def pandas_groupby(store: Path, n: int, window: float) -> dict[str, Any]:
    """The straightforward way: one DataFrame row per cell, grouped by window and summed."""
    import pandas as pd

    counts, _, grid, _ = _first_cells(store, n, window)
    frame = pd.DataFrame(counts)
    del counts
    frame["grid_x"], frame["grid_y"] = grid[:, 0], grid[:, 1]
    started = time.perf_counter()
    spots = frame.groupby(["grid_x", "grid_y"]).sum()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cells_per_s": n / seconds, "n_spots": len(spots)}


def in_memory(store: Path, n: int, window: float) -> dict[str, Any]:
    import anndata as ad
    import pandas as pd

    from toolkit.pseudospots import build_pseudospots

    counts, xy, _, labels = _first_cells(store, n, window)
    cells = ad.AnnData(X=counts, obs=pd.DataFrame({"cell_type": labels}, index=pd.RangeIndex(n).astype(str)))
    cells.obsm["spatial"] = xy
    started = time.perf_counter()
    spots = build_pseudospots(cells, window)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cells_per_s": n / seconds, "n_spots": spots.n_obs}


def verify(out: Path) -> dict[str, Any]:
    import dask.array as da
    import zarr

    group = zarr.open_group(out, mode="r")
    total = da.from_zarr(group["X"]).sum(dtype=np.float64).compute()
    return {"total_counts": int(total), "n_cells": int(group["obs"]["n_cells"][:].sum())}


STAGES = {"generate": generate, "build": build, "pandas": pandas_groupby, "in-memory": in_memory, "verify": verify}


# --- driver ---------------------------------------------------------------------------------------


def _run_stage(name: str, *args: Any) -> dict[str, Any]:
    """Run one stage in a child process; add its wall time and peak resident memory."""
    spec = json.dumps([name, [str(a) if isinstance(a, Path) else a for a in args]])
    load = os.getloadavg()[0]
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.benchmarks.bench_pseudospots", "--stage", spec], stdout=subprocess.PIPE
    )
    output = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"stage {name} failed with status {status}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result.update(
        wall_s=time.perf_counter() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_gib=usage.ru_maxrss / 2**20,
        load_before=load,
    )
    print(f"{name}: {json.dumps(result)}", file=sys.stderr)
    return result


def _child(spec: str) -> None:
    name, args = json.loads(spec)
    args = [Path(a) if isinstance(a, str) else a for a in args]
    print(json.dumps(STAGES[name](*args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=10_000_000)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--window", type=float, default=100.0, help="window side in um (40 is MERFISH-like)")
    parser.add_argument("--pandas-cells", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=16_384, help="cells per Zarr chunk of the input")
    parser.add_argument("--memory-budget-mib", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/spotsweep-bench"))
    parser.add_argument("--reuse-input", action="store_true", help="keep an input generated before")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.stage:
        _child(options.stage)
        return

    store = options.workdir / f"cells-{options.cells}x{options.genes}.zarr"
    out = options.workdir / "spots.zarr"
    options.workdir.mkdir(parents=True, exist_ok=True)
    if not (options.reuse_input and store.exists()):
        shutil.rmtree(store, ignore_errors=True)
        results = {
            "generate": _run_stage("generate", store, options.cells, options.genes, options.chunk, options.seed, 2)
        }
        (options.workdir / "input.json").write_text(json.dumps(results["generate"]))
    else:
        results = {"generate": json.loads((options.workdir / "input.json").read_text())}
    results["build"] = _run_stage("build", store, out, options.window, options.memory_budget_mib << 20)
    results["verify"] = _run_stage("verify", out)
    n = min(options.pandas_cells, options.cells)
    results["pandas"] = _run_stage("pandas", store, n, options.window)
    results["in-memory"] = _run_stage("in-memory", store, n, options.window)
    _report(options, results, n)


def _report(options: argparse.Namespace, results: dict[str, dict[str, Any]], n: int) -> None:
    gen, built, check, pandas, memory = (results[k] for k in ("generate", "build", "verify", "pandas", "in-memory"))
    if check["total_counts"] != gen["total_counts"] or check["n_cells"] != options.cells:
        raise SystemExit(f"verification failed: {check} vs input {gen}")
    rows = [
        ("build (Dask, threads)", options.cells, built),
        ("pandas groupby-sum", n, pandas),
        ("build_pseudospots (in memory)", n, memory),
    ]
    print(f"input: {options.cells:,} cells x {options.genes} genes, Zarr {gen['store_bytes'] / 2**30:.1f} GiB on disk;")
    print(f"window {options.window:g} um -> {built['n_spots']:,} spots in {built['count_passes']} count pass(es)\n")
    print("| step | cells | seconds | cells/s | process CPU s | peak RSS of the process (GiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, cells, r in rows:
        print(
            f"| {name} | {cells:,} | {r['seconds']:.1f} | {r['cells_per_s']:,.0f} | {r['cpu_s']:.0f} "
            f"| {r['peak_rss_gib']:.2f} |"
        )
    print(
        f"\nratio of cells/s, Dask build (end to end, {options.cells:,} cells from disk) / pandas groupby-sum "
        f"({n:,} cells already in memory): {built['cells_per_s'] / pandas['cells_per_s']:.2f}; "
        f"in-memory build / pandas on the same cells: {memory['cells_per_s'] / pandas['cells_per_s']:.2f}"
    )
    print(f"verified: spots hold all {options.cells:,} cells and all {gen['total_counts']:,} counts of the input")
    loads = ", ".join(f"{k} {results[k]['load_before']:.1f}" for k in ("build", "pandas", "in-memory"))
    print(f"load average (1 min) when each step started, on {os.cpu_count()} cores: {loads}")


if __name__ == "__main__":
    main()

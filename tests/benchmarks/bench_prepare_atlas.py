"""Benchmark (not a test): a sweep's prepare stage on an `atlas` tissue, time and peak memory.

What a sweep with `simulate: {preset: atlas}` does before any task: write the tissue chunk by chunk into
Zarr, simulate its merfish-like reference, and build the pseudospot grid with the out-of-core Dask
builder (threads), all in one child process whose whole process tree's resident memory is sampled every
0.2 s. The issue's bound: under 4 GiB at 10 million cells.

    .venv/bin/python -m tests.benchmarks.bench_prepare_atlas --cells 10000000 --out /tmp/prep-atlas
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.benchmarks.bench_atlas import tree_rss

CODE = """
import json, sys, time
from toolkit.config import parse_sweep
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare_dataset
from pathlib import Path
cells, out = int(sys.argv[1]), Path(sys.argv[2])
sweep = parse_sweep({"name": "bench", "output": str(out), "methods": [{"name": "control"}],
    "datasets": [{"name": "atlas", "simulate": {"preset": "atlas", "seed": 0, "n_spatial_cells": cells,
                  "n_reference_cells": 20000}}]}, "bench")
stages, start = [], time.perf_counter()
say = lambda m: stages.append((round(time.perf_counter() - start, 1), m))  # noqa: E731
prepare_dataset(sweep.datasets[0], OutputLayout(out), say=say)
import anndata as ad
spots = ad.read_zarr(OutputLayout(out).spots("atlas"))
print(json.dumps({"stages": stages, "n_spots": spots.n_obs, "n_genes": spots.n_vars}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/spotsweep-prepare-atlas"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CODE, str(args.cells), str(args.out)], stdout=subprocess.PIPE, text=True
    )
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    if child.returncode:
        sys.exit(f"the prepare run failed (exit {child.returncode})")
    summary = json.loads((child.stdout.read() if child.stdout else "").strip().splitlines()[-1])
    print("| cells | spots | genes | seconds | peak RSS, whole process tree (GiB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.cells:,} | {summary['n_spots']:,} | {summary['n_genes']} | {seconds:.0f} | {peak / 2**30:.2f} |")
    for at, stage in summary["stages"]:
        print(f"- {at:.0f} s: {stage}")
    shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()

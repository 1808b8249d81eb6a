"""Benchmark (not a test): the `atlas` preset, 10 million cells written chunk by chunk, time and peak memory.

The generator runs in a child process with its worker processes; the peak memory reported is the
largest SUM of resident memory over that whole process tree (sampled every 0.2 s), since the workers
hold their chunks at the same time. The same store is what `spotsweep simulate --preset atlas` writes.

    .venv/bin/python -m tests.benchmarks.bench_atlas --cells 10000000 --out /tmp/atlas.zarr
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants right now."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=10_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/spotsweep-atlas.zarr"))
    parser.add_argument("--workers", type=int, default=0, help="count workers (0: one per core)")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    code = (
        "import json, sys; from toolkit.data.atlas import write_atlas; "
        f"print(json.dumps(write_atlas(sys.argv[1], {args.cells}, 0, workers={args.workers or None})))"
    )
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", code, str(args.out)], stdout=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        peak = max(peak, tree_rss(watched))
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    output = child.stdout.read() if child.stdout else ""
    if child.returncode:
        sys.exit(f"the atlas run failed (exit {child.returncode})")
    summary = json.loads(output.strip().splitlines()[-1])
    print("| cells | genes | tiles | seconds | cells/s | peak RSS, whole process tree (GiB) | store (GiB) |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    print(
        f"| {summary['n_cells']:,} | {summary['n_genes']} | {summary['tiles']} | {seconds:.0f} | "
        f"{summary['n_cells'] / seconds:,.0f} | {peak / 2**30:.2f} | {summary['store_bytes'] / 2**30:.2f} |"
    )
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()

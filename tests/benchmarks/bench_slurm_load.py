"""Benchmark (by hand, not CI): thousands of quick tasks through a real SLURM, each done exactly once.

    .venv/bin/python -m tests.benchmarks.bench_slurm_load [--tasks 2000] [--cpus 16] [--pack 1]

Starts a single-node SLURM of its own (hpc/slurm/start.sh with its own state folder and ports, so a
test cluster in use is not touched; stopped afterwards unless --keep), then runs a sweep of control
tasks (truth, uniform, reference, NNLS: four per dataset, each scoring its proportions on a small
simulated tissue) through `spotsweep run --executor slurm`, as a user would, and measures:
- the submission and the whole run (prepare -> arrays -> aggregate), tasks per second;
- that every task is done exactly once: one result.json per task id, no other, one finished attempt
  each (attempts.json), every id of the sweep present;
- `spotsweep status` and `spotsweep aggregate` on the finished folder, each as a fresh process (what
  a user waits for), with the peak memory of that process.
The node declares --cpus CPUs (more than the machine has: the jobs mostly start and wait); --pack tasks
run side by side in each array element, so the array has tasks/pack elements. Prints a markdown table
and writes it to OUT/load.md. Measures, never asserts a time.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from toolkit.sweep import Task

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "hpc" / "slurm"
CONTROLS_PER_DATASET = 4


def _cluster_environment(state: Path, port: int, cpus: int) -> dict[str, str]:
    return {
        **os.environ,
        "SPOTSWEEP_SLURM_STATE": str(state),
        "SPOTSWEEP_SLURM_PORT": str(port),
        "SPOTSWEEP_SLURM_CPUS": str(cpus),
        "SPOTSWEEP_SLURM_GPUS": str(cpus),
        "SLURM_CONF": str(state / "etc" / "slurm.conf"),
    }


def _sweep(out: Path, n_tasks: int, profile: Path) -> dict:
    """Control tasks on n_tasks / 4 small simulated tissues (a seed each)."""
    datasets = [
        {
            "name": f"tissue-{seed:04d}",
            "simulate": {
                "preset": "starmap-like",
                "seed": seed,
                "n_spatial_cells": 300,
                "n_reference_cells": 300,
                "n_genes": 40,
            },
        }
        for seed in range(-(-n_tasks // CONTROLS_PER_DATASET))
    ]
    return {
        "name": "load",
        "output": str(out),
        "datasets": datasets,
        "methods": [{"name": "control"}],
        "executor": {"kind": "slurm", "profile": str(profile)},
    }


def _timed(command: list[str], environment: dict[str, str]) -> tuple[float, float, str]:
    """Seconds and peak RSS (GiB) of a command run as its own process; its stdout."""
    # Output to files, not pipes: a pipe nobody reads until the end blocks a command that prints more than
    # its 64 KiB buffer (status of 2,000 tasks did, for 8 minutes).
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, env=environment, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {stderr.strip()[-2000:]}")
    return seconds, usage.ru_maxrss / 2**20, stdout


def _exactly_once(out: Path) -> dict[str, int]:
    """Results and finished attempts per task id, against the sweep's ids."""
    expected = {Task.from_dict(task).id for task in json.loads((out / "sweep.json").read_text())["tasks"]}
    results = collections.Counter(path.parent.name for path in (out / "tasks").glob("*/result.json"))
    finished = collections.Counter()
    for path in (out / "tasks").glob("*/attempts.json"):
        finished[path.parent.name] = sum(a["outcome"] == "done" for a in json.loads(path.read_text()))
    return {
        "tasks in the sweep": len(expected),
        "result files": sum(results.values()),
        "ids with one result": sum(1 for i in expected if results[i] == 1),
        "ids missing": len(expected - set(results)),
        "result files of no task": len(set(results) - expected),
        "ids finished once (attempts.json)": sum(1 for i in expected if finished[i] == 1),
        "ids finished more than once": sum(1 for i in expected if finished[i] > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--cpus", type=int, default=16, help="CPUs the test node declares")
    parser.add_argument("--pack", type=int, default=1, help="tasks side by side per array element")
    parser.add_argument("--out", type=Path, default=Path("/tmp/spotsweep-load"))
    parser.add_argument("--port", type=int, default=6847)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    args = parser.parse_args()

    state = args.out / "slurm-state"
    environment = _cluster_environment(state, args.port, args.cpus)
    subprocess.run([str(HARNESS / "start.sh")], env=environment, check=True)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
        profile.update(
            cpus_per_task=1,
            pack=args.pack,
            mem_gb=0.5 + 1.0 * args.pack,  # SLURM enforces it; a task process peaks below 1 GB
            prepare_mem_gb=4,
            aggregate_mem_gb=4,
            array_parallelism=args.cpus,
            time_min=60,
            prepare_time_min=60,
        )
        (args.out / "profile.yaml").write_text(yaml.safe_dump(profile))
        sweep_file = args.out / "load.yaml"
        sweep_out = args.out / "out"
        sweep_file.write_text(yaml.safe_dump(_sweep(sweep_out, args.tasks, args.out / "profile.yaml")))
        spotsweep = [sys.executable, "-m", "toolkit"]

        run_s, _, run_stdout = _timed([*spotsweep, "run", str(sweep_file), "--wait"], environment)
        status_s, status_gib, status_stdout = _timed([*spotsweep, "status", str(sweep_out)], environment)
        aggregate_s, aggregate_gib, _ = _timed([*spotsweep, "aggregate", str(sweep_out)], environment)
        once = _exactly_once(sweep_out)
        n = once["tasks in the sweep"]
        lines = [
            f"# SLURM load: {n} control tasks, pack {args.pack}, node of {args.cpus} declared CPUs",
            "",
            f"machine: {os.cpu_count()} cores; load average at the end {os.getloadavg()[0]:.1f}",
            "",
            "| measure | value |",
            "| --- | ---: |",
            f"| `spotsweep run` (submit, prepare, {-(-n // args.pack)} array elements, aggregate), s | {run_s:.0f} |",
            f"| tasks per second, whole run | {n / run_s:.2f} |",
            f"| `spotsweep status` on the finished folder, s (peak RSS GiB) | {status_s:.1f} ({status_gib:.2f}) |",
            f"| `spotsweep aggregate` of {n} results, s (peak RSS GiB) | {aggregate_s:.1f} ({aggregate_gib:.2f}) |",
            *(f"| {key} | {value} |" for key, value in once.items()),
            "",
            "`spotsweep run` said:",
            "",
            "```",
            run_stdout.strip()[-1500:],
            "```",
            "",
            "`spotsweep status` said (first lines):",
            "",
            "```",
            "\n".join(status_stdout.strip().splitlines()[:12]),
            "```",
        ]
        (args.out / "load.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        print(f"peak RSS of this driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    finally:
        if not args.keep:
            subprocess.run([str(HARNESS / "stop.sh")], env=environment, check=False)


if __name__ == "__main__":
    main()

"""Benchmark (not a test): stock scvi-tools vs the fast engine, ms per step and s per epoch of destVI.

One run, one data set (real STARmap by default: 189 spots x 1,019 genes, slice-2 reference), the
adapter's "2022" destVI (`--variant current`: scvi-tools' defaults, a mixture prior and augmentation),
amortization `both`, batch 8, 32 and 128, and the CondSCVI reference (batch 128). Every (engine, batch)
measurement runs in its own process (clean peak memory, no shared caches) and the processes are
interleaved over `--repeats` rounds, so that a busy machine disturbs all engines alike. The first epoch
is warm-up (compilation for `fast-compiled`) and is reported apart; ms/step is the median steady epoch
divided by its steps. CPU ms/step is process CPU time, far less disturbed than wall time by other jobs
on a shared machine.

    .venv/bin/python -m tests.benchmarks.bench_engine                  # CPU, markdown table
    .venv/bin/python -m tests.benchmarks.bench_engine --device cuda    # the same on a GPU
    .venv/bin/python -m tests.benchmarks.bench_engine --engines scvi fast --batch-sizes 8 --repeats 1

`--data merfish-like` times the batch sizes STARmap's 189 spots cannot reach (256-1,024) on the
merfish-like tissue at the study's size (about 27,000 spots x 483 genes; each run simulates it again).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.methods.destvi import VARIANTS

ENGINES = ("scvi", "fast", "fast-compiled")
REPO = Path(__file__).resolve().parents[2]


def _rss_mib() -> float:
    """Current resident memory of this process (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _epochs_for(n_obs: int, batch_size: int, min_steps: int) -> int:
    """One warm-up epoch plus enough epochs for `min_steps` measured steps (at least 5 epochs)."""
    return 1 + max(5, math.ceil(min_steps / math.ceil(n_obs / batch_size)))


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """Measure one (engine, batch size) in this process; the reference comes from `job['model_dir']`."""
    import torch

    from tests.benchmarks import engine_problems as ep

    ep.quiet()
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    problem = ep.load_problem(job["data"])
    device = job["device"]
    cuda = device.startswith("cuda")
    if job["what"] == "reference":
        n_obs = problem.reference.n_obs
        epochs = _epochs_for(n_obs, job["batch_size"], job["min_steps"])
        rss_before = _rss_mib()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _, info = ep.train_reference(
            problem, engine=job["engine"], device=device, max_epochs=epochs, batch_size=job["batch_size"]
        )
    else:
        from scvi.model import CondSCVI

        reference = problem.reference.copy()
        sc_model = CondSCVI.load(job["model_dir"], adata=reference, accelerator="gpu" if cuda else "cpu")
        prior = torch.load(Path(job["model_dir"]) / "vamp_prior.pt")
        sc_model.get_vamp_prior = lambda *a, **k: {key: value.clone() for key, value in prior.items()}
        model = ep.make_destvi(problem, sc_model, seed=0, amortization=job["amortization"], variant=job["variant"])
        n_obs = problem.spots.n_obs
        epochs = _epochs_for(n_obs, job["batch_size"], job["min_steps"])
        rss_before = _rss_mib()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        info = ep.train_destvi(
            model,
            engine=job["engine"],
            max_epochs=epochs,
            batch_size=job["batch_size"],
            n_epochs_kl_warmup=max(1, epochs // 2),
            device=device,
        )
    steps_per_epoch = math.ceil(n_obs / job["batch_size"])
    wall, cpu = info["epoch_wall"], info["epoch_cpu"]
    return {
        **{k: job[k] for k in ("what", "engine", "batch_size")},
        "n_obs": n_obs,
        "epochs": epochs,
        "n_steps": info["n_steps"],
        "steps_per_epoch": steps_per_epoch,
        "epoch_s": float(np.median(wall[1:])),
        "warmup_s": float(wall[0]),
        "cpu_epoch_s": float(np.median(cpu[1:])),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": rss_before,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
    }


def _prepare_reference(data: str, device: str, model_dir: Path) -> None:
    """Train the CondSCVI reference once (stock, short: its quality does not matter here) and save it."""
    import torch

    from tests.benchmarks import engine_problems as ep

    ep.quiet()
    problem = ep.load_problem(data)
    sc_model, _ = ep.train_reference(problem, engine="scvi", device=device, max_epochs=20)
    prior = ep.freeze_vamp_prior(sc_model)
    sc_model.save(str(model_dir), overwrite=True, save_anndata=False)
    torch.save(prior, model_dir / "vamp_prior.pt")


def _run_child(job: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_engine", "--child", json.dumps(job)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child failed ({job}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def _summarise(results: list[dict[str, Any]], engines: list[str]) -> list[dict[str, Any]]:
    """Median over repeats per (what, batch, engine), with the speed-up over stock."""
    rows = []
    keys = sorted({(r["what"], r["batch_size"]) for r in results}, key=lambda k: (k[0] != "destvi", k[1]))
    for what, batch in keys:
        stock = None
        for engine in engines:
            runs = [r for r in results if (r["what"], r["batch_size"], r["engine"]) == (what, batch, engine)]
            if not runs:
                continue
            spe = runs[0]["steps_per_epoch"]
            epoch_s = float(np.median([r["epoch_s"] for r in runs]))
            cpu_s = float(np.median([r["cpu_epoch_s"] for r in runs]))
            row = {
                "what": what,
                "batch": batch,
                "engine": engine,
                "steps_per_epoch": spe,
                "ms_per_step": 1e3 * epoch_s / spe,
                "s_per_epoch": epoch_s,
                "cpu_ms_per_step": 1e3 * cpu_s / spe,
                "warmup_s": float(np.median([r["warmup_s"] - r["epoch_s"] for r in runs])),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "train_rss_mib": max(r["peak_rss_mib"] - r["rss_before_mib"] for r in runs),
                "cuda_peak_mib": runs[0]["cuda_peak_mib"],
                "repeats": len(runs),
            }
            if engine == "scvi":
                stock = row
            row["speedup"] = stock["ms_per_step"] / row["ms_per_step"] if stock else float("nan")
            row["cpu_speedup"] = stock["cpu_ms_per_step"] / row["cpu_ms_per_step"] if stock else float("nan")
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], device: str) -> str:
    memory = "CUDA peak MiB" if device.startswith("cuda") else "peak RSS MiB (+training)"
    lines = [
        "| model | batch | engine | ms/step | s/epoch | speed-up | CPU ms/step | CPU speed-up | warm-up s "
        f"| {memory} |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if device.startswith("cuda"):
            mem = f"{r['cuda_peak_mib']:.0f}"
        else:
            mem = f"{r['peak_rss_mib']:.0f} (+{r['train_rss_mib']:.0f})"
        model = "destVI" if r["what"] == "destvi" else "CondSCVI"
        lines.append(
            f"| {model} | {r['batch']} | {r['engine']} | {r['ms_per_step']:.2f} | {r['s_per_epoch']:.3f} | "
            f"{r['speedup']:.2f}x | {r['cpu_ms_per_step']:.2f} | {r['cpu_speedup']:.2f}x | "
            f"{r['warmup_s']:.1f} | {mem} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--data", default="starmap", choices=["starmap", "synthetic", "merfish-like"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--amortization", default="both", choices=["both", "latent"])
    parser.add_argument("--variant", default="2022", choices=list(VARIANTS), help="the adapter's destVI variant")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--min-steps", type=int, default=240, help="measured steps per run (after warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in every run (0: torch's default)")
    parser.add_argument("--no-reference", action="store_true", help="skip the CondSCVI rows")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "reference"
        _prepare_reference(args.data, device, model_dir)
        common = {"data": args.data, "device": device, "threads": args.threads, "min_steps": args.min_steps}
        destvi = {**common, "what": "destvi", "amortization": args.amortization, "variant": args.variant}
        jobs = [{**destvi, "engine": e, "batch_size": b} for b in args.batch_sizes for e in args.engines]
        if not args.no_reference:
            jobs += [{**common, "what": "reference", "engine": e, "batch_size": 128} for e in args.engines]
        for repeat in range(args.repeats):
            for job in jobs:
                result = _run_child({**job, "model_dir": str(model_dir)})
                results.append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] {job['what']} {job['engine']} batch {job['batch_size']}: "
                    f"{1e3 * result['epoch_s'] / result['steps_per_epoch']:.2f} ms/step",
                    file=sys.stderr,
                    flush=True,
                )
    rows = _summarise(results, args.engines)
    if args.out:
        args.out.write_text(json.dumps({"variant": args.variant, "rows": rows, "runs": results}, indent=1))
    load = os.getloadavg()
    print(
        f"\n{args.data}, device {device}, variant {args.variant}, amortization {args.amortization}, torch threads "
        f"{results[0]['threads']}, {args.repeats} repeats, load average at the end {load[0]:.1f} "
        f"on {os.cpu_count()} CPUs, {time.perf_counter() - start:.0f} s in all\n"
    )
    print(markdown(rows, device))


if __name__ == "__main__":
    main()

"""Benchmark (not a test): what the accuracy trajectory costs a destVI task's training (issue 37).

A destVI task scores its model 50 times while it trains (`TrajectoryProbe.take`: the model's proportions
on the spots, then `toolkit.task.trajectory_scorer`). A full starmap-189 batch-8 task is 2,500 epochs x
24 steps = 60,000 steps, minutes even compiled, so the cost is measured in two affordable parts:

(a) one scoring, repeated many times on the real 189 spots after a short training, and the ms per
    training step of the same task (fast engine, eager and compiled); the overhead of N scorings over a
    run of S steps is N x scoring / (S x step), computed for the full task;
(b) a direct comparison: the same task at a reduced budget (`--direct-epochs`, default 250) with the
    trajectory on (the same 50 scorings) and off, one process each, interleaved over `--direct-repeats`
    rounds. At 250 epochs the relative cost is 10x what it is at 2,500 (same scorings, a tenth of the
    steps); its extra seconds per scoring should match (a)'s scoring time.

Every measurement runs in its own process with `--threads` torch threads (1: what a task of a 2-core
sweep gets), CPU time beside wall time (a busy machine disturbs wall time far more). The first epoch
(compilation) is left out of every per-step and direct figure. Measures, never asserts a time.

    .venv/bin/python -m tests.benchmarks.bench_trajectory                       # (a) and (b), STARmap
    .venv/bin/python -m tests.benchmarks.bench_trajectory --direct-repeats 0    # (a) only
    .venv/bin/python -m tests.benchmarks.bench_trajectory --quick               # smoke run, tiny data
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FULL_EPOCHS = 2500
"""The study task whose overhead is asked for: starmap-189 at 2,500 epochs."""


def _problem(data: str) -> Any:
    """STARmap (real, 189 spots) or `tiny` (a small simulation, for the smoke run)."""
    from tests.benchmarks import engine_problems as ep

    if data == "tiny":
        return ep.synthetic_problem(n_reference_cells=300, n_genes=60)
    return ep.load_problem(data)


def _prepare_reference(data: str, model_dir: Path, epochs: int) -> None:
    """Train the CondSCVI reference once (short: its quality does not change the cost) and save it."""
    import torch

    from tests.benchmarks import engine_problems as ep

    ep.quiet()
    sc_model, _ = ep.train_reference(_problem(data), engine="fast", max_epochs=epochs)
    prior = ep.freeze_vamp_prior(sc_model)
    sc_model.save(str(model_dir), overwrite=True, save_anndata=False)
    torch.save(prior, model_dir / "vamp_prior.pt")


def _model(job: dict[str, Any]) -> tuple[Any, Any]:
    """The task's DestVI (2022 variant, seed 0) from the saved reference, and the problem."""
    import torch
    from scvi.model import CondSCVI

    from tests.benchmarks import engine_problems as ep

    problem = _problem(job["data"])
    sc_model = CondSCVI.load(job["model_dir"], adata=problem.reference.copy(), accelerator="cpu")
    prior = torch.load(Path(job["model_dir"]) / "vamp_prior.pt")
    sc_model.get_vamp_prior = lambda *a, **k: {key: value.clone() for key, value in prior.items()}
    return ep.make_destvi(problem, sc_model, seed=0, amortization=job["amortization"]), problem


def _probe(model: Any, problem: Any, amortization: str, total_steps: int, points: int) -> Any:
    """The probe exactly as the destVI adapter builds it (its proportions, the task's scorer)."""
    from tests.benchmarks import engine_problems as ep
    from toolkit.engines.trajectory import TrajectoryProbe, scoring_steps
    from toolkit.methods.destvi import proportions
    from toolkit.task import trajectory_scorer

    score = trajectory_scorer(ep.scoring_spots(problem))
    return TrajectoryProbe(scoring_steps(total_steps, points), lambda: score(proportions(model, amortization)))


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _child(job: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process: `scoring`, `steps` or `direct` (see the module's docstring)."""
    import torch

    from tests.benchmarks import engine_problems as ep

    ep.quiet()
    torch.set_num_threads(job["threads"])
    model, problem = _model(job)
    n_obs, batch = problem.spots.n_obs, job["batch_size"]
    per_epoch = math.ceil(n_obs / batch)
    common = {"batch_size": batch, "n_epochs_kl_warmup": job["kl_warmup"], "device": "cpu"}
    out: dict[str, Any] = {**job, "n_obs": n_obs, "steps_per_epoch": per_epoch, "threads": torch.get_num_threads()}
    if job["what"] == "scoring":
        from toolkit.methods.destvi import proportions
        from toolkit.task import trajectory_scorer

        ep.train_destvi(model, engine="fast", max_epochs=job["epochs"], **common)  # a model part trained
        probe = _probe(model, problem, job["amortization"], 1, 1)
        module = model.module
        predicted = proportions(model, job["amortization"])
        score = trajectory_scorer(ep.scoring_spots(problem))  # the scorer alone, on fixed proportions
        timings: dict[str, list[tuple[float, float]]] = {"take": [], "proportions": [], "scorer": []}
        for i in range(job["repeats"]):
            w, c = _clocks()
            probe.take(module, i + 1, 0.0)
            timings["take"].append((time.perf_counter() - w, time.process_time() - c))
            w, c = _clocks()
            with torch.no_grad():
                proportions(model, job["amortization"])
            timings["proportions"].append((time.perf_counter() - w, time.process_time() - c))
            w, c = _clocks()
            score(predicted)
            timings["scorer"].append((time.perf_counter() - w, time.process_time() - c))
        for name, pairs in timings.items():
            out[f"{name}_wall"] = [p[0] for p in pairs]
            out[f"{name}_cpu"] = [p[1] for p in pairs]
        return out
    probe = None
    if job["points"]:
        total = job["epochs"] * per_epoch
        probe = _probe(model, problem, job["amortization"], total, job["points"])
    info = ep.train_destvi(model, engine=job["engine"], max_epochs=job["epochs"], trajectory=probe, **common)
    out.update(
        n_steps=info["n_steps"],
        epoch_wall=info["epoch_wall"].tolist(),
        epoch_cpu=info["epoch_cpu"].tolist(),
        scorings=len(probe.points) if probe else 0,
        scorings_after_first_epoch=sum(p["epoch"] > 1 for p in probe.points) if probe else 0,
    )
    return out


def _run_child(job: dict[str, Any], in_process: bool = False) -> dict[str, Any]:
    """One measurement in a fresh process (clean caches and compilation); in this one for the smoke run."""
    if in_process:
        return json.loads(json.dumps(_child(job)))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_trajectory", "--child", json.dumps(job)],
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


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def _ms(values: list[float]) -> str:
    """Median and interquartile range in ms."""
    q1, med, q3 = np.percentile(np.asarray(values) * 1e3, [25, 50, 75])
    return f"{med:.2f} ({q1:.2f}-{q3:.2f})"


def _steady(run: dict[str, Any], clock: str) -> float:
    """Seconds of the run after its first epoch (compilation and warm-up left out)."""
    return float(np.sum(run[f"epoch_{clock}"][1:]))


def report(scoring: list[dict], steps: list[dict], direct: list[dict], args: argparse.Namespace) -> str:
    """The markdown tables: (a) scoring and step times with the overhead they predict, (b) the direct runs."""
    lines = [
        f"(a) One scoring (`probe.take`) and its parts, ms: median (interquartile range) over {args.repeats} repeats",
        "",
        "| amortization | clock | probe.take | proportions | scorer |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    score_s: dict[tuple[str, str], float] = {}
    for run in scoring:
        for clock in ("wall", "cpu"):
            cells = " | ".join(_ms(run[f"{part}_{clock}"]) for part in ("take", "proportions", "scorer"))
            lines.append(f"| {run['amortization']} | {clock} | {cells} |")
            score_s[run["amortization"], clock] = float(np.median(run[f"take_{clock}"]))
    full_steps = FULL_EPOCHS * (steps[0]["steps_per_epoch"] if steps else 24)
    lines += [
        "",
        f"ms per training step (median steady epoch / steps; first epoch left out; batch {args.batch_size}), "
        f"and the overhead of {args.points} scorings over {FULL_EPOCHS:,} epochs ({full_steps:,} steps) and over "
        f"{args.direct_epochs} epochs",
        "",
        "| amortization | engine | clock | runs | ms/step | one scoring in steps | overhead, "
        f"{FULL_EPOCHS:,} epochs | overhead, {args.direct_epochs} epochs |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    keys = sorted({(r["amortization"], r["engine"]) for r in steps})
    for amortization, engine in keys:
        runs = [r for r in steps if (r["amortization"], r["engine"]) == (amortization, engine)]
        per_epoch = runs[0]["steps_per_epoch"]
        for clock in ("wall", "cpu"):
            step_s = float(np.median([np.median(r[f"epoch_{clock}"][1:]) for r in runs])) / per_epoch
            one = score_s.get((amortization, clock), float("nan"))
            full = args.points * one / (FULL_EPOCHS * per_epoch * step_s)
            reduced = args.points * one / (args.direct_epochs * per_epoch * step_s)
            lines.append(
                f"| {amortization} | {engine} | {clock} | {len(runs)} | {1e3 * step_s:.2f} | {one / step_s:.1f} | "
                f"{100 * full:.2f}% | {100 * reduced:.1f}% |"
            )
    if direct:
        lines += [
            "",
            f"(b) Direct: {args.direct_epochs} epochs, {direct[0]['engine']}, amortization "
            f"{direct[0]['amortization']}, trajectory off vs on ({args.points} scorings), one process each, "
            "interleaved; seconds after the first epoch",
            "",
            "| round | clock | off s | on s | overhead | extra ms per scoring |",
            "| ---: | --- | ---: | ---: | ---: | ---: |",
        ]
        rounds = sorted({r["round"] for r in direct})
        for clock in ("wall", "cpu"):
            ratios = []
            for n in rounds:
                off = [r for r in direct if r["round"] == n and not r["points"]]
                on = [r for r in direct if r["round"] == n and r["points"]]
                if not off or not on:
                    continue
                off_s, on_s = _steady(off[0], clock), _steady(on[0], clock)
                scorings = max(on[0]["scorings_after_first_epoch"], 1)
                ratios.append(on_s / off_s - 1)
                lines.append(
                    f"| {n} | {clock} | {off_s:.1f} | {on_s:.1f} | {100 * (on_s / off_s - 1):+.1f}% | "
                    f"{1e3 * (on_s - off_s) / scorings:+.1f} |"
                )
            if ratios:
                lines.append(f"| median | {clock} | | | {100 * float(np.median(ratios)):+.1f}% | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="starmap", choices=["starmap", "synthetic", "tiny"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--amortizations", nargs="+", default=["both", "latent"], choices=["both", "latent"])
    parser.add_argument("--engines", nargs="+", default=["fast", "fast-compiled"], choices=["fast", "fast-compiled"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every run")
    parser.add_argument("--repeats", type=int, default=200, help="scorings timed per amortization")
    parser.add_argument("--train-epochs", type=int, default=20, help="epochs trained before the scorings are timed")
    parser.add_argument("--step-epochs", type=int, default=21, help="epochs per ms/step run (first left out)")
    parser.add_argument("--step-repeats", type=int, default=2, help="ms/step runs per (amortization, engine)")
    parser.add_argument("--points", type=int, default=50, help="scorings per run, as a task takes them")
    parser.add_argument("--direct-epochs", type=int, default=250)
    parser.add_argument("--direct-repeats", type=int, default=3, help="off/on pairs (0: no direct comparison)")
    parser.add_argument("--direct-engine", default="fast-compiled", choices=["fast", "fast-compiled"])
    parser.add_argument("--direct-amortization", default="both", choices=["both", "latent"])
    parser.add_argument("--reference-epochs", type=int, default=20)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run in seconds: tiny data, eager, one process, no figures"
    )
    parser.add_argument("--out", type=Path, help="also write every run as JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if args.quick:
        args.data, args.amortizations, args.engines, args.direct_engine = "tiny", ["both"], ["fast"], "fast"
        args.repeats, args.train_epochs, args.step_epochs, args.step_repeats = 3, 1, 2, 1
        args.direct_epochs, args.direct_repeats, args.reference_epochs, args.points = 3, 1, 2, 5
    start, load_start = time.perf_counter(), _load()
    scoring: list[dict] = []
    steps: list[dict] = []
    direct: list[dict] = []

    def run(job: dict[str, Any], into: list[dict]) -> None:
        result = _run_child(job, in_process=args.quick)
        into.append(result)
        if args.out:  # after every run: on a busy machine a long benchmark may be stopped part way
            args.out.write_text(json.dumps({"scoring": scoring, "steps": steps, "direct": direct}, indent=1))
        print(
            f"{job['what']} {job.get('engine', '')} {job['amortization']} points {job.get('points', '-')}: "
            f"done ({_load()})",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "reference"
        _prepare_reference(args.data, model_dir, args.reference_epochs)
        common = {
            "data": args.data,
            "model_dir": str(model_dir),
            "threads": args.threads,
            "batch_size": args.batch_size,
            "kl_warmup": 200,
        }
        for amortization in args.amortizations:
            job = {**common, "what": "scoring", "amortization": amortization, "engine": "fast"}
            run({**job, "epochs": args.train_epochs, "repeats": args.repeats}, scoring)
        for _ in range(args.step_repeats):
            for amortization in args.amortizations:
                for engine in args.engines:
                    job = {**common, "what": "steps", "amortization": amortization, "engine": engine}
                    run({**job, "epochs": args.step_epochs, "points": 0}, steps)
        for n in range(1, args.direct_repeats + 1):
            for points in (0, args.points) if n % 2 else (args.points, 0):  # alternate which side goes first
                job = {**common, "what": "direct", "amortization": args.direct_amortization}
                run(
                    {**job, "engine": args.direct_engine, "epochs": args.direct_epochs, "points": points, "round": n},
                    direct,
                )
    print(
        f"\n{args.data}, batch {args.batch_size}, torch threads {args.threads}, CPU; {_load_line(load_start)} on "
        f"{os.cpu_count()} CPUs; {time.perf_counter() - start:.0f} s in all\n"
    )
    print(report(scoring, steps, direct, args))


def _load_line(load_start: str) -> str:
    return f"{load_start} at the start, {_load()} at the end (1-minute load average)"


if __name__ == "__main__":
    main()

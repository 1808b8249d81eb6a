"""GPU check (benchmark, not a test): the fast engine's figures on one GPU, in one command of about 9 minutes.

Four sections, in this order; each keeps its own time budget (a measurement that would not fit is
recorded as skipped), a deadline over the whole run caps them all (`--total`), and the JSON and markdown
are rewritten after EACH section, so that a run cut short still leaves what it measured:

1. `steps`: ms per step, stock scvi-tools against the fast engine (eager and every compiled mode: CUDA
   graphs, reduce-overhead, inductor's default mode), on real STARmap (189 spots; batch 8, 32, 128) and
   on the merfish-like tissue at the study's size (about 27,000 spots; batch 32, 128, 1,024), with the
   ratio to stock measured in the same run. The figures the goals need come first (STARmap batch 8, then
   27,000 spots at batch 32); a mode that fails once is not tried again.
2. `equivalence`: every compiled mode that ran against fast eager (stock's twin: results/engine.md) on
   real STARmap, 200 epochs, 3 seeds, batch 8 (and 128 where the budget allows): the mean over seeds of
   the per-cell-type PCC. A mode passes when its mean is within EQUIVALENCE_TOLERANCE of eager's (the
   larger of 0.02 and twice the seed sd) at every batch compared.
3. `runtime_table`: per-epoch time on the merfish-like tissue at batch 32 ... 1,024 with the fastest mode
   that passed `equivalence` (eager when none did), extrapolated to 2,500 epochs, beside stock here and
   the study's RTX 3090.
4. `packing`: K = 1, 2, 4, 8, 16 fits of that mode sharing the GPU (one process each, as `pack: K` runs
   them), without and then with the CUDA MPS daemon (when `nvidia-cuda-mps-control` is there and starts):
   configuration-steps per second in all, the ratio to K x one fit, and peak GPU memory per fit.

Then `goals`: the issue's four goals read off the rows above (no measurement of its own).

Timing runs take at most `--limit-batches` minibatches per epoch, one warm-up epoch (compilation,
capture) and the median of the rest; compiled modes time full batches only (the last, smaller batch
would compile a second shape), stock and eager the epoch as it comes. Every measurement runs in a
spawned worker process (a failing mode costs that measurement, not the run), and the main process never
touches CUDA, so that MPS can start between rounds. The merfish-like reference is small (its size changes
nothing in a destVI step but the decoder's training, which is not timed).

On the GPU machine (Python 3.12 with its own torch; no package registry; no ../shared), in two steps
(tests/benchmarks/gpu_check.sh; the exact device call is in results/engine.md, "On a GPU"):

    bash tests/benchmarks/gpu_check.sh pack       # here: .gpu/wheels and .gpu/starmap (the STARmap files)
    bash tests/benchmarks/gpu_check.sh run "$OUT" # there, with .gpu carried: ~9 min, files in $OUT
    bash tests/benchmarks/gpu_check.sh rehearse   # here, on the CPU: the whole script at toy sizes
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

STUDY_RTX3090_MIN = {32: 211, 48: 104, 64: 86, 128: 36, 256: 21, 512: 11, 1024: 10}
"""The study's destVI training times on one RTX 3090 (27,395 spots, 2,500 epochs), in minutes."""
EQUIVALENCE_TOLERANCE = 0.02
"""A compiled mode's mean PCC over seeds may differ from eager's by max(this, 2 x the seed sd). On the CPU
(results/engine.md, 300 epochs, 3 seeds) compiled and stock means differed by at most 0.0094, with seed sds
of 0.004-0.044 on real STARmap: 0.02 passes what was seen there and fails a mode that trains differently."""
GOALS = {"starmap_8": 10.0, "merfish_32": 25.0, "batch_32_minutes": 10.0, "table_hours": 1.0, "packing": 0.7}
"""Issue 41's goals: x stock per step (STARmap batch 8; 27,000 spots batch 32), the study's batch-32 run in
minutes, its seven runtime-table runs in hours, and K packed fits' throughput as a fraction of K x one."""
FULL = {
    "starmap_batches": [8, 32, 128],
    "merfish_batches": [32, 128, 1024],
    "table_batches": [32, 48, 64, 128, 256, 512, 1024],
    "pack_k": [1, 16, 4, 2, 8],
    "pack_batch": 8,
    "equivalence_batches": [8, 128],
    "equivalence_epochs": 200,
    "seeds": 3,
    "merfish_cells": 84000,
    "merfish_reference_cells": 5000,
    "reference_epochs": 20,
    "min_timed_steps": 60,
    "workers": 8,
    "budgets_s": {"steps": 170, "equivalence": 110, "runtime_table": 60, "packing": 130},
    "total_s": 510,
}
"""The GPU run: sections' budgets sum to 470 s; with preparing the data (about 30 s) the run stays under the
510 s deadline, and with the wheels' install under 9 minutes of a 10-minute command."""
TOY = {
    "starmap_batches": [8],
    "merfish_batches": [32],
    "table_batches": [32, 64],
    "pack_k": [1, 2],
    "pack_batch": 8,
    "equivalence_batches": [32],
    "equivalence_epochs": 3,
    "seeds": 2,
    "merfish_cells": 3000,
    "merfish_reference_cells": 600,
    "reference_epochs": 2,
    "min_timed_steps": 6,
    "workers": 2,
    "budgets_s": {"steps": 120, "equivalence": 120, "runtime_table": 60, "packing": 120},
    "total_s": 900,
}
"""The CPU rehearsal (`--toy`): every section and path at sizes a 2-core machine runs in about 2 minutes."""
SECTIONS = ("steps", "equivalence", "runtime_table", "packing")
ONCE = {"fast-default"}
"""Modes `steps` times at its first batch size only: inductor's default mode on CUDA, to see whether it runs
since the fix and how fast (it lacks the CUDA graphs of the others, so it is unlikely to be the fastest)."""
REHEARSAL = "fast-rehearsal"
"""A compiled mode for the CPU rehearsal only: `compile: true` traced by dynamo and AOTAutograd and run by
their `aot_eager` backend, so that a compiled mode's whole path (make_step's compiled branch, fused Adam,
the equivalence gate, the pick of the fastest mode) runs without a C++ compiler's minutes."""


@dataclass
class Report:
    """What the run measured so far, written whole after every section."""

    out: Path
    facts: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)

    def save(self, name: str, rows: Any, table: str) -> None:
        self.sections[name] = rows
        self.tables[name] = table
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps({**self.facts, "sections": self.sections}, indent=1))
        header = f"# GPU check on {self.facts['device_name']}\n\n{_facts_line(self.facts)}\n"
        body = "\n\n".join(f"## {title}\n\n{text}" for title, text in self.tables.items())
        (self.out / "gpu_check.md").write_text(f"{header}\n{body}\n")
        print(f"[gpu_check] section {name} written to {self.out}", flush=True)


class Budget:
    """A section's seconds; `fits(estimate)` says whether a measurement may still start."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def fits(self, estimate: float) -> bool:
        return self.left() >= estimate


def _kill(pool: ProcessPoolExecutor) -> None:
    """End a pool's workers now (a hung capture or compile must not hold the run)."""
    for process in list(getattr(pool, "_processes", {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class Isolated:
    """Runs one measurement at a time in a spawned worker process, kept between measurements.

    A GPU run is a single, short, paid-for shot: a mode that fails there (a step that will not capture
    as a CUDA graph, a compile error, a CUDA error that poisons its context) or hangs must cost that
    measurement and not the run. A failed or timed-out measurement comes back as `{"error": ...}` and its
    worker is replaced, so the next one starts on a clean CUDA context.
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, fn: Callable[..., Any], timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        future = self._pool.submit(fn, **kwargs)
        done, _ = wait([future], timeout=timeout)
        if not done:
            _kill(self._pool)
            self._pool = None
            return {"error": f"timed out after {timeout:.0f} s"}
        try:
            return future.result()
        except Exception as error:  # recorded in the report; the run goes on
            self.close()
            return {"error": _describe(error)}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def run_parallel(
    fn: Callable[..., Any], jobs: list[dict[str, Any]], pool: ProcessPoolExecutor, timeout: float
) -> list[Any]:
    """`fn(**job)` for every job on `pool`; each result, its exception, or TimeoutError for a job cut off.

    On a timeout the pool's workers are killed (the caller makes a new pool for what follows)."""
    futures: list[Future] = [pool.submit(fn, **job) for job in jobs]
    _, pending = wait(futures, timeout=max(0.0, timeout), return_when="ALL_COMPLETED")
    if pending:
        _kill(pool)
    results: list[Any] = []
    for future in futures:
        if future in pending:
            results.append(TimeoutError(f"not finished within {timeout:.0f} s"))
        elif future.exception() is not None:
            results.append(future.exception())
        else:
            results.append(future.result())
    return results


def _pool(workers: int, env: dict[str, str] | None = None) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(dict(env or {}),),
    )


def _init_worker(env: dict[str, str]) -> None:
    """Before torch starts in the worker: its environment (MPS pipe folder) and quiet output."""
    os.environ.update(env)
    os.environ.setdefault("TQDM_DISABLE", "1")


def _log(row: dict[str, Any]) -> None:
    """Each measurement as it lands, so that a run cut off at its time limit keeps it in its log."""
    print(f"[gpu_check] {json.dumps(row, default=str)}", flush=True)


def _describe(error: BaseException) -> str:
    """One line for the report (the whole traceback goes to stderr, which the run's log keeps)."""
    traceback.print_exception(error)
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def _facts_line(facts: dict[str, Any]) -> str:
    return (
        f"torch {facts['torch']}, scvi-tools {facts['scvi']}, Python {facts['python']}, "
        f"{facts['cpus']} CPUs, {facts['mode']} run, {facts['elapsed_s']:.0f} s so far."
    )


def device_facts(device: str) -> dict[str, Any]:
    """Versions and the device's name, read in a worker (the main process keeps off CUDA)."""
    import scvi
    import torch

    cuda = device.startswith("cuda")
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or 'cpu'})",
        "torch": torch.__version__,
        "scvi": scvi.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "inductor_env": {k: v for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR")},
    }


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; a CPU -> 'cpu': the results folder's suffix."""
    found = re.search(r"\b([A-Z]{1,2}\d{2,4})\b", name)
    return found.group(1).lower() if found and not name.startswith("CPU") else "cpu"


# ------------------------------------------------------------------------------------------------
# data and models


@dataclass
class Prepared:
    """A problem on disk (spots, reference, truth, a short CondSCVI with a frozen vamp prior)."""

    name: str
    folder: Path
    n_spots: int


def prepare(name: str, folder: Path, device: str, sizes: dict[str, int], reference_epochs: int) -> Prepared:
    """Build the problem once and save it, so that worker processes load instead of rebuilding."""
    import anndata
    import torch

    from tests.benchmarks import engine_problems as ep

    ep.quiet()
    # pandas 3 (the GPU machine's) makes string columns nullable strings, which anndata writes only on request
    anndata.settings.allow_write_nullable_strings = True
    problem = ep.load_problem(name, **sizes)
    folder.mkdir(parents=True, exist_ok=True)
    problem.spots.write_h5ad(folder / "spots.h5ad")
    problem.reference.write_h5ad(folder / "reference.h5ad")
    problem.truth.to_csv(folder / "truth.csv")
    sc_model, _ = ep.train_reference(problem, engine="fast", device=device, max_epochs=reference_epochs)
    prior = ep.freeze_vamp_prior(sc_model)
    sc_model.save(str(folder / "model"), overwrite=True, save_anndata=False)
    torch.save(prior, folder / "vamp_prior.pt")
    return Prepared(name, folder, problem.spots.n_obs)


def load(folder: Path, device: str) -> tuple[Any, Any]:
    """(problem, CondSCVI with its frozen vamp prior, float32 as the adapter hands it) from `prepare`'s folder."""
    import anndata as ad
    import pandas as pd
    import torch
    from scvi.model import CondSCVI

    from tests.benchmarks import engine_problems as ep

    reference = ad.read_h5ad(folder / "reference.h5ad")
    problem = ep.Problem(
        folder.name, reference, ad.read_h5ad(folder / "spots.h5ad"), pd.read_csv(folder / "truth.csv", index_col=0)
    )
    sc_model = CondSCVI.load(
        str(folder / "model"), adata=reference.copy(), accelerator="gpu" if device.startswith("cuda") else "cpu"
    )
    prior = {key: value.float() for key, value in torch.load(folder / "vamp_prior.pt").items()}
    sc_model.get_vamp_prior = lambda *a, **k: {key: value.clone() for key, value in prior.items()}
    return problem, sc_model


@contextlib.contextmanager
def rehearsal_backend(engine: str) -> Iterator[None]:
    """For REHEARSAL only: torch.compile runs with the `aot_eager` backend (no inductor, no C++ compiler)."""
    if engine != REHEARSAL:
        yield
        return
    import torch

    compile_for_real = torch.compile
    torch.compile = lambda fn, **options: compile_for_real(fn, backend="aot_eager", dynamic=False)
    try:
        yield
    finally:
        torch.compile = compile_for_real


def compiled(engine: str) -> bool:
    from tests.benchmarks import engine_problems as ep

    return engine != "scvi" and bool(ep.FAST_ENGINES[engine])


def timing_plan(n_spots: int, batch: int, engine: str, limit: int, min_steps: int) -> tuple[int, int, int]:
    """(steps per epoch of training, timed steps per epoch, epochs): compiled modes time full batches only."""
    spe = math.ceil(n_spots / batch)
    full = n_spots // batch
    per_epoch = min(limit, full if compiled(engine) and full else spe)
    return spe, per_epoch, 1 + max(3, math.ceil(min_steps / per_epoch))


def timed_fit(
    folder: str, device: str, engine: str, batch_size: int, limit: int, min_steps: int, seed: int = 0
) -> dict[str, Any]:
    """One destVI fit, timed per epoch after a warm-up epoch; a module-level function for worker processes."""
    import torch

    from tests.benchmarks import engine_problems as ep

    ep.quiet()
    problem, sc_model = load(Path(folder), device)
    model = ep.make_destvi(problem, sc_model, seed=seed, amortization="both")
    spe, per_epoch, epochs = timing_plan(problem.spots.n_obs, batch_size, engine, limit, min_steps)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with rehearsal_backend(engine):
        info = ep.train_destvi(
            model,
            engine=engine,
            max_epochs=epochs,
            batch_size=batch_size,
            n_epochs_kl_warmup=max(1, epochs // 2),
            device=device,
            limit_batches=per_epoch if per_epoch < spe else None,
            seed=seed if engine != "scvi" else None,
        )
    wall = info["epoch_wall"]
    return {
        "engine": engine,
        "batch": batch_size,
        "steps_per_epoch": spe,
        "timed_steps_per_epoch": per_epoch,
        "ms_per_step": 1e3 * float(np.median(wall[1:])) / per_epoch,
        "warmup_s": float(wall[0]),
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


# ------------------------------------------------------------------------------------------------
# section 1: steps


def engines_for(device: str, toy: bool) -> list[str]:
    """What each device times, the modes the goals most likely need first (a failing one cannot eat their budget).

    On CUDA `fast-compiled` (compile: true) runs as reduce-overhead, so it is not timed twice; `fast-default`
    is inductor's default mode, which `compile: true` was before the H200 check. On the CPU the toy run asks
    for CUDA graphs, which refuse a CPU by design (the path of a mode that fails: an error row, not tried
    again), and REHEARSAL stands for the compiled modes."""
    if device.startswith("cuda"):
        return ["scvi", "fast", "fast-cudagraphs", "fast-reduce-overhead", "fast-default"]
    return ["scvi", "fast", "fast-cudagraphs", REHEARSAL] if toy else ["scvi", "fast", "fast-compiled"]


def section_steps(
    problems: dict[str, Prepared],
    cfg: dict,
    device: str,
    engines: list[str],
    limit: int,
    budget: Budget,
    run: Isolated | None,
    data: tuple[str, ...] = ("starmap", "merfish-like"),
) -> list[dict[str, Any]]:
    """STARmap batch 8 and 27,000 spots at batch 32 first (the goals), then the other batch sizes."""
    first = [("starmap", b) for b in cfg["starmap_batches"][:1]] + [
        ("merfish-like", b) for b in cfg["merfish_batches"][:1]
    ]
    rest = [("starmap", b) for b in cfg["starmap_batches"][1:]] + [
        ("merfish-like", b) for b in cfg["merfish_batches"][1:]
    ]
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for n, (name, batch) in enumerate([(name, batch) for name, batch in first + rest if name in data]):
        stock = None
        for engine in engines:
            key = {"data": name, "engine": engine, "batch": batch}
            if engine in ONCE and n > 0:
                continue
            if engine in failed:
                rows.append({**key, "skipped": f"failed at {failed[engine]}"})
                continue
            if run is None or not budget.fits(_estimate(rows, engine, limit)):
                rows.append({**key, "skipped": "budget"})
                continue
            job = {"folder": str(problems[name].folder), "device": device, "engine": engine, "batch_size": batch}
            row = {
                "data": name,
                **run(timed_fit, timeout=budget.left() + 60, **job, limit=limit, min_steps=cfg["min_timed_steps"]),
            }
            if "error" in row:
                failed[engine] = f"{name} batch {batch}"
                rows.append({**key, "error": row["error"]})
                _log(rows[-1])
                continue
            stock = row if engine == "scvi" else stock
            row["speedup"] = stock["ms_per_step"] / row["ms_per_step"] if stock else None
            rows.append(row)
            _log(row)
    return rows


def _estimate(rows: list[dict[str, Any]], engine: str, limit: int) -> float:
    """Seconds the next timing run may take: the slowest so far of this engine, or 30 s before any."""
    seen = [
        r["warmup_s"] + 5 * r["ms_per_step"] * limit / 1e3 + 5
        for r in rows
        if r.get("engine") == engine and "warmup_s" in r
    ]
    return max(seen) if seen else 30.0


# ------------------------------------------------------------------------------------------------
# section 2: equivalence


def equivalence_fit(folder: str, device: str, engine: str, batch_size: int, epochs: int, seed: int) -> dict[str, Any]:
    """A full fit from `scvi.settings.seed = seed`, as the adapter runs one, scored per cell type."""
    import scvi

    from tests.benchmarks import engine_problems as ep
    from toolkit.metrics import li2022_prediction, score

    ep.quiet()
    problem, sc_model = load(Path(folder), device)
    scvi.settings.seed = seed
    model = ep.make_destvi(problem, sc_model, seed=seed, amortization="both")
    with rehearsal_backend(engine):
        info = ep.train_destvi(model, engine=engine, max_epochs=epochs, batch_size=batch_size, device=device)
    prepared = li2022_prediction(ep.proportions(model, "both"), problem.truth.columns)
    per_type = score(problem.truth, prepared).per_cell_type["pcc"]
    return {
        "engine": engine,
        "batch": batch_size,
        "seed": seed,
        "seconds": info["seconds"],
        "mean_pcc": float(per_type.fillna(0.0).mean()),
        "pcc": {str(k): float(v) for k, v in per_type.items()},
    }


def ran(step_rows: list[dict[str, Any]], engine: str) -> bool:
    """The engine was timed at least once and never failed."""
    mine = [r for r in step_rows if r.get("engine") == engine]
    return any("ms_per_step" in r for r in mine) and not any("error" in r for r in mine)


def compared_modes(step_rows: list[dict[str, Any]], engines: list[str]) -> list[str]:
    """Eager first (the reference), then every compiled mode that ran in `steps`."""
    return ["fast"] + [e for e in engines if e not in ("scvi", "fast") and compiled(e) and ran(step_rows, e)]


def _fit_estimate(step_rows: list[dict[str, Any]], engine: str, n_spots: int, batch: int, epochs: int) -> float:
    """Seconds of one equivalence fit: its warm-up (compilation) plus its steps at the timed rate, plus loading."""
    mine = [r for r in step_rows if r.get("engine") == engine and "ms_per_step" in r and r.get("data") == "starmap"]
    if not mine:
        return 60.0
    nearest = min(mine, key=lambda r: abs(math.log(r["batch"] / batch)))
    steps = epochs * math.ceil(n_spots / batch)
    return max(r["warmup_s"] for r in mine) + steps * nearest["ms_per_step"] / 1e3 + 10.0


def plan_equivalence(
    step_rows: list[dict[str, Any]], cfg: dict, n_spots: int, modes: list[str], seconds: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """The jobs that fit `seconds` (whole batch sizes, all modes and seeds, in order), and what was left out."""
    workers, jobs, left_out, load = cfg["workers"], [], [], 0.0
    for batch in cfg["equivalence_batches"]:
        group = [
            {"engine": e, "batch_size": batch, "epochs": cfg["equivalence_epochs"], "seed": s}
            for s in range(cfg["seeds"])
            for e in modes
        ]
        costs = [_fit_estimate(step_rows, j["engine"], n_spots, batch, j["epochs"]) for j in group]
        wall = 1.5 * (load + sum(costs)) / min(workers, len(jobs) + len(group)) + max(costs)  # 1.5: GPU shared
        if wall <= seconds:
            jobs += group
            load += sum(costs)
        else:
            left_out.append(f"batch {batch} (about {wall:.0f} s with the batches before it)")
    return jobs, left_out


def section_equivalence(
    problem: Prepared, step_rows: list[dict[str, Any]], cfg: dict, device: str, engines: list[str], budget: Budget
) -> list[dict[str, Any]]:
    """Every compiled mode that ran against fast eager: mean PCC over seeds, same epochs and batch sizes."""
    modes = compared_modes(step_rows, engines)
    jobs, left_out = plan_equivalence(step_rows, cfg, problem.n_spots, modes, budget.left())
    rows: list[dict[str, Any]] = [{"batch": "-", "engine": "-", "skipped": f"budget: {s}"} for s in left_out]
    if not jobs:
        return rows
    workers = min(cfg["workers"], len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = _pool(workers, {"OMP_NUM_THREADS": str(threads)})
    common = {"folder": str(problem.folder), "device": device}
    results = run_parallel(equivalence_fit, [{**common, **job} for job in jobs], pool, budget.left())
    pool.shutdown(wait=False, cancel_futures=True)
    runs = [r for r in results if isinstance(r, dict)]
    for job, result in zip(jobs, results, strict=True):
        key, seed = {"batch": job["batch_size"], "engine": job["engine"]}, f"seed {job['seed']}"
        if isinstance(result, TimeoutError):  # cut off by the budget: no verdict from it, not a failure
            rows.append({**key, "skipped": f"{seed}: {result}"})
        elif isinstance(result, BaseException):
            rows.append({**key, "error": f"{seed}: {_describe(result)}"})
    for batch in cfg["equivalence_batches"]:
        eager = [r["mean_pcc"] for r in runs if r["batch"] == batch and r["engine"] == "fast"]
        for engine in modes:
            values = [r["mean_pcc"] for r in runs if r["batch"] == batch and r["engine"] == engine]
            if not values:
                continue
            sd = float(max(np.std(values), np.std(eager))) if eager else float("nan")
            tolerance = max(EQUIVALENCE_TOLERANCE, 2 * sd)
            gap = float(np.mean(values) - np.mean(eager)) if eager else float("nan")
            comparable = engine != "fast" and len(eager) >= 2 and len(values) >= 2
            rows.append(
                {
                    "batch": batch,
                    "engine": engine,
                    "epochs": cfg["equivalence_epochs"],
                    "seeds": len(values),
                    "mean_pcc": float(np.mean(values)),
                    "sd_pcc": float(np.std(values)),
                    "gap_to_eager": gap,
                    "tolerance": tolerance,
                    "passes": bool(abs(gap) <= tolerance) if comparable else None,
                    "train_s": float(
                        np.median([r["seconds"] for r in runs if r["batch"] == batch and r["engine"] == engine])
                    ),
                    "runs": [r for r in runs if r["batch"] == batch and r["engine"] == engine],
                }
            )
    return rows


def passed_modes(equivalence_rows: list[dict[str, Any]]) -> list[str]:
    """Eager, and each compiled mode that passed at every batch compared (and failed none of its fits)."""
    verdicts: dict[str, list[bool | None]] = {}
    for row in equivalence_rows:
        if row.get("engine") not in (None, "-", "fast"):
            verdicts.setdefault(row["engine"], []).append(False if "error" in row else row.get("passes"))
    return ["fast"] + [e for e, v in verdicts.items() if v and all(x is True for x in v)]


# ------------------------------------------------------------------------------------------------
# section 3: the runtime table


def best_fast(rows: list[dict[str, Any]], data: str, allowed: list[str] | None = None) -> str:
    """The fast mode (among `allowed`) with the lowest ms/step on `data`, summed over the batches all measured."""
    measured: dict[str, dict[int, float]] = {}
    for r in rows:
        if (
            r.get("data") == data
            and "ms_per_step" in r
            and r["engine"] != "scvi"
            and r["engine"] in (allowed or [r["engine"]])
        ):
            measured.setdefault(r["engine"], {})[r["batch"]] = r["ms_per_step"]
    if not measured:
        return "fast"
    shared = set.intersection(*(set(by_batch) for by_batch in measured.values()))
    return min(measured, key=lambda engine: sum(measured[engine][b] for b in shared))


def table_engine(step_rows: list[dict[str, Any]], passed: list[str]) -> str:
    """The fastest passing mode on 27,000 spots, or on STARmap when no compiled one that passed was timed there."""
    on_merfish = {r["engine"] for r in step_rows if r.get("data") == "merfish-like" and "ms_per_step" in r}
    if any(e in on_merfish for e in passed if e != "fast"):
        return best_fast(step_rows, "merfish-like", passed)
    return best_fast(step_rows, "starmap", passed)


def section_runtime_table(
    problem: Prepared,
    step_rows: list[dict[str, Any]],
    engine: str,
    cfg: dict,
    device: str,
    limit: int,
    budget: Budget,
    run: Isolated,
) -> list[dict[str, Any]]:
    """2,500 epochs at each batch size from the timed epochs of `engine` (the fastest mode that passed)."""

    def timed(name: str) -> dict[int, dict[str, Any]]:
        return {
            r["batch"]: r
            for r in step_rows
            if r.get("data") == "merfish-like" and r.get("engine") == name and "ms_per_step" in r
        }

    known, stock = timed(engine), timed("scvi")
    rows = []
    for batch in cfg["table_batches"]:
        row = known.get(batch)
        if row is None and budget.fits(_estimate(step_rows + rows, engine, limit)):
            job = {"folder": str(problem.folder), "device": device, "engine": engine, "batch_size": batch}
            row = run(timed_fit, timeout=budget.left() + 60, **job, limit=limit, min_steps=cfg["min_timed_steps"])
            if "error" not in row:
                _log(row)
        if row is None or "error" in row:
            rows.append(
                {"batch": batch, "engine": engine, **({"error": row["error"]} if row else {"skipped": "budget"})}
            )
            continue
        epoch_s = row["ms_per_step"] * row["steps_per_epoch"] / 1e3
        stock_min = stock[batch]["ms_per_step"] * row["steps_per_epoch"] * 2500 / 6e4 if batch in stock else None
        rows.append(
            {
                "batch": batch,
                "engine": engine,
                "n_spots": problem.n_spots,
                "ms_per_step": row["ms_per_step"],
                "warmup_s": row["warmup_s"],
                "epoch_s": epoch_s,
                "minutes_2500_epochs": epoch_s * 2500 / 60,
                "stock_minutes_2500_epochs": stock_min,
                "study_rtx3090_minutes": STUDY_RTX3090_MIN.get(batch),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------
# section 4: packing


class _WindowOver(Exception):
    """Raised from the epoch hook to end a packed fit once its measured window is over."""


def packed_fit(
    folder: str,
    device: str,
    engine: str,
    batch_size: int,
    seconds: float,
    barrier: str,
    k: int,
    rank: int,
    threads: int,
) -> dict[str, Any]:
    """One of K packed fits: warm up one epoch, wait for the other K-1, then train for `seconds`."""
    import torch

    from tests.benchmarks import engine_problems as ep
    from toolkit.engines import train_destvi_fast

    torch.set_num_threads(threads)
    ep.quiet()
    problem, sc_model = load(Path(folder), device)
    model = ep.make_destvi(problem, sc_model, seed=rank, amortization="both")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    stamps: list[float] = []

    def on_epoch_end(epoch: int) -> None:
        if epoch == 0:
            Path(barrier, f"{rank}.ready").touch()
            while len(list(Path(barrier).glob("*.ready"))) < k:
                time.sleep(0.02)
        stamps.append(time.time())  # the window starts when all K are warm
        if stamps[-1] - stamps[0] >= seconds:
            raise _WindowOver

    with contextlib.suppress(_WindowOver), rehearsal_backend(engine):
        train_destvi_fast(
            model,
            max_epochs=10**6,
            lr=3e-3,
            batch_size=batch_size,
            n_epochs_kl_warmup=1,
            seed=rank,
            device=device,
            compile=ep.FAST_ENGINES[engine],
            on_epoch_end=on_epoch_end,
        )
    return {
        "rank": rank,
        "steps": math.ceil(problem.spots.n_obs / batch_size) * (len(stamps) - 1),
        "start": stamps[0],
        "end": stamps[-1],
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def mps_control() -> str | None:
    """The CUDA MPS control program, on the PATH or in the driver's usual folders."""
    found = shutil.which("nvidia-cuda-mps-control")
    for folder in ("/usr/local/nvidia/bin", "/usr/bin", "/usr/local/bin"):
        candidate = Path(folder, "nvidia-cuda-mps-control")
        if found is None and candidate.is_file():
            found = str(candidate)
    return found


@contextlib.contextmanager
def mps_daemon(control: str, folder: Path) -> Iterator[dict[str, str]]:
    """The MPS control daemon for the rounds inside; yields the environment its clients need.

    Raises RuntimeError (one sentence) when it does not start. No process of this run holds a CUDA
    context when it starts (the main process never touches CUDA; earlier workers are gone)."""
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    started = subprocess.run(  # the daemon forks away; it must not hold this run's stdin
        [control, "-d"],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    if started.returncode != 0:
        raise RuntimeError(
            f"{control} -d exited {started.returncode}: {(started.stderr or started.stdout).strip()[:200]}"
        )
    try:
        yield env
    finally:  # a daemon that will not quit in time must not cost the rounds measured inside it
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [control],
                input="quit\n",
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )


def mps_servers(control: str, env: dict[str, str]) -> str:
    """What the daemon says of its servers (one starts when the first client connects): proof MPS was used."""
    listed = subprocess.run(
        [control],
        input="get_server_list\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return listed.stdout.strip() or listed.stderr.strip()


def _pack_rounds(
    problem: Prepared,
    engine: str,
    cfg: dict,
    device: str,
    seconds: float,
    budget: Budget,
    mps: bool,
    env: dict[str, str],
    probe: Callable[[], str] | None = None,
) -> list[dict[str, Any]]:
    """K = cfg['pack_k'] rounds in that order on one pool of spawned workers, kept between rounds (as a
    pack's workers run fit after fit); each round's window starts once all K fits are warm."""
    cpus = os.cpu_count() or 1
    pool = _pool(max(cfg["pack_k"]), env)
    rows: list[dict[str, Any]] = []
    ones: float | None = None
    try:
        for k in cfg["pack_k"]:
            key = {"k": k, "mps": mps, "engine": engine, "batch": cfg["pack_batch"]}
            rounds = [r["round_s"] for r in rows if "round_s" in r]
            estimate = (max(rounds) if rounds else 40.0) * (1.0 + k / 16)
            if not budget.fits(min(estimate, 60.0)):
                rows.append({**key, "skipped": "budget"})
                continue
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as barrier:
                common = {
                    "folder": str(problem.folder),
                    "device": device,
                    "engine": engine,
                    "batch_size": cfg["pack_batch"],
                    "seconds": seconds,
                    "barrier": barrier,
                    "k": k,
                    "threads": max(1, cpus // k),
                }
                fits = run_parallel(packed_fit, [{**common, "rank": r} for r in range(k)], pool, budget.left())
            broken = [f for f in fits if isinstance(f, BaseException)]
            if broken:
                rows.append({**key, "error": _describe(broken[0])})
                _log(rows[-1])
                pool.shutdown(wait=False, cancel_futures=True)  # killed already on a timeout
                pool = _pool(max(cfg["pack_k"]), env)
                continue
            rate = sum(f["steps"] / max(1e-9, f["end"] - f["start"]) for f in fits)  # steps/s, each its own window
            ones = rate if k == 1 else ones
            rows.append(
                {
                    **key,
                    "config_steps_per_s": rate,
                    "vs_k_times_one": rate / (k * ones) if ones else None,
                    "overlap_s": min(f["end"] for f in fits) - max(f["start"] for f in fits),
                    "peak_gpu_mib_per_fit": max(f["cuda_peak_mib"] or 0.0 for f in fits)
                    if device.startswith("cuda")
                    else None,
                    "round_s": time.perf_counter() - start,
                    **({"mps_servers": probe()} if probe else {}),  # the workers, still alive, are its clients
                }
            )
            _log(rows[-1])
    finally:  # its workers gone before MPS is stopped (a killed round's are dead already)
        pool.shutdown(wait=True, cancel_futures=True)
    return sorted(rows, key=lambda r: r["k"])


def section_packing(
    problem: Prepared, engine: str, cfg: dict, device: str, seconds: float, budget: Budget, mps: str
) -> list[dict[str, Any]]:
    """K fits at once in K worker processes, without MPS and then (on CUDA, where it starts) with it."""
    cuda = device.startswith("cuda")
    control = mps_control() if cuda and mps != "off" else None
    rows = _pack_rounds(problem, engine, cfg, device, seconds, Budget(budget.left() / (2 if control else 1)), False, {})
    shared = {"k": "-", "mps": True, "engine": engine, "batch": cfg["pack_batch"]}
    if control is None:
        why = "no CUDA device (MPS is a CUDA daemon)" if not cuda else "--mps off" if mps == "off" else ""
        return [*rows, {**shared, "skipped": why or "nvidia-cuda-mps-control not found"}]
    with tempfile.TemporaryDirectory() as folder:
        try:
            with mps_daemon(control, Path(folder)) as env:
                probe = partial(mps_servers, control, env)
                rounds = _pack_rounds(problem, engine, cfg, device, seconds, Budget(budget.left()), True, env, probe)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            return [*rows, {**shared, "error": _describe(error)}]
    return rows + rounds


# ------------------------------------------------------------------------------------------------
# goals


def _goal(what: str, engine: str, key: str, value: float | None, at_least: bool) -> dict[str, Any]:
    target = GOALS[key]
    met = None if value is None else value >= target if at_least else value <= target
    return {
        "goal": what,
        "engine": engine,
        "target": f"{'>=' if at_least else '<='} {target:g}",
        "measured": value,
        "met": met,
    }


def section_goals(
    steps: list[dict[str, Any]], table: list[dict[str, Any]], packing: list[dict[str, Any]], passed: list[str]
) -> list[dict[str, Any]]:
    """Issue 41's goals read off the sections, with the ratio to stock measured in this run."""
    goals = []
    for data, batch, key, what in (
        ("starmap", 8, "starmap_8", "STARmap batch 8, x stock per step"),
        ("merfish-like", 32, "merfish_32", "27,000 spots batch 32, x stock per step"),
    ):
        rows = [r for r in steps if r.get("data") == data and r.get("batch") == batch and "ms_per_step" in r]
        stock = next((r["ms_per_step"] for r in rows if r["engine"] == "scvi"), None)
        best = min((r for r in rows if r["engine"] in passed), key=lambda r: r["ms_per_step"], default=None)
        value = stock / best["ms_per_step"] if stock and best else None
        goals.append(_goal(what, best["engine"] if best else "-", key, value, at_least=True))
    minutes = {r["batch"]: r["minutes_2500_epochs"] for r in table if "minutes_2500_epochs" in r}
    engine = next((r["engine"] for r in table if "engine" in r), "-")
    what = "the study's batch-32 run (2,500 epochs), minutes"
    goals.append(_goal(what, engine, "batch_32_minutes", minutes.get(32), at_least=False))
    hours = sum(minutes.values()) / 60 if set(minutes) == set(STUDY_RTX3090_MIN) else None
    goals.append(_goal("the seven runtime-table runs in all, hours", engine, "table_hours", hours, at_least=False))
    engine = next((r["engine"] for r in packing if "engine" in r), "-")
    for mps in (False, True):
        ratios = [
            r["vs_k_times_one"] for r in packing if r.get("mps") is mps and r.get("vs_k_times_one") and r["k"] != 1
        ]
        what = f"K packed fits {'with' if mps else 'without'} MPS, the worst K run, x (K x one)"
        goals.append(_goal(what, engine, "packing", min(ratios) if ratios else None, at_least=True))
    return goals


# ------------------------------------------------------------------------------------------------
# tables


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str, int]]) -> str:
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        if "skipped" in row or "error" in row:
            why = f"skipped ({row['skipped']})" if "skipped" in row else f"error: {row['error']}".replace("|", "/")
            lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _, _ in columns[:-1]) + f" | {why} |")
            continue
        lines.append("| " + " | ".join(_fmt(row.get(key), digits) for key, _, digits in columns) + " |")
    return "\n".join(lines)


STEP_COLUMNS = [
    ("data", "data", 0),
    ("batch", "batch", 0),
    ("engine", "engine", 0),
    ("ms_per_step", "ms/step", 2),
    ("speedup", "vs stock", 1),
    ("warmup_s", "warm-up s", 1),
    ("cuda_peak_mib", "GPU peak MiB", 0),
]
EQUIVALENCE_COLUMNS = [
    ("batch", "batch", 0),
    ("engine", "engine", 0),
    ("epochs", "epochs", 0),
    ("seeds", "seeds", 0),
    ("mean_pcc", "mean PCC", 3),
    ("sd_pcc", "sd", 3),
    ("gap_to_eager", "gap to eager", 3),
    ("tolerance", "tolerance", 3),
    ("train_s", "train s (median)", 1),
    ("passes", "passes", 0),
]
TABLE_COLUMNS = [
    ("batch", "batch", 0),
    ("engine", "engine", 0),
    ("ms_per_step", "ms/step", 2),
    ("epoch_s", "s/epoch", 3),
    ("minutes_2500_epochs", "2,500 epochs, min", 1),
    ("stock_minutes_2500_epochs", "stock here, min", 1),
    ("study_rtx3090_minutes", "study RTX 3090, min", 0),
]
PACK_COLUMNS = [
    ("k", "K", 0),
    ("mps", "MPS", 0),
    ("engine", "engine", 0),
    ("batch", "batch", 0),
    ("config_steps_per_s", "config-steps/s", 0),
    ("vs_k_times_one", "vs K x one", 2),
    ("peak_gpu_mib_per_fit", "GPU peak MiB per fit", 0),
]
GOAL_COLUMNS = [
    ("goal", "goal", 0),
    ("engine", "engine", 0),
    ("target", "target", 0),
    ("measured", "measured", 2),
    ("met", "met", 0),
]


# ------------------------------------------------------------------------------------------------
# the command


def _budget(text: str) -> tuple[str, float]:
    """`--budget steps=150` -> ("steps", 150.0), refused in one sentence otherwise."""
    name, _, seconds = text.partition("=")
    try:
        if name not in SECTIONS:
            raise ValueError
        return name, float(seconds)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--budget {text!r}: give SECTION=SECONDS with SECTION one of {', '.join(SECTIONS)}, e.g. steps=150"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for the files (default: $OUT, else results/gpu-<device>)")
    parser.add_argument("--device", default="cuda", help="cuda or cpu")
    parser.add_argument("--toy", action="store_true", help="toy sizes: the CPU rehearsal (CI)")
    parser.add_argument("--limit-batches", type=int, default=40, help="most minibatches per timed epoch")
    parser.add_argument("--pack-seconds", type=float, help="measured window of each packing round (default 4; toy 1)")
    parser.add_argument("--engines", help="comma-separated engines to time (default: every one the device has)")
    parser.add_argument("--data", default="starmap,merfish-like", help="comma-separated problems the steps time")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument("--mps", choices=("auto", "off"), default="auto", help="packing rounds under CUDA MPS too")
    parser.add_argument("--total", type=float, help="deadline of the whole run in seconds (caps every budget)")
    parser.add_argument(
        "--budget", action="append", default=[], type=_budget, metavar="SECTION=SECONDS", help="a section's budget"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from tests.benchmarks import engine_problems as ep

    device = args.device
    cfg = {**(TOY if args.toy else FULL)}
    cfg["budgets_s"] = {**cfg["budgets_s"], **dict(args.budget)}
    sections = args.sections.split(",")
    for option, given, known in (
        ("--sections", sections, SECTIONS),
        ("--engines", args.engines.split(",") if args.engines else [], ["scvi", *ep.FAST_ENGINES]),
        ("--data", args.data.split(","), ("starmap", "merfish-like")),
    ):
        if unknown := [name for name in given if name not in known]:
            parser.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    begun = time.perf_counter()
    total = args.total or cfg["total_s"]

    def budget(section: str) -> Budget:
        return Budget(min(cfg["budgets_s"][section], total - (time.perf_counter() - begun)))

    engines = args.engines.split(",") if args.engines else engines_for(device, args.toy)
    run = Isolated()
    facts = run(device_facts, timeout=300, device=device)
    if "error" in facts:
        raise SystemExit(f"gpu_check: the device could not be read: {facts['error']}")
    out = args.out or Path(os.environ.get("OUT") or f"results/gpu-{device_slug(facts['device_name'])}")
    report = Report(out, {**facts, "mode": "toy" if args.toy else "full", "elapsed_s": 0.0, "total_s": total})
    print(f"[gpu_check] {facts['device_name']}: writing to {out}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {"n_spatial_cells": cfg["merfish_cells"], "n_reference_cells": cfg["merfish_reference_cells"]}
        problems: dict[str, Prepared] = {}
        for name, given in (("starmap", {}), ("merfish-like", sizes)):
            prepared = run(
                prepare,
                timeout=600,
                name=name,
                folder=Path(tmp, name),
                device=device,
                sizes=given,
                reference_epochs=cfg["reference_epochs"],
            )
            if isinstance(prepared, dict):
                report.facts["elapsed_s"] = time.perf_counter() - begun
                report.save(
                    "prepare", [{"error": prepared["error"]}], f"{name} could not be prepared: {prepared['error']}"
                )
                raise SystemExit(f"gpu_check: {name} could not be prepared: {prepared['error']}")
            problems[name] = prepared
        report.facts["prepare_s"] = time.perf_counter() - begun
        report.facts["spots"] = {name: p.n_spots for name, p in problems.items()}

        def save(name: str, rows: Any, columns: list) -> None:
            report.facts["elapsed_s"] = time.perf_counter() - begun
            report.save(name, rows, _table(rows, columns))

        steps: list[dict[str, Any]] = []
        if "steps" in sections:
            data = tuple(args.data.split(","))
            steps = section_steps(problems, cfg, device, engines, args.limit_batches, budget("steps"), run, data)
            save("steps", steps, STEP_COLUMNS)
        run.close()  # the equivalence fits get the GPU to themselves
        equivalence: list[dict[str, Any]] = []
        if "equivalence" in sections:
            try:
                equivalence = section_equivalence(
                    problems["starmap"], steps, cfg, device, engines, budget("equivalence")
                )
            except Exception as error:  # recorded in the report; the later sections still run
                equivalence = [{"batch": "-", "engine": "-", "error": _describe(error)}]
            report.sections["equivalence_runs"] = [fit for r in equivalence for fit in r.get("runs", [])]
            save("equivalence", [{k: v for k, v in r.items() if k != "runs"} for r in equivalence], EQUIVALENCE_COLUMNS)
        passed = passed_modes(equivalence)
        report.facts["passed_equivalence"] = passed
        table: list[dict[str, Any]] = []
        if "runtime_table" in sections:
            engine = table_engine(steps, passed)
            table = section_runtime_table(
                problems["merfish-like"], steps, engine, cfg, device, args.limit_batches, budget("runtime_table"), run
            )
            save("runtime_table", table, TABLE_COLUMNS)
        run.close()  # the packed fits get the GPU to themselves, and no CUDA context is left for MPS to wait on
        packing: list[dict[str, Any]] = []
        if "packing" in sections:
            engine = best_fast(steps, "starmap", passed)
            seconds = args.pack_seconds or (1.0 if args.toy else 4.0)
            try:
                packing = section_packing(
                    problems["starmap"], engine, cfg, device, seconds, budget("packing"), args.mps
                )
            except Exception as error:  # recorded in the report
                packing = [{"k": "-", "engine": engine, "batch": cfg["pack_batch"], "error": _describe(error)}]
            save("packing", packing, PACK_COLUMNS)
        save("goals", section_goals(steps, table, packing, passed), GOAL_COLUMNS)
    print((out / "gpu_check.md").read_text())


if __name__ == "__main__":
    main()

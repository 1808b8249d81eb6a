"""GPU check (benchmark, not a test): the fast engine's figures on one GPU, in one command of under 8 minutes.

Four sections, in this order of importance; each keeps its own time budget (a measurement that would
not fit is recorded as skipped) and the JSON and markdown in `--out` are rewritten after EACH
section, so a run cut short still leaves what it measured:

1. `steps`: ms per step and per epoch, stock scvi-tools against the fast engine (eager, compiled,
   CUDA graphs), on real STARmap (189 spots; batch 8, 32, 128) and on the merfish-like tissue at the
   study's size (about 27,000 spots; batch 8, 32, 128, 1,024), with the ratio to stock.
2. `runtime_table`: per-epoch time on the merfish-like tissue at batch 32 ... 1,024 with the fastest
   fast mode, extrapolated to 2,500 epochs, beside the study's RTX 3090 times.
3. `packing`: K = 1, 2, 4, 8, 16 fits sharing the GPU (one process each, as `pack: K` runs them):
   configuration-steps per second in all, the ratio to K x one fit, and peak GPU memory per fit.
4. `equivalence`: per-cell-type PCC on real STARmap, 3 seeds, batch 8 and 128: fast eager against
   stock, and reduce-overhead and CUDA graphs against both (epochs scaled to the budget; the number
   used is recorded).

Timing runs take the first `--limit-batches` minibatches of each epoch (Lightning's
`limit_train_batches` for stock), one warm-up epoch (compilation, capture) and the median of the rest.
The merfish-like reference is small (its size changes nothing in a destVI step but the decoder's
training, which is not timed).

On the GPU machine (Python 3.12 with its own torch, lightning, jax and numpyro; no package registry;
no ../shared), in two steps (tests/benchmarks/gpu_check.sh):

    bash tests/benchmarks/gpu_check.sh pack       # here: .gpu/wheels (21 wheels, scvi-tools 1.4.2 ...,
                                                  # 16 MB with) and .gpu/starmap (the STARmap files)
    bash tests/benchmarks/gpu_check.sh run OUT    # there, with .gpu carried: installs the wheels, runs
                                                  # this script on cuda; 6-8 minutes on a cold H200
    .venv/bin/python -m tests.benchmarks.gpu_check --device cpu --toy --out /tmp/gpu-check   # toy, CPU, ~1 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STUDY_RTX3090_MIN = {32: 211, 48: 104, 64: 86, 128: 36, 256: 21, 512: 11, 1024: 10}
"""The study's destVI training times on one RTX 3090 (27,395 spots, 2,500 epochs), in minutes."""
STUDY_C2L_MIN = 123
FULL = {
    "starmap_batches": [8, 32, 128],
    "merfish_batches": [32, 8, 128, 1024],
    "table_batches": [32, 48, 64, 128, 256, 512, 1024],
    "pack_k": [1, 2, 4, 8, 16],
    "equivalence_batches": [8, 128],
    "equivalence_epochs": 500,
    "seeds": 3,
    "merfish_cells": 84000,
    "merfish_reference_cells": 5000,
    "reference_epochs": 20,
    "budgets_s": {"steps": 160, "runtime_table": 60, "packing": 70, "equivalence": 80},
}
TOY = {
    "starmap_batches": [8, 32],
    "merfish_batches": [32],
    "table_batches": [32, 128],
    "pack_k": [1, 2],
    "equivalence_batches": [32],
    "equivalence_epochs": 3,
    "seeds": 2,
    "merfish_cells": 3000,
    "merfish_reference_cells": 600,
    "reference_epochs": 2,
    "budgets_s": {"steps": 120, "runtime_table": 60, "packing": 120, "equivalence": 120},
}


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


class Isolated:
    """Runs one measurement at a time in a spawned worker process, kept between measurements.

    A GPU run is a single, short, paid-for shot: a mode that fails there (a step that will not
    capture as a CUDA graph, a compile error, a CUDA error that poisons its context) must cost that
    measurement and not the run. A failed measurement comes back as `{"error": ...}` and its worker
    is replaced, so the next one starts on a clean CUDA context.
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def __call__(self, fn: Any, **kwargs: Any) -> dict[str, Any]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        try:
            return self._pool.submit(fn, **kwargs).result()
        except Exception as error:  # recorded in the report; the run goes on
            self.close()
            return {"error": _describe(error)}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _log(row: dict[str, Any]) -> None:
    """Each measurement as it lands, so that a run cut off at its time limit keeps it in its log."""
    print(f"[gpu_check] {json.dumps(row)}", flush=True)


def _describe(error: BaseException) -> str:
    """One line for the report (the whole traceback goes to stderr, which the run's log keeps)."""
    traceback.print_exception(error)
    return f"{type(error).__name__}: {error}".splitlines()[0][:300]


def _facts_line(facts: dict[str, Any]) -> str:
    return (
        f"torch {facts['torch']}, scvi-tools {facts['scvi']}, Python {facts['python']}, "
        f"{facts['cpus']} CPUs, {facts['mode']} run, {facts['elapsed_s']:.0f} s so far."
    )


def _facts(device: str, mode: str) -> dict[str, Any]:
    import scvi
    import torch

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({platform.processor() or 'cpu'})"
    return {
        "device": device,
        "device_name": name,
        "torch": torch.__version__,
        "scvi": scvi.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "mode": mode,
        "elapsed_s": 0.0,
        "inductor_env": {k: v for k, v in os.environ.items() if k.startswith("TORCHINDUCTOR")},
    }


# ------------------------------------------------------------------------------------------------
# data and models


@dataclass
class Prepared:
    """A problem on disk (spots, reference, truth, a short CondSCVI with a frozen vamp prior)."""

    name: str
    folder: Path
    n_spots: int


def prepare(name: str, folder: Path, device: str, sizes: dict[str, int], reference_epochs: int) -> Prepared:
    """Build the problem once and save it, so that packed worker processes load instead of rebuilding."""
    import anndata
    import torch

    from tests.benchmarks import engine_problems as ep

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
    """(problem, CondSCVI with its frozen vamp prior) from `prepare`'s folder."""
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
    prior = torch.load(folder / "vamp_prior.pt")
    sc_model.get_vamp_prior = lambda *a, **k: {key: value.clone() for key, value in prior.items()}
    return problem, sc_model


def timed_fit(
    folder: str, device: str, engine: str, batch_size: int, epochs: int, limit: int | None, seed: int = 0
) -> dict[str, Any]:
    """One destVI fit, timed per epoch; a module-level function so that packed workers can run it."""
    import torch

    from tests.benchmarks import engine_problems as ep

    ep.quiet()
    problem, sc_model = load(Path(folder), device)
    model = ep.make_destvi(problem, sc_model, seed=seed, amortization="both")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    info = ep.train_destvi(
        model,
        engine=engine,
        max_epochs=epochs,
        batch_size=batch_size,
        n_epochs_kl_warmup=max(1, epochs // 2),
        device=device,
        limit_batches=limit,
        seed=seed if engine != "scvi" else None,
    )
    spe = math.ceil(problem.spots.n_obs / batch_size)
    steps = min(spe, limit or spe)
    wall = info["epoch_wall"]
    steady = wall[1:] if len(wall) > 1 else wall
    return {
        "engine": engine,
        "batch": batch_size,
        "steps_per_epoch": spe,
        "ms_per_step": 1e3 * float(np.median(steady)) / steps,
        "warmup_s": float(wall[0]),
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "pcc": ep.mean_pcc(problem, ep.proportions(model, "both")) if not limit else None,
    }


# ------------------------------------------------------------------------------------------------
# the sections


def engines_for(device: str, toy: bool) -> list[str]:
    if device.startswith("cuda"):
        # Modes that ran on the H200 first, so that a failing one cannot eat their budget; `fast-compiled`
        # (compile: true) runs as reduce-overhead on CUDA since that check, so it is not timed twice.
        return ["scvi", "fast", "fast-reduce-overhead", "fast-cudagraphs"]
    # The CUDA-graph mode refuses a CPU by design: the toy run keeps it so that CI runs the path of a
    # mode that fails (an error row, the mode not tried again, the rest measured).
    return ["scvi", "fast", "fast-cudagraphs"] if toy else ["scvi", "fast", "fast-compiled"]


def section_steps(
    problems: dict[str, Prepared],
    cfg: dict,
    device: str,
    engines: list[str],
    limit: int,
    budget: Budget,
    run: Isolated,
    data: tuple[str, ...] = ("starmap", "merfish-like"),
) -> list[dict[str, Any]]:
    """Ordered so the figures that matter most come first: STARmap batch 8, then 27,000 spots at batch 32.

    An engine that fails once is not tried again (its row says where it failed).
    """
    plan = [("starmap", b) for b in cfg["starmap_batches"][:1]] + [
        ("merfish-like", b) for b in cfg["merfish_batches"][:1]
    ]
    plan += [("starmap", b) for b in cfg["starmap_batches"][1:]] + [
        ("merfish-like", b) for b in cfg["merfish_batches"][1:]
    ]
    plan = [(name, batch) for name, batch in plan if name in data]
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for name, batch in plan:
        stock = None
        for engine in engines:
            key = {"data": name, "engine": engine, "batch": batch}
            if engine in failed:
                rows.append({**key, "skipped": f"failed at {failed[engine]}"})
                continue
            if not budget.fits(_estimate(rows, engine, limit)):
                rows.append({**key, "skipped": "budget"})
                continue
            row = {
                "data": name,
                **run(
                    timed_fit,
                    folder=str(problems[name].folder),
                    device=device,
                    engine=engine,
                    batch_size=batch,
                    epochs=4,
                    limit=limit,
                ),
            }
            if "error" in row:
                failed[engine] = f"{name} batch {batch}"
                rows.append({**key, "error": row["error"]})
                continue
            stock = row if engine == "scvi" else stock
            row["speedup"] = stock["ms_per_step"] / row["ms_per_step"] if stock else None
            rows.append(row)
            _log(row)
    return rows


def _estimate(rows: list[dict[str, Any]], engine: str, limit: int) -> float:
    """Seconds the next timing run may take: the slowest so far of this engine, or 20 s before any."""
    seen = [
        r["warmup_s"] + 3 * r["ms_per_step"] * limit / 1e3
        for r in rows
        if r.get("engine") == engine and "warmup_s" in r
    ]
    return max(seen) if seen else 20.0


def best_fast(rows: list[dict[str, Any]], data: str) -> str:
    """The fast mode with the lowest ms/step on `data`, summed over the batch sizes every mode measured."""
    measured: dict[str, dict[int, float]] = {}
    for r in rows:
        if r.get("data") == data and "ms_per_step" in r and r["engine"] != "scvi":
            measured.setdefault(r["engine"], {})[r["batch"]] = r["ms_per_step"]
    if not measured:
        return "fast"
    shared = set.intersection(*(set(by_batch) for by_batch in measured.values()))
    return min(measured, key=lambda engine: sum(measured[engine][b] for b in shared))


def section_runtime_table(
    problem: Prepared,
    step_rows: list[dict[str, Any]],
    cfg: dict,
    device: str,
    limit: int,
    budget: Budget,
    run: Isolated,
) -> list[dict[str, Any]]:
    engine = best_fast(step_rows, "merfish-like")
    known = {
        r["batch"]: r
        for r in step_rows
        if r.get("data") == "merfish-like" and r.get("engine") == engine and "ms_per_step" in r
    }
    stock = {
        r["batch"]: r
        for r in step_rows
        if r.get("data") == "merfish-like" and r.get("engine") == "scvi" and "ms_per_step" in r
    }
    rows = []
    for batch in cfg["table_batches"]:
        row = known.get(batch)
        if row is None and budget.fits(_estimate(step_rows, engine, limit)):
            row = run(
                timed_fit,
                folder=str(problem.folder),
                device=device,
                engine=engine,
                batch_size=batch,
                epochs=4,
                limit=limit,
            )
        if row is None or "error" in row:
            rows.append(
                {"batch": batch, "engine": engine, **({"error": row["error"]} if row else {"skipped": "budget"})}
            )
            continue
        _log(row)
        epoch_s = row["ms_per_step"] * row["steps_per_epoch"] / 1e3
        stock_min = stock[batch]["ms_per_step"] * row["steps_per_epoch"] * 2500 / 6e4 if batch in stock else None
        rows.append(
            {
                "batch": batch,
                "engine": engine,
                "n_spots": problem.n_spots,
                "epoch_s": epoch_s,
                "minutes_2500_epochs": epoch_s * 2500 / 60,
                "stock_minutes_2500_epochs": stock_min,
                "study_rtx3090_minutes": STUDY_RTX3090_MIN.get(batch),
            }
        )
    return rows


class _WindowOver(Exception):
    """Raised from the epoch hook to end a packed fit once its measured window is over."""


def packed_fit(
    folder: str, device: str, engine: str, batch_size: int, seconds: float, barrier: str, k: int, rank: int
) -> dict[str, Any]:
    """One of K packed fits: warm up one epoch, wait for the other K-1, then train for `seconds`."""
    import torch

    from tests.benchmarks import engine_problems as ep
    from toolkit.engines import train_destvi_fast

    ep.quiet()
    problem, sc_model = load(Path(folder), device)
    model = ep.make_destvi(problem, sc_model, seed=rank, amortization="both")
    cuda = device.startswith("cuda")
    stamps: list[float] = []

    def on_epoch_end(epoch: int) -> None:
        if epoch == 0:
            Path(barrier, f"{rank}.ready").touch()
            while len(list(Path(barrier).glob("*.ready"))) < k:
                time.sleep(0.02)
        stamps.append(time.time())  # the window starts when all K are warm
        if stamps[-1] - stamps[0] >= seconds:
            raise _WindowOver

    with contextlib.suppress(_WindowOver):
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


def section_packing(
    problem: Prepared, engine: str, batch: int, cfg: dict, device: str, seconds: float, budget: Budget
) -> list[dict[str, Any]]:
    """K fits at once in K worker processes (toolkit.backends.packing, as `pack: K` runs them)."""
    from toolkit.backends.packing import fit_many

    rows: list[dict[str, Any]] = []
    one = None
    for k in cfg["pack_k"]:
        rounds = [r["round_s"] for r in rows if "round_s" in r]
        estimate = (rounds[-1] if rounds else 30.0) * 1.3
        if not budget.fits(estimate):
            rows.append({"k": k, "skipped": "budget"})
            continue
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as barrier:
            common = {"folder": str(problem.folder), "device": device, "engine": engine, "batch_size": batch}
            jobs = [{**common, "seconds": seconds, "barrier": barrier, "k": k, "rank": rank} for rank in range(k)]
            fits = fit_many(packed_fit, jobs, workers=k, threads_per_worker=max(1, (os.cpu_count() or 1) // k))
        window = min(f["end"] for f in fits) - max(f["start"] for f in fits)
        rate = sum(f["steps"] / (f["end"] - f["start"]) for f in fits)  # steps/s, each over its own window
        one = one or rate
        rows.append(
            {
                "k": k,
                "engine": engine,
                "batch": batch,
                "config_steps_per_s": rate,
                "vs_k_times_one": rate / (k * one),
                "overlap_s": window,
                "peak_gpu_mib_per_fit": max(f["cuda_peak_mib"] or 0.0 for f in fits)
                if device.startswith("cuda")
                else None,
                "round_s": time.perf_counter() - start,
            }
        )
    return rows


def equivalence_fit(folder: str, device: str, engine: str, batch_size: int, epochs: int, seed: int) -> dict[str, Any]:
    """A full (scaled) fit, scored per cell type against the truth."""
    import scvi

    from tests.benchmarks import engine_problems as ep
    from toolkit.metrics import li2022_prediction, score

    ep.quiet()
    problem, sc_model = load(Path(folder), device)
    scvi.settings.seed = seed
    model = ep.make_destvi(problem, sc_model, seed=seed, amortization="both")
    ep.train_destvi(model, engine=engine, max_epochs=epochs, batch_size=batch_size, device=device)
    prepared = li2022_prediction(ep.proportions(model, "both"), problem.truth.columns)
    per_type = score(problem.truth, prepared).per_cell_type["pcc"]
    return {
        "engine": engine,
        "batch": batch_size,
        "seed": seed,
        "mean_pcc": float(per_type.fillna(0.0).mean()),
        "pcc": {str(k): float(v) for k, v in per_type.items()},
    }


def section_equivalence(
    problem: Prepared, step_rows: list[dict[str, Any]], cfg: dict, device: str, engines: list[str], budget: Budget
) -> list[dict[str, Any]]:
    """Fast eager against stock (and the CUDA-graph modes against both) over seeds, epochs scaled to the budget."""
    from toolkit.backends.packing import fit_many

    failed = {r["engine"] for r in step_rows if "error" in r}
    compared = ("scvi", "fast", "fast-reduce-overhead", "fast-cudagraphs")  # reduce-overhead: compile: true on CUDA
    engines = [e for e in compared if e in engines and e not in failed]
    slowest = max(
        (r["ms_per_step"] for r in step_rows if r.get("data") == "starmap" and "ms_per_step" in r), default=5.0
    )
    steps = sum(math.ceil(problem.n_spots / b) for b in cfg["equivalence_batches"]) * cfg["seeds"] * len(engines)
    workers = min(8, cfg["seeds"] * len(engines) * len(cfg["equivalence_batches"]), os.cpu_count() or 1)
    affordable = int(0.6 * budget.left() * workers / max(1e-9, slowest * steps / 1e3))
    epochs = max(1, min(cfg["equivalence_epochs"], affordable))
    jobs = [
        {"folder": str(problem.folder), "device": device, "engine": e, "batch_size": b, "epochs": epochs, "seed": s}
        for b in cfg["equivalence_batches"]
        for e in engines
        for s in range(cfg["seeds"])
    ]
    results = fit_many(
        equivalence_fit,
        jobs,
        workers=workers,
        threads_per_worker=max(1, (os.cpu_count() or 1) // workers),
        return_exceptions=True,
    )
    runs = [r for r in results if not isinstance(r, BaseException)]
    errors = [_describe(r) for r in results if isinstance(r, BaseException)]
    rows: list[dict[str, Any]] = (
        [{"batch": "-", "engine": "-", "error": f"{len(errors)} fits failed: {errors[0]}"}] if errors else []
    )
    for batch in cfg["equivalence_batches"]:
        stock = [r["mean_pcc"] for r in runs if r["batch"] == batch and r["engine"] == "scvi"]
        for engine in engines:
            values = [r["mean_pcc"] for r in runs if r["batch"] == batch and r["engine"] == engine]
            if not values:
                continue
            spread = max(np.std(values), np.std(stock)) if stock else float("nan")
            gap = abs(np.mean(values) - np.mean(stock)) if stock else float("nan")
            rows.append(
                {
                    "batch": batch,
                    "engine": engine,
                    "epochs": epochs,
                    "seeds": len(values),
                    "mean_pcc": float(np.mean(values)),
                    "sd_pcc": float(np.std(values)),
                    "gap_to_stock": float(gap),
                    "within_seed_spread": bool(gap <= 2 * spread) if stock and engine != "scvi" else None,
                    "runs": [r for r in runs if r["batch"] == batch and r["engine"] == engine],
                }
            )
    return rows


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
TABLE_COLUMNS = [
    ("batch", "batch", 0),
    ("engine", "engine", 0),
    ("epoch_s", "s/epoch", 3),
    ("minutes_2500_epochs", "2,500 epochs, min", 1),
    ("stock_minutes_2500_epochs", "stock here, min", 1),
    ("study_rtx3090_minutes", "study RTX 3090, min", 0),
]
PACK_COLUMNS = [
    ("k", "K", 0),
    ("engine", "engine", 0),
    ("batch", "batch", 0),
    ("config_steps_per_s", "config-steps/s", 0),
    ("vs_k_times_one", "vs K x one", 2),
    ("peak_gpu_mib_per_fit", "GPU peak MiB per fit", 0),
]
EQUIVALENCE_COLUMNS = [
    ("batch", "batch", 0),
    ("engine", "engine", 0),
    ("epochs", "epochs", 0),
    ("seeds", "seeds", 0),
    ("mean_pcc", "mean PCC", 3),
    ("sd_pcc", "sd", 3),
    ("gap_to_stock", "gap to stock", 3),
    ("within_seed_spread", "within 2 sd", 0),
]


# ------------------------------------------------------------------------------------------------
# the command

SECTIONS = ("steps", "runtime_table", "packing", "equivalence")


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--toy", action="store_true", help="toy sizes (the CPU test in CI)")
    parser.add_argument("--limit-batches", type=int, default=40, help="minibatches per timed epoch")
    parser.add_argument("--pack-seconds", type=float, default=6.0, help="measured window of each packing round")
    parser.add_argument("--engines", help="comma-separated engines to time (default: every one the device has)")
    parser.add_argument("--data", default="starmap,merfish-like", help="comma-separated problems the steps time")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections to run")
    parser.add_argument(
        "--budget", action="append", default=[], type=_budget, metavar="SECTION=SECONDS", help="a section's budget"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from tests.benchmarks import engine_problems as ep

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cfg = {**(TOY if args.toy else FULL)}
    cfg["budgets_s"] = {**cfg["budgets_s"], **dict(args.budget)}
    sections = args.sections.split(",")
    known_engines = ["scvi", *ep.FAST_ENGINES]
    for option, given, known in (
        ("--sections", sections, SECTIONS),
        ("--engines", args.engines.split(",") if args.engines else [], known_engines),
        ("--data", args.data.split(","), ("starmap", "merfish-like")),
    ):
        if unknown := [name for name in given if name not in known]:
            parser.error(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    begun = time.perf_counter()
    report = Report(args.out, _facts(device, "toy" if args.toy else "full"))
    engines = args.engines.split(",") if args.engines else engines_for(device, args.toy)
    ep.quiet()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {"n_spatial_cells": cfg["merfish_cells"], "n_reference_cells": cfg["merfish_reference_cells"]}
        problems = {
            "starmap": prepare("starmap", Path(tmp, "starmap"), device, {}, cfg["reference_epochs"]),
            "merfish-like": prepare("merfish-like", Path(tmp, "merfish-like"), device, sizes, cfg["reference_epochs"]),
        }
        report.facts["prepare_s"] = time.perf_counter() - begun
        report.facts["spots"] = {name: p.n_spots for name, p in problems.items()}

        def save(name: str, rows: Any, columns: list) -> None:
            report.facts["elapsed_s"] = time.perf_counter() - begun
            report.save(name, rows, _table(rows, columns))

        budgets = cfg["budgets_s"]
        run = Isolated()
        steps: list[dict[str, Any]] = []
        if "steps" in sections:
            steps = section_steps(
                problems,
                cfg,
                device,
                engines,
                args.limit_batches,
                Budget(budgets["steps"]),
                run,
                tuple(args.data.split(",")),
            )
            save("steps", steps, STEP_COLUMNS)
        if "runtime_table" in sections:
            table = section_runtime_table(
                problems["merfish-like"], steps, cfg, device, args.limit_batches, Budget(budgets["runtime_table"]), run
            )
            save("runtime_table", table, TABLE_COLUMNS)
        run.close()  # the packed fits get the GPU to themselves
        if "packing" in sections:
            pack_engine = best_fast(steps, "starmap")
            try:
                packing = section_packing(
                    problems["starmap"], pack_engine, 8, cfg, device, args.pack_seconds, Budget(budgets["packing"])
                )
            except Exception as error:  # recorded; the equivalence section still runs
                packing = [{"k": "-", "engine": pack_engine, "batch": 8, "error": _describe(error)}]
            save("packing", packing, PACK_COLUMNS)
        if "equivalence" in sections:
            try:
                equivalence = section_equivalence(
                    problems["starmap"], steps, cfg, device, engines, Budget(budgets["equivalence"])
                )
            except Exception as error:  # recorded in the report
                equivalence = [{"batch": "-", "engine": "-", "error": _describe(error)}]
            rows = [{k: v for k, v in r.items() if k != "runs"} for r in equivalence]
            report.sections["equivalence_runs"] = [fit for r in equivalence for fit in r.get("runs", [])]
            save("equivalence", rows, EQUIVALENCE_COLUMNS)
    print((args.out / "gpu_check.md").read_text())


if __name__ == "__main__":
    main()

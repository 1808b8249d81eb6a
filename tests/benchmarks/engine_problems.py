"""Data and models shared by the engine benchmark and the engine equivalence study.

Two problems, each a CondSCVI reference, pseudospots and the benchmark's truth:

- `starmap`: the real STARmap data of ../shared/data/starmap. Reference = slice 2 (832 cells);
  spots = slice 1 binned at 750 px with Li et al.'s edge rule (189 spots); slice-1 labels mapped
  onto slice-2 names; genes matched by name (1,019 shared: `Nkx2-1` vs `Nkx2.1` is not matched).
  The truth keeps slice-1 cells without a slice-2 counterpart (HPC, Npy, Other) in each spot's
  denominator and drops their columns, as Li et al. did (`li2022_truth`).
- `synthetic`: the starmap-like simulation (1,523 cells, about 189 spots), smaller reference and panel.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")

import anndata as ad
import numpy as np
import pandas as pd

from toolkit.metrics import li2022_prediction, li2022_truth, score
from toolkit.pseudospots import build_pseudospots

STARMAP = Path(os.environ.get("SPOTSWEEP_STARMAP", Path(__file__).resolve().parents[3] / "shared" / "data" / "starmap"))
"""The STARmap files (../shared/data/starmap; elsewhere, e.g. on a GPU machine without ../shared, set
SPOTSWEEP_STARMAP to a folder holding slice{1,2}_counts.csv.gz and slice{1,2}_cells.csv)."""
FAST_ENGINES: dict[str, bool | str] = {
    "fast": False,
    "fast-compiled": True,
    "fast-cudagraphs": "cudagraphs",
    "fast-reduce-overhead": "reduce-overhead",
    "fast-default": "default",
    "fast-rehearsal": True,
}
"""Benchmark engine names of the fast engine, with the `compile` value each runs. `fast-default` is
torch.compile's default mode as such (on CUDA `compile: true` runs as reduce-overhead); `fast-rehearsal` is
`compile: true` run by the `aot_eager` backend in the GPU check's CPU rehearsal (gpu_check.REHEARSAL)."""
SLICE1_TO_SLICE2 = {
    "ExcitatoryL2and3": "eL2/3",
    "ExcitatoryL4": "eL4",
    "ExcitatoryL5": "eL5",
    "ExcitatoryL6": "eL6",
    "Astro": "Astro",
    "Endo": "Endo",
    "Micro": "Micro",
    "Olig": "Oligo",
    "Pvalb": "PVALB",
    "Smc": "Smc",
    "Sst": "SST",
    "Vip": "VIP",
}
VAMP_PRIOR_P = 15
REFERENCE = {"n_hidden": 128, "n_latent": 5, "n_layers": 2, "max_epochs": 300, "batch_size": 128, "lr": 1e-3}


@dataclass
class Problem:
    """A reference, the spots it deconvolves (reference genes, in order) and the truth to score against."""

    name: str
    reference: ad.AnnData
    spots: ad.AnnData
    truth: pd.DataFrame
    cell_counts: pd.DataFrame | None = None
    """Cells of each type per spot (all spatial types), what a task's scorer reads: see `scoring_spots`."""


def quiet() -> None:
    """Keep benchmark output to the tables."""
    import scvi

    scvi.settings.verbosity = logging.WARNING
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _read_slice(counts: str, cells: str) -> ad.AnnData:
    table = pd.read_csv(STARMAP / counts, index_col=0)
    meta = pd.read_csv(STARMAP / cells, index_col=0).loc[table.index]
    adata = ad.AnnData(X=table.to_numpy(dtype=np.float32), obs=meta[["cell_type"]].astype(str))
    adata.var_names = table.columns.astype(str)
    adata.obsm["spatial"] = meta[["x", "y"]].to_numpy(dtype=float)
    return adata


def _problem(name: str, reference: ad.AnnData, cells: ad.AnnData, window: float, edge_rule: str) -> Problem:
    genes = [g for g in reference.var_names if g in set(cells.var_names)]
    reference = reference[:, genes].copy()
    reference.obs["cell_type"] = reference.obs["cell_type"].astype("category")
    spots = build_pseudospots(cells[:, genes].copy(), window, edge_rule=edge_rule)
    st = ad.AnnData(X=spots.X.copy(), obs=pd.DataFrame(index=spots.obs_names.copy()))
    st.var_names = pd.Index(genes)
    truth = li2022_truth(spots.obsm["cell_counts"], list(reference.obs["cell_type"].cat.categories))
    return Problem(name, reference, st, truth, spots.obsm["cell_counts"].copy())


def scoring_spots(problem: Problem) -> ad.AnnData:
    """The spots as a task's trajectory scorer takes them (`toolkit.task.trajectory_scorer`): the truth's
    cell counts in obsm, which the task reads from its prepared spots."""
    spots = ad.AnnData(obs=pd.DataFrame(index=problem.spots.obs_names.copy()))
    spots.obsm["cell_counts"] = problem.cell_counts.set_axis(spots.obs_names)
    return spots


def starmap_problem() -> Problem:
    """Slice 2 as the reference, slice 1 as 189 pseudospots of 750 px."""
    reference = _read_slice("slice2_counts.csv.gz", "slice2_cells.csv")
    cells = _read_slice("slice1_counts.csv.gz", "slice1_cells.csv")
    cells.obs["cell_type"] = cells.obs["cell_type"].map(lambda t: SLICE1_TO_SLICE2.get(t, t))
    return _problem("starmap", reference, cells, 750.0, "li2022")


def synthetic_problem(seed: int = 0, n_reference_cells: int = 2000, n_genes: int = 300) -> Problem:
    """The starmap-like simulation at its default tissue size (about 189 spots)."""
    from toolkit.data.synthetic import simulate

    reference, cells = simulate("starmap-like", seed, n_reference_cells=n_reference_cells, n_genes=n_genes)
    return _problem("synthetic", reference, cells, 750.0, "half-open")


def merfish_problem(seed: int = 0, n_spatial_cells: int = 84000, n_reference_cells: int = 5000) -> Problem:
    """The merfish-like tissue (84,000 cells: about 27,000 spots of 40 um, the study's size) with a small
    reference: destVI's step time depends on the reference only through the decoder's shape."""
    from toolkit.data.synthetic import PRESETS, simulate

    reference, cells = simulate(
        "merfish-like", seed, n_spatial_cells=n_spatial_cells, n_reference_cells=n_reference_cells
    )
    return _problem("merfish-like", reference, cells, PRESETS["merfish-like"].window, "half-open")


def load_problem(name: str, **sizes: int) -> Problem:
    if name == "starmap":
        return starmap_problem()
    if name == "synthetic":
        return synthetic_problem()
    if name == "merfish-like":
        return merfish_problem(**sizes)
    raise ValueError(f"unknown problem {name!r}; use starmap, synthetic or merfish-like")


def train_reference(
    problem: Problem, *, engine: str, seed: int = 0, device: str = "cpu", **overrides: Any
) -> tuple[Any, dict[str, Any]]:
    """CondSCVI as the adapter trains it; returns (model, steps and per-epoch timings)."""
    import scvi
    from scvi.model import CondSCVI

    from toolkit.engines import train_condscvi_fast

    settings = {**REFERENCE, **overrides}
    reference = problem.reference.copy()
    CondSCVI.setup_anndata(reference, labels_key="cell_type")
    scvi.settings.seed = seed
    model = CondSCVI(
        reference,
        n_hidden=settings["n_hidden"],
        n_latent=settings["n_latent"],
        n_layers=settings["n_layers"],
        weight_obs=False,
        prior="normal",
    )
    timer = EpochTimer()
    timer.stamp()
    if engine == "scvi":
        model.train(
            max_epochs=settings["max_epochs"],
            lr=settings["lr"],
            batch_size=settings["batch_size"],
            train_size=1,
            accelerator="gpu" if device.startswith("cuda") else "cpu",
            enable_progress_bar=False,
            callbacks=[timer.callback()],
        )
        n_steps = int(model.trainer.global_step)
    else:
        result = train_condscvi_fast(
            model,
            max_epochs=settings["max_epochs"],
            lr=settings["lr"],
            batch_size=settings["batch_size"],
            device=device,
            compile=engine == "fast-compiled",
            on_epoch_end=timer.stamp,
        )
        n_steps = result.n_steps
    wall, cpu = timer.durations()
    return model, {"seconds": float(wall.sum()), "n_steps": n_steps, "epoch_wall": wall, "epoch_cpu": cpu}


def freeze_vamp_prior(sc_model: Any, seed: int = 0) -> dict:
    """Compute the vamp prior once (k-means) and make the model hand it over as tensors from now on.

    Every DestVI built from this reference then starts from the same prior; only V, gamma and the
    encoders' initialisation depend on the DestVI seed. In float32, as the adapter hands it over
    (toolkit.methods.destvi): scvi-tools returns float64, with which variant current's augmentation fails
    (its prior draws meet the float32 decoder) and variant 2022's prior term runs in double precision.
    """
    import scvi
    import torch

    scvi.settings.seed = seed
    vamp = sc_model.get_vamp_prior(sc_model.adata, p=VAMP_PRIOR_P)
    prior = {key: torch.as_tensor(value, dtype=torch.float32) for key, value in vamp.items()}
    sc_model.get_vamp_prior = lambda *a, **k: {key: value.clone() for key, value in prior.items()}
    return prior


def make_destvi(problem: Problem, sc_model: Any, *, seed: int, amortization: str, variant: str = "2022") -> Any:
    """DestVI as the adapter builds it (the adapter's `variant`, VARIANTS: 2022 or current), seeded as the
    adapter seeds it."""
    import scvi
    from scvi.model import DestVI

    from toolkit.methods.destvi import VARIANTS

    scvi.settings.seed = seed
    return DestVI.from_rna_model(
        problem.spots.copy(), sc_model, vamp_prior_p=VAMP_PRIOR_P, amortization=amortization, **VARIANTS[variant]
    )


def train_destvi(
    model: Any,
    *,
    engine: str,
    max_epochs: int,
    batch_size: int,
    lr: float = 3e-3,
    n_epochs_kl_warmup: int = 200,
    device: str = "cpu",
    seed: int | None = None,
    limit_batches: int | None = None,
    trajectory: Any = None,
) -> dict[str, Any]:
    """Train with `scvi` (stock) or one of FAST_ENGINES; returns steps and per-epoch timings.

    `limit_batches`: only the first N minibatches of each epoch (timing a large tissue in seconds).
    `trajectory`: a TrajectoryProbe for the fast engine (timing the accuracy trajectory's cost)."""
    timer = EpochTimer()
    timer.stamp()
    if engine == "scvi":
        model.train(
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            train_size=1.0,
            accelerator="gpu" if device.startswith("cuda") else "cpu",
            enable_progress_bar=False,
            callbacks=[timer.callback()],
            **({"limit_train_batches": limit_batches} if limit_batches else {}),
        )
        n_steps = int(model.trainer.global_step)
    else:
        from toolkit.engines import train_destvi_fast

        result = train_destvi_fast(
            model,
            max_epochs=max_epochs,
            lr=lr,
            batch_size=batch_size,
            n_epochs_kl_warmup=n_epochs_kl_warmup,
            seed=seed,
            device=device,
            compile=FAST_ENGINES[engine],
            on_epoch_end=timer.stamp,
            limit_batches=limit_batches,
            trajectory=trajectory,
        )
        n_steps = result.n_steps
    wall, cpu = timer.durations()
    return {"seconds": float(wall.sum()), "n_steps": n_steps, "epoch_wall": wall, "epoch_cpu": cpu}


class EpochTimer:
    """Wall and process CPU time of each training epoch (synchronised on CUDA).

    CPU time counts every thread of this process only, so it is much less disturbed than wall
    time by other jobs on a shared machine.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def stamp(self, *_: Any) -> None:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def callback(self) -> Any:
        """A Lightning callback that stamps at the end of every stock training epoch."""
        import lightning.pytorch as pl

        stamp = self.stamp

        class _Timer(pl.Callback):
            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                stamp()

        return _Timer()

    def durations(self) -> tuple[np.ndarray, np.ndarray]:
        return np.diff(np.asarray(self.wall)), np.diff(np.asarray(self.cpu))


def proportions(model: Any, amortization: str) -> pd.DataFrame:
    """Per-spot proportions as the model uses them (softmax(V) for latent: scvi returns softplus(V))."""
    if amortization in ("both", "proportion"):
        return model.get_proportions()
    import torch

    weights = torch.softmax(model.module.V.detach().cpu(), dim=0).T.numpy()[:, : len(model.cell_type_mapping)]
    weights = weights / weights.sum(axis=1, keepdims=True)
    return pd.DataFrame(weights, index=model.adata.obs_names, columns=list(model.cell_type_mapping))


def mean_pcc(problem: Problem, predicted: pd.DataFrame) -> float:
    """Mean per-cell-type PCC against the truth, prepared and NaN-filled as the benchmark did."""
    prepared = li2022_prediction(predicted, problem.truth.columns)
    return score(problem.truth, prepared).means()["pcc_cell_type"]

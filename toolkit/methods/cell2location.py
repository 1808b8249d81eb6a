"""Cell2location, the study's baseline: a regression model of reference signatures, then the spatial model.

cell2location 0.1.5 fails to import with pyro-ppl 1.9.2 (`deep_getattr` moved); the shim below restores
the one helper it needs. Absolute abundances are turned into
proportions by dividing by each spot's total.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import anndata as ad
import pandas as pd
from pydantic import Field

from toolkit.methods.base import FitResult, Scorer, TaskSpec
from toolkit.methods.configs import Axis, OneVariantGrid, Strict
from toolkit.methods.description import MethodDescription
from toolkit.methods.scvi_common import configure_scvi, history, spots_for

REFERENCE_KIND = "c2l-regression"


class RegressionConfig(Strict):
    """Cell2location's reference regression model (negative binomial signatures per cell type)."""

    max_epochs: int = Field(default=250, gt=0)
    batch_size: int = Field(default=2500, gt=0)
    lr: float = Field(default=0.002, gt=0)
    num_samples: int = Field(default=1000, gt=0)
    seed: int = 0


class Cell2locationGrid(OneVariantGrid):
    """Cell2location: the baseline of the study. batch_size 0 = all spots in one batch (its default)."""

    name: Literal["cell2location"]
    max_epochs: Axis = Field(default=[30000])
    batch_size: Axis = Field(default=[0])
    lr: float = Field(default=0.002, gt=0)
    N_cells_per_location: float = Field(default=8, gt=0)
    detection_alpha: float = Field(default=20, gt=0)
    num_samples: int = Field(default=1000, gt=0)
    reference: RegressionConfig = RegressionConfig()

    min_batch_size: ClassVar[int] = 0

    def params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "N_cells_per_location": self.N_cells_per_location,
            "detection_alpha": self.detection_alpha,
            "num_samples": self.num_samples,
        }


Grid = Cell2locationGrid
"""This method's part of the sweep file (the registry in toolkit.methods collects every `Grid`)."""
DESCRIPTION = MethodDescription("cell2location", order=0)
"""The study's baseline, first in the maps; its batch 0 trains on every spot at once."""
SIGNATURES = "signatures.csv"


def _import_cell2location() -> Any:
    import pyro.infer.autoguide.utils as autoguide_utils

    if not hasattr(autoguide_utils, "deep_getattr"):
        autoguide_utils.deep_getattr = lambda obj, name: functools.reduce(getattr, name.split("."), obj)
    import cell2location

    return cell2location


def _seed(seed: int) -> None:
    import pyro
    import scvi

    scvi.settings.seed = seed
    pyro.set_rng_seed(seed)


def train_reference(reference: ad.AnnData, config: dict[str, Any], model_dir: Path) -> float:
    """Fit the regression model; save the per-type expression signatures (genes x types) as CSV."""
    regression_model = _import_cell2location().models.RegressionModel
    configure_scvi()
    _seed(config["seed"])
    reference = reference.copy()
    regression_model.setup_anndata(reference, labels_key="cell_type")
    model = regression_model(reference)
    start = time.perf_counter()
    model.train(
        max_epochs=config["max_epochs"], batch_size=config["batch_size"], lr=config["lr"], enable_progress_bar=False
    )
    elapsed = time.perf_counter() - start
    reference = model.export_posterior(
        reference, sample_kwargs={"num_samples": config["num_samples"], "batch_size": config["batch_size"]}
    )
    prefix = "means_per_cluster_mu_fg_"
    signatures = reference.varm["means_per_cluster_mu_fg"]
    signatures.columns = [column.removeprefix(prefix) for column in signatures.columns]
    model_dir.mkdir(parents=True, exist_ok=True)
    signatures.to_csv(model_dir / SIGNATURES)
    return elapsed


def fit(
    spots: ad.AnnData, reference: ad.AnnData, model_dir: Path | None, task: TaskSpec, score: Scorer | None = None
) -> FitResult:
    """Fit Cell2location on the spots with the saved signatures; proportions = q05 abundances / total.

    Scored at the end only (`score` unused): its proportions come from sampling the posterior, which
    would draw from the generators that training uses, and cost minutes per point."""
    from toolkit.engines import checkpoint

    spatial_model = _import_cell2location().models.Cell2location
    configure_scvi()
    params = task.params
    signatures = pd.read_csv(model_dir / SIGNATURES, index_col=0)
    st = spots_for(spots, reference)
    st = st[:, signatures.index].copy()
    _seed(task.seed)
    spatial_model.setup_anndata(st)
    model = spatial_model(
        st,
        cell_state_df=signatures,
        N_cells_per_location=params["N_cells_per_location"],
        detection_alpha=params["detection_alpha"],
    )
    batch_size = None if task.batch_size == 0 else int(task.batch_size)
    start = time.perf_counter()
    model.train(
        max_epochs=task.max_epochs,
        batch_size=batch_size,
        train_size=1,
        lr=params["lr"],
        enable_progress_bar=False,
        **checkpoint.progress_kwargs(),  # epochs for `spotsweep status`; a cut-off fit starts over
    )
    train_time = time.perf_counter() - start
    st = model.export_posterior(st, sample_kwargs={"num_samples": params["num_samples"], "batch_size": st.n_obs})
    abundance = st.obsm["q05_cell_abundance_w_sf"]
    abundance.columns = [column.removeprefix("q05cell_abundance_w_sf_") for column in abundance.columns]
    return FitResult(
        proportions=abundance.div(abundance.sum(axis=1), axis=0),
        history=history(model),
        n_steps=int(model.trainer.global_step),
        train_time_s=train_time,
        settings={"batch_size": batch_size or st.n_obs},
    )

"""Stereoscope (scvi-tools' external module): per-type negative binomials from the reference, then
per-spot mixture weights. Cheap, and a second baseline beside Cell2location."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import anndata as ad
from pydantic import Field

from toolkit.methods.base import FitResult, Scorer, TaskSpec
from toolkit.methods.configs import Axis, OneVariantGrid, Strict
from toolkit.methods.description import MethodDescription
from toolkit.methods.scvi_common import configure_scvi, history, spots_for

REFERENCE_KIND = "rnastereoscope"


class RNAStereoscopeConfig(Strict):
    """Stereoscope's reference model (per-type negative binomial parameters)."""

    max_epochs: int = Field(default=400, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=0.01, gt=0)
    seed: int = 0


class StereoscopeGrid(OneVariantGrid):
    """Stereoscope (scvi-tools' external module): a second, cheap baseline."""

    name: Literal["stereoscope"]
    max_epochs: Axis = Field(default=[400])
    batch_size: Axis = Field(default=[128])
    lr: float = Field(default=0.01, gt=0)
    reference: RNAStereoscopeConfig = RNAStereoscopeConfig()

    def params(self) -> dict[str, Any]:
        return {"lr": self.lr}


Grid = StereoscopeGrid
"""This method's part of the sweep file (the registry in toolkit.methods collects every `Grid`)."""
DESCRIPTION = MethodDescription("stereoscope", order=2)
"""After the study's two methods in the maps."""


def train_reference(reference: ad.AnnData, config: dict[str, Any], model_dir: Path) -> float:
    import scvi
    from scvi.external import RNAStereoscope

    configure_scvi()
    scvi.settings.seed = config["seed"]
    reference = reference.copy()
    RNAStereoscope.setup_anndata(reference, labels_key="cell_type")
    model = RNAStereoscope(reference)
    start = time.perf_counter()
    model.train(
        max_epochs=config["max_epochs"], lr=config["lr"], batch_size=config["batch_size"], enable_progress_bar=False
    )
    elapsed = time.perf_counter() - start
    model.save(str(model_dir), overwrite=True, save_anndata=False)
    return elapsed


def fit(
    spots: ad.AnnData, reference: ad.AnnData, model_dir: Path | None, task: TaskSpec, score: Scorer | None = None
) -> FitResult:
    """SpatialStereoscope from the saved RNAStereoscope; with `score`, scored during training too (its
    proportions are a deterministic function of its parameters, cheap to read at any step)."""
    import scvi
    from scvi.external import RNAStereoscope, SpatialStereoscope

    configure_scvi()
    sc_model = RNAStereoscope.load(str(model_dir), adata=reference.copy())
    st = spots_for(spots, reference)
    scvi.settings.seed = task.seed
    SpatialStereoscope.setup_anndata(st)
    model = SpatialStereoscope.from_rna_model(st, sc_model)
    probe, callbacks = _trajectory(model, task, score)
    start = time.perf_counter()
    model.train(
        max_epochs=task.max_epochs,
        lr=task.params["lr"],
        batch_size=int(task.batch_size),
        enable_progress_bar=False,
        **callbacks,
    )
    train_time = time.perf_counter() - start
    return FitResult(
        proportions=model.get_proportions(),
        history=history(model),
        n_steps=int(model.trainer.global_step),
        train_time_s=train_time,
        settings={"batch_size": int(task.batch_size)},
        trajectory=list(probe.points) if probe is not None else None,
    )


def _trajectory(model: object, task: TaskSpec, score: Scorer | None) -> tuple[object, dict]:
    """The probe and its Lightning callback (none without a scorer)."""
    if score is None:
        return None, {}
    from toolkit.engines.fast import steps_per_run
    from toolkit.engines.lightning_trajectory import TrajectoryCallback
    from toolkit.engines.trajectory import DEFAULT_POINTS, TrajectoryProbe, scoring_steps

    total = steps_per_run(model.adata.n_obs, int(task.batch_size), task.max_epochs)
    probe = TrajectoryProbe(scoring_steps(total, DEFAULT_POINTS), lambda: score(model.get_proportions()))
    return probe, {"callbacks": [TrajectoryCallback(probe)]}

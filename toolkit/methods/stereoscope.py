"""Stereoscope (scvi-tools' external module): per-type negative binomials from the reference, then
per-spot mixture weights. Cheap, and a second baseline beside Cell2location."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anndata as ad

from toolkit.methods.base import FitResult
from toolkit.methods.scvi_common import configure_scvi, history, spots_for
from toolkit.sweep import Task

REFERENCE_KIND = "rnastereoscope"


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


def fit(spots: ad.AnnData, reference: ad.AnnData, model_dir: Path | None, task: Task) -> FitResult:
    import scvi
    from scvi.external import RNAStereoscope, SpatialStereoscope

    configure_scvi()
    sc_model = RNAStereoscope.load(str(model_dir), adata=reference.copy())
    st = spots_for(spots, reference)
    scvi.settings.seed = task.seed
    SpatialStereoscope.setup_anndata(st)
    model = SpatialStereoscope.from_rna_model(st, sc_model)
    start = time.perf_counter()
    model.train(
        max_epochs=task.max_epochs, lr=task.params["lr"], batch_size=int(task.batch_size), enable_progress_bar=False
    )
    train_time = time.perf_counter() - start
    return FitResult(
        proportions=model.get_proportions(),
        history=history(model),
        n_steps=int(model.trainer.global_step),
        train_time_s=train_time,
        settings={"batch_size": int(task.batch_size)},
    )

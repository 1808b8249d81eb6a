"""Controls that calibrate the metrics: what a perfect, an uninformed and a simple method score.

- truth: the true proportions (the best a method can do; PCC 1 where defined);
- uniform: every reference type equally likely;
- reference_frequencies: the reference's type frequencies in every spot (what a method learns when it
  ignores the spots);
- nnls: non-negative least squares of each spot's normalised counts on the reference's mean profiles
  (scipy.optimize.nnls), a classic deconvolution with no training.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, model_validator
from scipy.optimize import nnls

from toolkit.methods.base import FitResult, Scorer, TaskSpec
from toolkit.methods.configs import NOT_APPLICABLE, Axis, MethodGrid
from toolkit.methods.description import MethodDescription

REFERENCE_KIND = None


CONTROLS = ("truth", "uniform", "reference_frequencies", "nnls")


class ControlGrid(MethodGrid):
    """Controls that calibrate the metrics: the best (truth) and naive answers (the kind is the variant)."""

    name: Literal["control"]
    kind: Axis = Field(default=list(CONTROLS))

    @model_validator(mode="after")
    def _check_values(self) -> ControlGrid:
        for value in self.kind:
            if value not in CONTROLS:
                raise ValueError(f"control '{value}' is unknown; use {', '.join(CONTROLS)}")
        return self

    def axes(self) -> dict[str, list]:
        return {
            "variant": self.kind,
            "amortization": [NOT_APPLICABLE],
            "batch_size": [0],
            "max_epochs": [0],
            "seed": [0],
        }


Grid = ControlGrid
"""This method's part of the sweep file (the registry in toolkit.methods collects every `Grid`)."""
DESCRIPTION = MethodDescription("control", order=3, trains=False)
"""Controls train nothing: reference levels in the report, never a map, a runtime or a trajectory."""


def _dense(matrix: object) -> np.ndarray:
    return np.asarray(matrix.todense() if sp.issparse(matrix) else matrix, dtype=float)


def _mean_profiles(reference) -> pd.DataFrame:
    """Types x genes: each type's mean expression share per gene (library-size normalised)."""
    counts = _dense(reference.X)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    labels = reference.obs["cell_type"].astype("category")
    profiles = pd.DataFrame(shares, columns=reference.var_names).groupby(labels.to_numpy(), observed=True).mean()
    return profiles.reindex(labels.cat.categories)


def _nnls(spots, reference) -> np.ndarray:
    profiles = _mean_profiles(reference)
    counts = _dense(spots[:, reference.var_names].X)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    weights = np.array([nnls(profiles.to_numpy().T, row)[0] for row in shares])
    total = weights.sum(axis=1, keepdims=True)
    return np.where(total > 0, weights / np.where(total > 0, total, 1), 1 / weights.shape[1])


def fit(spots, reference, model_dir, task: TaskSpec, score: Scorer | None = None) -> FitResult:
    """A control computes once, without training: nothing to score along the way (`score` unused)."""
    types = list(reference.obs["cell_type"].astype("category").cat.categories)
    n_spots = spots.n_obs
    if task.variant == "truth":
        counts = spots.obsm["cell_counts"].reindex(columns=types, fill_value=0).to_numpy(dtype=float)
        total = counts.sum(axis=1, keepdims=True)
        values = np.where(total > 0, counts / np.where(total > 0, total, 1), 1 / len(types))
    elif task.variant == "uniform":
        values = np.full((n_spots, len(types)), 1 / len(types))
    elif task.variant == "reference_frequencies":
        frequencies = reference.obs["cell_type"].value_counts(normalize=True).reindex(types).to_numpy()
        values = np.tile(frequencies, (n_spots, 1))
    else:
        values = _nnls(spots, reference)
    return FitResult(
        proportions=pd.DataFrame(values, index=spots.obs_names, columns=types),
        history=pd.DataFrame(index=pd.RangeIndex(0, name="epoch")),
        n_steps=0,
        train_time_s=0.0,
    )

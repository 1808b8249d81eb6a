"""A complete method in one file: the example of how to add one (toolkit/methods/__init__.py).

`echo` echoes the reference: each spot's expression shares as a mixture of the reference cell types' mean
shares, the mixture's weights (a softmax, so they are proportions) fitted by minibatch gradient descent on
the squared error, in numpy. It trains in minibatches of spots for epochs as a real method does, so that
plan counts its steps, the report draws its maps, lines and runtimes, and its accuracy is scored during
training (each spot's weights are its own, so the batch size changes the steps, not the result).
Registered only by tests/test_new_method.py, with one line: `ADAPTERS["echo"] = "tests.methods_echo"`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from toolkit.methods.base import FitResult, Scorer, TaskSpec
from toolkit.methods.configs import Axis, OneVariantGrid
from toolkit.methods.description import MethodDescription

REFERENCE_KIND = None
"""No reference model to train once per dataset: the mean shares are computed in each task."""


class EchoGrid(OneVariantGrid):
    """The sweep file's `- name: echo` entry: batch sizes, epochs and seeds to sweep, a learning rate."""

    name: Literal["echo"]
    batch_size: Axis = Field(default=[16])
    max_epochs: Axis = Field(default=[3])
    lr: float = Field(default=2.0, gt=0)

    def params(self) -> dict[str, Any]:
        return {"lr": self.lr}


Grid = EchoGrid


class EchoDescription(MethodDescription):
    """A method trained in minibatches for `max_epochs` epochs: the defaults say what plan and the task
    runner need; only its map label is its own (the default, method and variant, would title two batch
    sizes alike)."""

    def label(self, config: dict[str, Any]) -> str:
        return f"echo\nbatch {config['batch_size']}\n{config['max_epochs']} epochs"


DESCRIPTION = EchoDescription("echo")


def _shares(matrix: Any) -> np.ndarray:
    """Each row's counts as shares of its total (the genes' scale made comparable across spots and cells)."""
    counts = np.asarray(matrix.todense() if sp.issparse(matrix) else matrix, dtype=float)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def fit(
    spots: ad.AnnData, reference: ad.AnnData, model_dir: Path | None, task: TaskSpec, score: Scorer | None = None
) -> FitResult:
    """Fit every spot's mixture weights, scoring the proportions at the end of each epoch (with `score`)."""
    labels = reference.obs["cell_type"].astype("category")
    types = list(labels.cat.categories)
    scale = reference.n_vars  # shares times the gene count: values near 1, so one learning rate suits any panel
    profiles = pd.DataFrame(_shares(reference.X) * scale).groupby(labels.to_numpy(), observed=True).mean()
    profiles = profiles.reindex(types).to_numpy()
    targets = _shares(spots[:, reference.var_names].X) * scale
    rng = np.random.default_rng(task.seed)
    logits = np.zeros((spots.n_obs, len(types)))
    batch = int(task.batch_size) or spots.n_obs
    losses, trajectory, step = [], [], 0
    start = time.perf_counter()
    for epoch in range(1, task.max_epochs + 1):
        for rows in np.array_split(rng.permutation(spots.n_obs), max(1, -(-spots.n_obs // batch))):
            weights = _softmax(logits[rows])
            residual = weights @ profiles - targets[rows]
            grad = residual @ profiles.T / profiles.shape[1]
            logits[rows] -= task.params["lr"] * weights * (grad - (grad * weights).sum(axis=1, keepdims=True))
            step += 1
        proportions = pd.DataFrame(_softmax(logits), index=spots.obs_names, columns=types)
        losses.append(float(np.mean((proportions.to_numpy() @ profiles - targets) ** 2)))
        if score is not None:
            trajectory.append({"step": step, "epoch": float(epoch), **score(proportions)})
    return FitResult(
        proportions=proportions,
        history=pd.DataFrame({"loss_train": losses}, index=pd.RangeIndex(1, len(losses) + 1, name="epoch")),
        n_steps=step,
        train_time_s=time.perf_counter() - start,
        settings={"batch_size": batch},
        trajectory=trajectory if score is not None else None,
    )

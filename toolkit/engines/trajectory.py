"""Scoring a model while it trains, without changing its training: the accuracy trajectory.

A sweep that scores only its final models cannot say when a configuration had converged, nor compare
batch sizes at equal optimizer steps. A `TrajectoryProbe` scores the model at chosen optimizer steps
(evenly spaced, ending at the last); both engines call it after those steps, the fast engine from its
loop and stock training from a Lightning callback (`lightning_trajectory`).

Scoring must leave training exactly as it was: it runs in eval mode without gradients (no dropout
noise drawn, no batch-norm statistics updated), and every random generator (torch's CPU and CUDA ones,
numpy's, Python's) is put back afterwards, since scvi-tools' own prediction draws from them (its
DataLoader takes a seed). On CPU, eager, a run with a probe ends bitwise where one without ends.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.engines.session import rng_state, set_rng_state

DEFAULT_POINTS = 50
"""Points per task unless a sweep says otherwise: enough for a curve, cheap beside the training."""


def scoring_steps(total_steps: int, n_points: int = DEFAULT_POINTS) -> frozenset[int]:
    """`n_points` optimizer steps evenly spaced over a run of `total_steps`, the last one included (every
    step when the run is shorter; none when `n_points` is 0)."""
    if n_points <= 0 or total_steps <= 0:
        return frozenset()
    points = np.round(np.linspace(total_steps / n_points, total_steps, n_points)).astype(int)
    return frozenset(int(step) for step in points if step >= 1)


@contextlib.contextmanager
def untouched(module: Any) -> Iterator[None]:
    """Within this block the module predicts in eval mode without gradients; afterwards its mode and every
    random generator are as they were."""
    import torch

    saved, was_training = rng_state(), module.training
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scvi-tools warns that a model in training is "not trained"
            yield
    finally:
        module.train(was_training)
        set_rng_state(saved)


@dataclass
class TrajectoryProbe:
    """Which optimizer steps to score at, how to score, and the points scored so far.

    `score()` scores the model as it stands and returns plain values (JSON- and checkpoint-safe); a point
    records them with its optimizer step and its epoch (fractional inside an epoch). A resumed training
    restores `points` from its checkpoint and scores only the steps after it, so that every point is
    there exactly once.
    """

    steps: frozenset[int]
    score: Callable[[], dict[str, Any]]
    points: list[dict[str, Any]] = field(default_factory=list)
    on_point: Callable[[dict[str, Any]], None] | None = None
    """Hears each point as it is taken (a tuner reads a running task's points to prune it)."""

    def due(self, step: int) -> bool:
        return step in self.steps and not (self.points and self.points[-1]["step"] >= step)

    def take(self, module: Any, step: int, epoch: float) -> None:
        """Score the model after `step` optimizer steps (`epoch` epochs), leaving its training untouched."""
        with untouched(module):
            scored = self.score()
        self.points.append({"step": int(step), "epoch": float(epoch), **scored})
        if self.on_point is not None:
            self.on_point(self.points[-1])

    def restore(self, points: list[dict[str, Any]]) -> None:
        """Points of an earlier attempt, from its checkpoint."""
        self.points = [dict(point) for point in points]

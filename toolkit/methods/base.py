"""What every method adapter takes and returns, so that tasks, scores and the aggregate never depend on the method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd


class TaskSpec(Protocol):
    """The configuration an adapter fits: what it reads of a sweep task (`toolkit.sweep.Task` is one).

    A protocol, so that the adapters (science) never import the sweep machinery that expands tasks.
    """

    @property
    def method(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def amortization(self) -> str: ...
    @property
    def batch_size(self) -> int | str: ...
    @property
    def max_epochs(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def params(self) -> dict[str, Any]:
        """Method settings that are not swept (learning rate, warm-up, pass-through keywords)."""
        ...

    @property
    def extra_settings(self) -> dict[str, Any]:
        """Swept settings a method declares beyond the common ones (destVI: max_steps, n_steps_kl_warmup,
        drop_last, reference_seed), present only where they differ from their "as before" value."""
        ...


Scorer = Callable[[pd.DataFrame], dict[str, Any]]
"""Scores predicted proportions (spots x cell types) against the task's truth, as the final result is
scored, into plain values: what an adapter calls to record its accuracy trajectory during training."""


@dataclass
class FitResult:
    """One fitted configuration: predictions plus what it cost."""

    proportions: pd.DataFrame
    """Spots x cell types, rows summing to 1."""
    history: pd.DataFrame
    """Training losses, one row per epoch."""
    n_steps: int
    train_time_s: float
    states: np.ndarray | None = None
    """Per-spot per-type cell states (spots, state dims, cell types), where the method estimates them."""
    settings: dict = field(default_factory=dict)
    """Settings as the method resolved them (what the library actually ran with)."""
    trajectory: list[dict[str, Any]] | None = None
    """Scores during training (each point: step, epoch and the scorer's values); None where the method's
    training cannot be scored along the way (its results are "final only")."""

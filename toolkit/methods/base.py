"""What every method adapter returns, so that tasks, scores and the aggregate never depend on the method."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


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

"""Training engines for destVI: `scvi` (stock scvi-tools/Lightning) and `fast` (a lean loop over the same module).

See results/engine.md for what the fast engine keeps, what it drops, its speed and its equivalence.
"""

from toolkit.engines.fast import (
    Checkpointing,
    FastTrainResult,
    TrainingStopped,
    steps_per_run,
    train_condscvi_fast,
    train_destvi_fast,
    train_fast,
)
from toolkit.engines.packing import fit_many

ENGINES: tuple[str, ...] = ("scvi", "fast")

__all__ = [
    "ENGINES",
    "Checkpointing",
    "FastTrainResult",
    "TrainingStopped",
    "fit_many",
    "steps_per_run",
    "train_condscvi_fast",
    "train_destvi_fast",
    "train_fast",
]

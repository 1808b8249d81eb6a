"""A sweep expands into Tasks: one frozen, hashable configuration each, named by a hash of its content.

The id is a pure function of what determines the result (dataset, reference training, method settings),
so resubmitting a sweep finds the tasks it already finished, and two sweeps that share a configuration
share its result directory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from typing import Any

from toolkit.config import CondSCVIConfig, DatasetConfig, SweepConfig

SWEPT_SETTINGS = ("dataset", "method", "variant", "amortization", "batch_size", "max_epochs", "seed")
"""The settings that become named dimensions of the aggregate dataset, in this order."""


def content_hash(payload: Any, length: int = 10) -> str:
    """A short stable hash of a JSON-able payload (sorted keys: field order never changes an id)."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Task:
    """One configuration of one method on one dataset: the unit that runs as one process or array task."""

    dataset: str
    method: str
    variant: str
    amortization: str
    batch_size: int
    max_epochs: int
    seed: int
    lr: float
    n_epochs_kl_warmup: int
    dataset_config: dict
    reference_config: dict

    @property
    def id(self) -> str:
        readable = (
            f"{self.dataset}-{self.method}-{self.variant}-{self.amortization}"
            f"-b{self.batch_size}-e{self.max_epochs}-s{self.seed}"
        )
        return f"{readable}-{content_hash(self.to_dict(), 8)}"

    @property
    def settings(self) -> dict[str, Any]:
        """The swept settings only: the coordinates of this task in the aggregate."""
        return {name: getattr(self, name) for name in SWEPT_SETTINGS}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        return cls(**data)


def dataset_fingerprint(dataset: DatasetConfig) -> dict:
    """What identifies a dataset's content: its config, with paths as given."""
    return dataset.model_dump(mode="json")


def reference_fingerprint(reference: CondSCVIConfig) -> dict:
    return reference.model_dump(mode="json")


def expand(sweep: SweepConfig) -> list[Task]:
    """Every dataset x every method grid point, in a stable order."""
    tasks: list[Task] = []
    for dataset in sweep.datasets:
        for grid in sweep.methods:
            axes = itertools.product(grid.variant, grid.amortization, grid.batch_size, grid.max_epochs, grid.seed)
            for variant, amortization, batch_size, max_epochs, seed in axes:
                tasks.append(
                    Task(
                        dataset=dataset.name,
                        method=grid.name,
                        variant=str(variant),
                        amortization=amortization,
                        batch_size=batch_size,
                        max_epochs=max_epochs,
                        seed=seed,
                        lr=grid.lr,
                        n_epochs_kl_warmup=grid.n_epochs_kl_warmup,
                        dataset_config=dataset_fingerprint(dataset),
                        reference_config=reference_fingerprint(sweep.reference),
                    )
                )
    return tasks

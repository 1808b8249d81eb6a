"""A sweep expands into Tasks: one frozen, hashable configuration each, named by a hash of its content.

The id is a pure function of what determines the result (dataset, reference training, method settings),
so resubmitting a sweep finds the tasks it already finished, and two sweeps that share a configuration
share its result directory. What is hashed is what the sweep set plus the defaults of the fields that
existed when ids were fixed; a field added since (`config.when_set`) counts only when it is set, so the
schema can grow without re-keying finished studies (tests/test_architecture.py pins the ids).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

from toolkit.config import SweepConfig, identity

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
    batch_size: int | str
    max_epochs: int
    seed: int
    params: dict = field(default_factory=dict)
    """Method settings that are not swept (learning rate, warm-up, pass-through keywords)."""
    dataset_config: dict = field(default_factory=dict)
    reference_config: dict | None = None
    """How the method's reference model is trained; None for methods without one."""
    extra_settings: dict = field(default_factory=dict)
    """Swept settings added since ids were fixed (a grid's `optional_axes`: max_steps, n_steps_kl_warmup,
    drop_last, reference_seed; a tuner's trial number), only those that differ from their "as before"
    value: part of the id only when present. `reference_seed` is also in `reference_config`, which names
    the reference model."""

    def __hash__(self) -> int:
        return hash(self.id)

    @cached_property
    def id(self) -> str:
        extra = self.extra_settings
        budget = f"t{extra['max_steps']}" if "max_steps" in extra else f"e{self.max_epochs}"
        marks = (
            ("-w{}".format(extra["n_steps_kl_warmup"]) if "n_steps_kl_warmup" in extra else "")
            + ("-dl" if extra.get("drop_last") else "")
            + ("-r{}".format(extra["reference_seed"]) if "reference_seed" in extra else "")
            + ("-n{}".format(extra["trial"]) if "trial" in extra else "")
        )
        readable = (
            f"{self.dataset}-{self.method}-{self.variant}-{self.amortization.replace('/', '')}"
            f"-b{self.batch_size}-{budget}{marks}-s{self.seed}"
        )
        return f"{readable}-{content_hash(self.to_dict(), 8)}"

    @property
    def settings(self) -> dict[str, Any]:
        """The swept settings: the coordinates of this task in the aggregate (optional ones where set)."""
        return {**{name: getattr(self, name) for name in SWEPT_SETTINGS}, **self.extra_settings}

    def setting(self, name: str, default: Any = None) -> Any:
        """One swept setting, optional ones included (`default` where this task does not set it)."""
        return self.settings.get(name, default)

    def to_dict(self) -> dict[str, Any]:
        """The task as hashed and sent to its process; `extra_settings` only when it holds something."""
        data = asdict(self)
        if not data["extra_settings"]:
            del data["extra_settings"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        return cls(**data)


def expand(sweep: SweepConfig) -> list[Task]:
    """Every dataset x every point of every method grid, in a stable order."""
    return [
        Task(
            dataset=dataset.name,
            method=grid.name,
            **{name: value for name, value in point.items() if name in SWEPT_SETTINGS},
            extra_settings={name: value for name, value in point.items() if name not in SWEPT_SETTINGS},
            params=grid.params(),
            dataset_config=identity(dataset),
            reference_config=grid.reference_config(point),
        )
        for dataset in sweep.datasets
        for grid in sweep.methods
        for point in grid.points()
    ]


def optional_settings(tasks: list[Task]) -> dict[str, Any]:
    """The optional swept settings some task of `tasks` sets, each with its "as before" value (the value of
    a task that does not set it), in the order the method grids declare them."""
    from toolkit.methods import grids

    defaults = {name: value for grid in grids() for name, value in grid.optional_axes.items()}
    present = {name for task in tasks for name in task.extra_settings}
    return {name: defaults.get(name) for name in defaults if name in present}


def count_tasks(sweep: SweepConfig) -> int:
    """How many tasks `expand` would make, without making them (a grid can be astronomically large)."""
    per_dataset = sum(math.prod(len(values) for values in grid.axes().values()) for grid in sweep.methods)
    return len(sweep.datasets) * per_dataset


def settings_of(summary: Any) -> list[str]:
    """The swept settings of an aggregate (an xarray Dataset): the dimensions of its per-task `status`, the
    optional ones (max_steps, drop_last, ...) included where the sweep set them."""
    return list(summary["status"].dims)


def trial_settings(summary: Any) -> list[str]:
    """A tuned aggregate's per-trial settings (batch_size, amortization, max_steps, lr, ...): coordinates
    along `trial`, not dimensions (toolkit.aggregate); [] for a sweep's aggregate."""
    if "trial" not in summary.dims:
        return []
    return [name for name, coord in summary.coords.items() if coord.dims == ("trial",) and name != "trial"]

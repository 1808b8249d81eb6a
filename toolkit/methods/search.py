"""The `search:` block of a method entry: the space `spotsweep tune` searches, and what it optimises.

A grid lists every value; a search gives ranges and choices, and Optuna picks the points (toolkit.tune).
The block is validated with the sweep, so that a bad range stops `spotsweep tune` (and `run`, which
ignores the block) with one sentence naming the file, the field and the fix, before anything trains.
A setting the search leaves out takes the grid's value; where the grid lists several, the tuner chooses
among them (toolkit/tune/space.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from toolkit.methods.configs import Strict


class IntRange(Strict):
    """Whole numbers from `low` to `high` (both included), on a log scale with `log: true`."""

    low: int = Field(ge=1)
    high: int = Field(ge=1)
    log: bool = False
    step: int = Field(default=1, ge=1)
    """Only multiples of `step` above `low` (not with `log`): e.g. a steps budget in hundreds."""

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"has low {self.low} above high {self.high}; give low <= high")
        if self.log and self.step != 1:
            raise ValueError("sets both log: true and a step; Optuna takes one of them, so remove step or log")
        return self


class FloatRange(Strict):
    """Numbers from `low` to `high`, on a log scale with `log: true` (a learning rate)."""

    low: float = Field(gt=0)
    high: float = Field(gt=0)
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"has low {self.low} above high {self.high}; give low <= high")
        return self


Metric = Literal["pcc", "ssim", "rmse", "js"]
MAXIMISED: frozenset[str] = frozenset({"pcc", "ssim"})
"""Higher is better for these metrics; rmse and js are minimised."""


class ObjectiveConfig(Strict):
    """What a trial scores: a metric per cell type (Li et al.'s), averaged over `cell_types`.

    None (the default): the excitatory layers where the data has them (STARmap's eL2/3 to eL6, or the
    synthetic tissue's ExcitatoryL2and3 to ExcitatoryL6), as the study's findings read them; all cell
    types otherwise (the report's mean per-cell-type metric)."""

    metric: Metric = "pcc"
    cell_types: list[str] | None = Field(default=None, min_length=1)

    @property
    def direction(self) -> str:
        return "maximize" if self.metric in MAXIMISED else "minimize"


SAMPLERS = ("tpe", "random", "gp", "nsga2")
PRUNERS = ("median", "hyperband", "none")


class SearchConfig(Strict):
    """A method entry's `search:` block (destVI's): ranges, choices, objective and the tuner's settings."""

    batch_size: IntRange | None = None
    max_steps: IntRange | None = None
    max_epochs: IntRange | None = None
    lr: FloatRange | None = None
    amortization: list[str] | None = Field(default=None, min_length=1)
    variant: list[str] | None = Field(default=None, min_length=1)
    drop_last: list[bool] | None = Field(default=None, min_length=1)
    objective: ObjectiveConfig = ObjectiveConfig()
    second_objective: Literal["train_time_s"] | None = None
    """`train_time_s`: also minimise the training seconds; the answer is then a Pareto front (no pruning:
    Optuna prunes single-objective studies only)."""
    seeds_per_trial: int = Field(default=1, ge=1, le=20)
    """Seeds a trial trains and averages (its objective is their mean)."""
    sampler: Literal["tpe", "random", "gp", "nsga2"] = "tpe"
    seed: int = Field(default=0, ge=0)
    """The sampler's seed (the tuner seed): the same seed, the same sequence of trials from the same results."""
    startup_trials: int = Field(default=5, ge=0)
    """Trials sampled at random before TPE models the results, and before the pruner prunes."""
    pruner: Literal["median", "hyperband", "none"] = "median"
    prune_interval_steps: int = Field(default=100, ge=1)
    """A trial's trajectory is reported at multiples of this many optimizer steps, so that trials of
    different budgets and batch sizes are compared at the same steps."""
    prune_warmup_steps: int = Field(default=0, ge=0)
    """No trial is pruned before this many optimizer steps."""

    @field_validator("variant", mode="before")
    @classmethod
    def _variant_as_text(cls, value: object) -> object:
        """`variant: [2022, current]`: YAML reads 2022 as a number, which the grid takes as the variant too."""
        if isinstance(value, list):
            return [str(item) if isinstance(item, int) and not isinstance(item, bool) else item for item in value]
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        if self.max_steps is not None and self.max_epochs is not None:
            raise ValueError("searches both max_steps and max_epochs; search one budget")
        known = {"amortization": {"both", "latent", "proportion", "none"}, "variant": {"2022", "current"}}
        for name, allowed in known.items():
            values = [str(value) for value in getattr(self, name) or []]
            for value in values:
                if value not in allowed:
                    raise ValueError(f"{name} '{value}' is unknown; use {', '.join(sorted(allowed))}")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a value twice")
        if self.drop_last is not None and len(set(self.drop_last)) != len(self.drop_last):
            raise ValueError("drop_last lists a value twice")
        if self.second_objective is not None and self.sampler == "gp":
            raise ValueError("sampler gp optimises one objective; use tpe or nsga2 with second_objective")
        return self

    def searched(self) -> list[str]:
        """The settings this block searches itself (the others come from the grid)."""
        names = ("variant", "amortization", "batch_size", "max_steps", "max_epochs", "lr", "drop_last")
        return [name for name in names if getattr(self, name) is not None]

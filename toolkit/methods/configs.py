"""What a sweep file may say about each method: validated grids that expand into task settings.

Every method fills the same swept settings (variant, amortization, batch_size, max_epochs, seed), so the
aggregate has one set of dimensions; a setting a method does not have holds NOT_APPLICABLE (or 0 for a
count it does not use). Everything else a method needs travels in the task's `params`.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

NOT_APPLICABLE = "n/a"


def _as_list(value: Any) -> Any:
    """Let a sweep axis be written as a scalar (`seed: 0`) or a list (`seed: [0, 1]`)."""
    return value if isinstance(value, list) else [value]


def _unique_list(value: list) -> list:
    if not value:
        raise ValueError("must list at least one value")
    if len(set(map(str, value))) != len(value):
        raise ValueError("lists a value twice")
    return value


Axis = Annotated[list, BeforeValidator(_as_list), AfterValidator(_unique_list)]
Engine = Literal["scvi", "fast"]
"""How a scvi-tools model is trained: stock (`scvi`, Lightning) or spotsweep's lean loop (`fast`)."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _whole_numbers(name: str, values: list, minimum: int) -> None:
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} {value!r} must be a whole number of at least {minimum}")


class MethodGrid(Strict):
    """Common to every method: the seeds to sweep, and how a grid expands."""

    seed: Axis = Field(default=[0])

    def axes(self) -> dict[str, list]:
        """Values of each swept setting (besides dataset and method)."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Settings that are not swept but still determine the result."""
        return {}

    def reference_config(self) -> dict[str, Any] | None:
        """What the method's reference model is trained with (None: the method trains none)."""
        reference = getattr(self, "reference", None)
        return None if reference is None else reference.model_dump(mode="json")

    def points(self) -> list[dict[str, Any]]:
        axes = self.axes()
        return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]

    @model_validator(mode="after")
    def _seeds(self) -> MethodGrid:
        _whole_numbers("seed", self.seed, 0)
        return self


class CondSCVIConfig(Strict):
    """How the CondSCVI reference model is trained, once per dataset and configuration."""

    max_epochs: int = Field(default=300, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    n_latent: int = Field(default=5, gt=0)
    n_hidden: int = Field(default=128, gt=0)
    n_layers: int = Field(default=2, gt=0)
    seed: int = 0
    engine: Engine = "fast"
    """How CondSCVI is trained: `fast` (spotsweep's lean loop, bitwise the same as stock on CPU) or `scvi`."""


class DestVIGrid(MethodGrid):
    """destVI: CondSCVI on the reference, then DestVI on the spots."""

    name: Literal["destvi"]
    variant: Axis = Field(default=["2022"])
    amortization: Axis = Field(default=["both"])
    batch_size: Axis = Field(default=[128])
    """Spots per minibatch, or `auto` = the study's advice, min(n_spots // 10, 128), at least 1."""
    max_epochs: Axis = Field(default=[2000])
    lr: float = Field(default=3e-3, gt=0)
    n_epochs_kl_warmup: int = Field(default=200, ge=0)
    vamp_prior_p: int = Field(default=15, gt=0)
    module_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to DestVI.from_rna_model (the module), over the variant's own settings."""
    plan_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Passed to DestVI.train(plan_kwargs=...), e.g. ct_sparsity_weight, beta_reg, eta_reg."""
    engine: Engine = "fast"
    """`fast`: scvi-tools' own module and loss in spotsweep's lean loop (results/engine.md); `scvi`: stock
    DestVI.train through Lightning. Eager `fast` replays stock training exactly on CPU, only faster."""
    compile: bool = False
    """With engine `fast`: torch.compile the step. Faster for long runs at small batches after a one-off
    compilation (10 s to 2 min per task), and equal to stock statistically rather than bit for bit."""
    reference: CondSCVIConfig = CondSCVIConfig()

    @model_validator(mode="after")
    def _check_values(self) -> DestVIGrid:
        variants = [str(value) for value in self.variant]
        for value in variants:
            if value not in {"2022", "current"}:
                raise ValueError(f"variant '{value}' is unknown; use 2022 or current")
        for value in self.amortization:
            if value not in {"both", "latent", "proportion", "none"}:
                raise ValueError(f"amortization '{value}' is unknown; use both, latent, proportion or none")
            if value in {"proportion", "none"} and "current" in variants:
                raise ValueError(
                    f"amortization '{value}' needs the normal prior of variant 2022 (the current default is a "
                    "mixture prior); sweep it with variant 2022 only"
                )
        _whole_numbers("batch_size", [v for v in self.batch_size if v != "auto"], 1)
        _whole_numbers("max_epochs", self.max_epochs, 1)
        if self.compile and self.engine != "fast":
            raise ValueError("compile: true needs engine: fast (stock scvi-tools training is not compiled)")
        return self

    def axes(self) -> dict[str, list]:
        return {
            "variant": [str(value) for value in self.variant],
            "amortization": self.amortization,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "seed": self.seed,
        }

    def params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "n_epochs_kl_warmup": self.n_epochs_kl_warmup,
            "vamp_prior_p": self.vamp_prior_p,
            "module_kwargs": self.module_kwargs,
            "plan_kwargs": self.plan_kwargs,
            "engine": self.engine,
            "compile": self.compile,
        }


class RegressionConfig(Strict):
    """Cell2location's reference regression model (negative binomial signatures per cell type)."""

    max_epochs: int = Field(default=250, gt=0)
    batch_size: int = Field(default=2500, gt=0)
    lr: float = Field(default=0.002, gt=0)
    num_samples: int = Field(default=1000, gt=0)
    seed: int = 0


class Cell2locationGrid(MethodGrid):
    """Cell2location: the baseline of the study. batch_size 0 = all spots in one batch (its default)."""

    name: Literal["cell2location"]
    max_epochs: Axis = Field(default=[30000])
    batch_size: Axis = Field(default=[0])
    lr: float = Field(default=0.002, gt=0)
    N_cells_per_location: float = Field(default=8, gt=0)
    detection_alpha: float = Field(default=20, gt=0)
    num_samples: int = Field(default=1000, gt=0)
    reference: RegressionConfig = RegressionConfig()

    @model_validator(mode="after")
    def _check_values(self) -> Cell2locationGrid:
        _whole_numbers("batch_size", self.batch_size, 0)
        _whole_numbers("max_epochs", self.max_epochs, 1)
        return self

    def axes(self) -> dict[str, list]:
        return {
            "variant": ["default"],
            "amortization": [NOT_APPLICABLE],
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "seed": self.seed,
        }

    def params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "N_cells_per_location": self.N_cells_per_location,
            "detection_alpha": self.detection_alpha,
            "num_samples": self.num_samples,
        }


class RNAStereoscopeConfig(Strict):
    """Stereoscope's reference model (per-type negative binomial parameters)."""

    max_epochs: int = Field(default=400, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=0.01, gt=0)
    seed: int = 0


class StereoscopeGrid(MethodGrid):
    """Stereoscope (scvi-tools' external module): a second, cheap baseline."""

    name: Literal["stereoscope"]
    max_epochs: Axis = Field(default=[400])
    batch_size: Axis = Field(default=[128])
    lr: float = Field(default=0.01, gt=0)
    reference: RNAStereoscopeConfig = RNAStereoscopeConfig()

    @model_validator(mode="after")
    def _check_values(self) -> StereoscopeGrid:
        _whole_numbers("batch_size", self.batch_size, 1)
        _whole_numbers("max_epochs", self.max_epochs, 1)
        return self

    def axes(self) -> dict[str, list]:
        return {
            "variant": ["default"],
            "amortization": [NOT_APPLICABLE],
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "seed": self.seed,
        }

    def params(self) -> dict[str, Any]:
        return {"lr": self.lr}


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


MethodConfig = Annotated[DestVIGrid | Cell2locationGrid | StereoscopeGrid | ControlGrid, Field(discriminator="name")]

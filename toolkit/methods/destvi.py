"""destVI through scvi-tools: a CondSCVI reference model, then DestVI on the spots.

The adapter only drives scvi-tools. It also carries three workarounds for scvi-tools 1.4: `prior` must
be passed to CondSCVI, the vamp prior of a normal-prior reference must be handed over as tensors, and
`get_proportions` is wrong for latent amortization.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from toolkit.methods.base import FitResult, TaskSpec
from toolkit.methods.configs import Axis, Engine, MethodGrid, Strict, whole_numbers
from toolkit.methods.scvi_common import configure_scvi, history, spots_for

REFERENCE_KIND = "condscvi"


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
    compile: bool | Literal["cudagraphs", "reduce-overhead"] = False
    """With engine `fast`: `true` torch.compiles the step. Faster for long runs at small batches after a
    one-off compilation (10 s to 2 min per task), and equal to stock statistically rather than bit for bit.
    On a GPU, `true` runs as `reduce-overhead`, torch.compile's own CUDA-graph mode (the task's settings
    record both): the fastest mode on an H200, where the default mode failed (results/engine.md).
    `cudagraphs` captures the whole step (forward, backward, Adam) as one CUDA graph
    (toolkit/engines/graphs.py); it failed on that H200 as the default mode did. A task asking for
    `cudagraphs` without a GPU stops before training with a sentence saying so."""
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
        whole_numbers("batch_size", [v for v in self.batch_size if v != "auto"], 1)
        whole_numbers("max_epochs", self.max_epochs, 1)
        if self.compile and self.engine != "fast":
            raise ValueError(
                f"compile: {str(self.compile).lower()} needs engine: fast (stock scvi-tools training is not compiled)"
            )
        check_pass_through(self.module_kwargs, self.plan_kwargs)
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


Grid = DestVIGrid
"""This method's part of the sweep file (the registry in toolkit.methods collects every `Grid`)."""
VARIANTS: dict[str, dict[str, Any]] = {
    # As close as the installed scvi-tools gets to the model the 2022 study ran.
    "2022": {"prior_mode": "normal", "augmentation": False},
    # Whatever the installed DestVI does by default.
    "current": {},
}
REFERENCE_PRIOR = "normal"  # CondSCVI's own default, passed explicitly: from_rna_model reads it


FROM_REFERENCE = frozenset(
    {
        "n_spots",
        "n_labels",
        "n_batch",
        "n_hidden",
        "n_layers",
        "n_latent",
        "n_genes",
        "decoder_state_dict",
        "px_decoder_state_dict",
        "px_r",
        "mean_vprior",
        "var_vprior",
        "mp_vprior",
    }
)
"""DestVI module arguments that `from_rna_model` takes from the CondSCVI reference: not the user's to set."""
SET_BY_THE_ADAPTER = frozenset({"lr", "n_epochs_kl_warmup", "kl_weight", "n_obs"})
"""Plan and loss keywords the adapter passes itself (from the grid's own keys)."""


def check_pass_through(module_kwargs: dict, plan_kwargs: dict) -> None:
    """module_kwargs and plan_kwargs against what the installed scvi-tools accepts, before anything trains:
    a misspelt key would otherwise fail every task of the sweep an hour in."""
    if not module_kwargs and not plan_kwargs:
        return  # nothing to check, and no need to import scvi-tools (slow) while reading a sweep file
    import inspect

    import scvi
    from scvi.module import MRDeconv
    from scvi.train import TrainingPlan

    def names(function: Any) -> set[str]:
        skip = {"self", "module", "tensors", "inference_outputs", "generative_outputs", "loss_kwargs", "kwargs"}
        return set(inspect.signature(function).parameters) - skip

    version = f"scvi-tools {scvi.__version__}"
    module_names = names(MRDeconv.__init__) - FROM_REFERENCE
    for key in module_kwargs:
        if key == "amortization":
            raise ValueError("module_kwargs 'amortization' would override the swept one; sweep it with amortization:")
        if key in FROM_REFERENCE:
            raise ValueError(
                f"module_kwargs '{key}' comes from the CondSCVI reference; set it under reference: instead"
            )
        if key not in module_names:
            raise ValueError(
                f"module_kwargs '{key}' is not an argument of {version}'s DestVI module; use one of "
                f"{', '.join(sorted(module_names))}"
            )
    plan_names = (names(TrainingPlan.__init__) | names(MRDeconv.loss)) - SET_BY_THE_ADAPTER
    for key in plan_kwargs:
        if key in SET_BY_THE_ADAPTER:
            raise ValueError(f"plan_kwargs '{key}' is set from this grid's own key; set it there instead")
        if key not in plan_names:
            raise ValueError(
                f"plan_kwargs '{key}' is neither a training-plan option nor a loss keyword of {version}'s DestVI; "
                f"use one of {', '.join(sorted(plan_names))}"
            )


def auto_batch_size(n_spots: int) -> int:
    """The study's advice: min(n_spots / 10, 128), at least 1."""
    return min(max(n_spots // 10, 1), 128)


def resolve_batch_size(batch_size: int | str, n_spots: int) -> int:
    return auto_batch_size(n_spots) if batch_size == "auto" else int(batch_size)


def train_reference(reference: ad.AnnData, config: dict[str, Any], model_dir: Path, accelerator: str = "auto") -> float:
    """Train CondSCVI on the reference and save it to `model_dir`; returns the training time in seconds."""
    import scvi
    from scvi.model import CondSCVI

    configure_scvi()
    scvi.settings.seed = config["seed"]
    reference = reference.copy()
    CondSCVI.setup_anndata(reference, labels_key="cell_type")
    model = CondSCVI(
        reference,
        n_hidden=config["n_hidden"],
        n_latent=config["n_latent"],
        n_layers=config["n_layers"],
        weight_obs=False,
        prior=REFERENCE_PRIOR,
    )
    start = time.perf_counter()
    settings = {"max_epochs": config["max_epochs"], "lr": config["lr"], "batch_size": config["batch_size"]}
    if config.get("engine", "scvi") == "fast":
        from toolkit.engines import train_condscvi_fast

        train_condscvi_fast(model, **settings, device=engine_device(accelerator))
    else:
        model.train(**settings, train_size=1, accelerator=accelerator, enable_progress_bar=False)
    elapsed = time.perf_counter() - start
    model.save(str(model_dir), overwrite=True, save_anndata=False)
    return elapsed


def _load_reference(reference: ad.AnnData, model_dir: Path, accelerator: str) -> Any:
    from scvi.model import CondSCVI

    model = CondSCVI.load(str(model_dir), adata=reference.copy(), accelerator=accelerator)
    vamp_prior = model.get_vamp_prior

    def vamp_prior_as_tensors(*args: Any, **kwargs: Any) -> dict:
        """scvi-tools 1.4 returns numpy arrays here and then fails to register them as buffers."""
        import torch

        return {key: torch.as_tensor(value, dtype=torch.float32) for key, value in vamp_prior(*args, **kwargs).items()}

    model.get_vamp_prior = vamp_prior_as_tensors
    return model


def proportions(model: Any, amortization: str) -> pd.DataFrame:
    """Per-spot proportions as the model uses them.

    For latent/none amortization the model mixes with softmax(V) over types, but `get_proportions`
    returns softplus(V): take the softmax ourselves, drop the extra noise types and renormalise.
    """
    if amortization in ("both", "proportion"):
        return model.get_proportions()
    import torch

    weights = torch.softmax(model.module.V.detach().cpu(), dim=0).T.numpy()
    weights = weights[:, : len(model.cell_type_mapping)]
    weights = weights / weights.sum(axis=1, keepdims=True)
    return pd.DataFrame(weights, index=model.adata.obs_names, columns=list(model.cell_type_mapping))


def fit(
    spots: ad.AnnData, reference: ad.AnnData, model_dir: Path | None, task: TaskSpec, accelerator: str = "auto"
) -> FitResult:
    """Fit DestVI on `spots` from the CondSCVI model saved in `model_dir`."""
    import scvi
    from scvi.model import DestVI

    from toolkit.engines import checkpoint

    params = task.params
    if params.get("engine") == "fast":  # a CUDA-graph task off CUDA stops here, before anything is built
        from toolkit.engines import graphs, resolve_device

        graphs.check_device(params.get("compile", False), resolve_device(engine_device(accelerator)))
    configure_scvi()
    batch_size = resolve_batch_size(task.batch_size, spots.n_obs)
    module_kwargs = {"amortization": task.amortization, **VARIANTS[task.variant], **params.get("module_kwargs", {})}
    sc_model = _load_reference(reference, model_dir, accelerator)
    st = spots_for(spots, reference)
    scvi.settings.seed = task.seed  # V and gamma are initialised randomly in from_rna_model
    model = DestVI.from_rna_model(st, sc_model, vamp_prior_p=params.get("vamp_prior_p", 15), **module_kwargs)
    settings = {
        "max_epochs": task.max_epochs,
        "lr": params.get("lr", 3e-3),
        "batch_size": batch_size,
        "n_epochs_kl_warmup": params.get("n_epochs_kl_warmup", 200),
        "plan_kwargs": params.get("plan_kwargs") or None,
    }
    start = time.perf_counter()
    if params.get("engine", "scvi") == "fast":
        n_steps, engine_settings, earlier = _train_fast(model, settings, accelerator, params.get("compile", False))
    else:
        model.train(
            **settings,
            train_size=1.0,
            accelerator=accelerator,
            enable_progress_bar=False,
            **checkpoint.train_kwargs(),  # resume after a preemption, save every N epochs (SLURM tasks only)
        )
        n_steps, engine_settings = int(model.trainer.global_step), {"engine": "scvi"}
        earlier = checkpoint.earlier_train_s()
    train_time = time.perf_counter() - start + earlier  # a resumed task: its earlier attempts' training too
    return FitResult(
        proportions=proportions(model, task.amortization),
        history=history(model),
        n_steps=n_steps,
        train_time_s=train_time,
        states=np.asarray(model.get_gamma(return_numpy=True), dtype=np.float32),
        settings={"batch_size": batch_size, "module_kwargs": module_kwargs, **engine_settings},
    )


def engine_device(accelerator: str) -> str:
    """Lightning's accelerator names as a torch device for the fast engine."""
    return {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(accelerator, "auto")


def _train_fast(
    model: Any, settings: dict[str, Any], accelerator: str, compile: bool | str
) -> tuple[int, dict[str, Any], float]:
    """DestVI.train's optimisation in the fast engine; seed=None continues the stream scvi.settings.seed
    started, so that an eager run on CPU equals stock training bit for bit. Returns the steps, the settings
    that ran and the training time of earlier attempts (resumed from their checkpoint)."""
    from toolkit.engines import checkpoint, train_destvi_fast

    with checkpoint.fast_engine() as saving:  # resume after a preemption, save every N epochs (SLURM tasks only)
        result = train_destvi_fast(
            model, **settings, seed=None, device=engine_device(accelerator), compile=compile, checkpoint=saving
        )
    return result.n_steps, result.settings, result.earlier_seconds

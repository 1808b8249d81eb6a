"""destVI through scvi-tools: a CondSCVI reference model, then DestVI on the spots.

The adapter only drives scvi-tools. It also carries three workarounds for scvi-tools 1.4: `prior` must
be passed to CondSCVI, the vamp prior of a normal-prior reference must be handed over as tensors, and
`get_proportions` is wrong for latent amortization.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import anndata as ad
import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from toolkit.engines.trajectory import DEFAULT_POINTS
from toolkit.methods.base import FitResult, Scorer, TaskSpec
from toolkit.methods.configs import Axis, Engine, MethodGrid, Strict, whole_numbers
from toolkit.methods.description import MethodDescription, budget_words
from toolkit.methods.scvi_common import configure_scvi, history, spots_for
from toolkit.methods.search import SearchConfig

REFERENCE_KIND = "condscvi"


class CondSCVIConfig(Strict):
    """How the CondSCVI reference model is trained, once per dataset and configuration."""

    max_epochs: int = Field(default=300, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    n_latent: int = Field(default=5, gt=0)
    n_hidden: int = Field(default=128, gt=0)
    n_layers: int = Field(default=2, gt=0)
    seed: int | list[int] = 0
    """One seed, or a list: then each destVI task of the grid is swept over them (`reference_seed`), and
    one reference model is trained per seed (issue 38's E6: how much of an effect is the reference's)."""
    engine: Engine = "fast"
    """How CondSCVI is trained: `fast` (spotsweep's lean loop, bitwise the same as stock on CPU) or `scvi`."""

    @field_validator("seed", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        """Checked before pydantic's own coercion, so that 1.5 or `true` is refused in the sweep's words."""
        listed = value if isinstance(value, list) else [value]
        if not listed:
            raise ValueError("lists no seed; give one seed or a list of them")
        whole_numbers("seed", listed, 0)
        if len(set(listed)) != len(listed):
            raise ValueError("lists a seed twice")
        return value


DEFAULT_EPOCHS = 2000
DEFAULT_KL_WARMUP_EPOCHS = 200


class DestVIGrid(MethodGrid):
    """destVI: CondSCVI on the reference, then DestVI on the spots."""

    name: Literal["destvi"]
    variant: Axis = Field(default=["2022"])
    amortization: Axis = Field(default=["both"])
    batch_size: Axis = Field(default=[128])
    """Spots per minibatch, or `auto` = the study's advice, min(n_spots // 10, 128), at least 1."""
    max_epochs: Axis | None = None
    """The budget in epochs (2,000 unless `max_steps` is set)."""
    max_steps: Axis | None = None
    """A budget in optimizer steps instead of epochs (Lightning's `max_steps`), so that every batch size gets
    the same number of updates; training stops after exactly this many steps, inside an epoch if it ends
    there. Set one of `max_epochs` and `max_steps`, not both."""
    lr: float = Field(default=3e-3, gt=0)
    n_epochs_kl_warmup: int | None = Field(default=None, ge=0)
    """The KL warm-up in epochs (200, scvi-tools' default, unless `n_steps_kl_warmup` is set): at equal epochs
    it spans 12x more steps at batch 8 than at batch 128 on 189 spots."""
    n_steps_kl_warmup: Axis | None = None
    """The KL warm-up in optimizer steps instead (scvi-tools' `n_steps_kl_warmup`), the same for every batch
    size. Set one of `n_epochs_kl_warmup` and `n_steps_kl_warmup`, not both."""
    drop_last: Axis = Field(default=[False])
    """`true` drops the last, shorter minibatch of every epoch (torch's and scvi-tools' `drop_last`); `false`,
    scvi-tools' default, keeps it (189 spots at batch 18: 10 steps of 18 and one of 9 per epoch)."""
    trajectory_points: int = Field(default=DEFAULT_POINTS, ge=0)
    """How many times a task scores its model against the truth during training, evenly spaced in optimizer
    steps and ending at the last (0: final score only). Scoring never changes training."""
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
    search: SearchConfig | None = None
    """The space `spotsweep tune` searches (toolkit/methods/search.py); `spotsweep run` runs the grid and
    ignores it. Never part of a task's id: a trial's task carries the values it was given."""

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
        self._check_budgets()
        self._check_search()
        if self.compile and self.engine != "fast":
            raise ValueError(
                f"compile: {str(self.compile).lower()} needs engine: fast (stock scvi-tools training is not compiled)"
            )
        check_pass_through(self.module_kwargs, self.plan_kwargs)
        return self

    @property
    def epochs_kl_warmup(self) -> int:
        """The warm-up in epochs as it runs when the warm-up is not in steps."""
        return DEFAULT_KL_WARMUP_EPOCHS if self.n_epochs_kl_warmup is None else self.n_epochs_kl_warmup

    def _check_search(self) -> None:
        """A trial combines the search's choices (else the grid's): the same rule on variant and amortization."""
        if self.search is None:
            return
        variants = [str(value) for value in self.search.variant or self.variant]
        amortizations = self.search.amortization or self.amortization
        needs_2022 = [value for value in amortizations if value in {"proportion", "none"}]
        if "current" in variants and needs_2022:
            raise ValueError(
                f"a trial of the search may pick variant 'current' with amortization '{needs_2022[0]}', which needs "
                "the normal prior of variant 2022; search variant 2022 only, or amortization without it"
            )

    def _check_budgets(self) -> None:
        """One budget and one warm-up, each in epochs or in steps; drop_last a yes or no."""
        if self.max_steps is not None and self.max_epochs is not None:
            raise ValueError("set one budget, max_epochs or max_steps, not both")
        whole_numbers("max_epochs", self.max_epochs or [], 1)
        whole_numbers("max_steps", self.max_steps or [], 1)
        if self.n_steps_kl_warmup is not None and self.n_epochs_kl_warmup is not None:
            raise ValueError("set one KL warm-up, n_epochs_kl_warmup or n_steps_kl_warmup, not both")
        whole_numbers("n_steps_kl_warmup", self.n_steps_kl_warmup or [], 1)
        for value in self.drop_last:
            if not isinstance(value, bool):
                raise ValueError(f"drop_last {value!r} must be true or false")

    optional_axes: ClassVar[dict[str, Any]] = {
        "max_steps": 0,
        "n_steps_kl_warmup": 0,
        "drop_last": False,
        "reference_seed": 0,
        "trial": -1,
    }
    """0: the budget, or the warm-up, counts epochs; false: the last minibatch is kept; reference seed 0:
    the CondSCVI reference trained with seed 0, as every task did before the seed could be swept; trial -1:
    a task of the grid, not of a `spotsweep tune` trial (whose number gives its task its own id)."""
    reference_axes: ClassVar[dict[str, str]] = {"reference_seed": "seed"}

    def axes(self) -> dict[str, list]:
        steps = {"max_steps": self.max_steps} if self.max_steps is not None else {}
        warmup = {"n_steps_kl_warmup": self.n_steps_kl_warmup} if self.n_steps_kl_warmup is not None else {}
        return {
            "variant": [str(value) for value in self.variant],
            "amortization": self.amortization,
            "batch_size": self.batch_size,
            "max_epochs": [0] if steps else (self.max_epochs or [DEFAULT_EPOCHS]),  # 0: the budget is in steps
            **steps,
            **warmup,
            "drop_last": self.drop_last,
            **self.reference_axis_values(),
            "seed": self.seed,
        }

    def params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            # None: the warm-up counts steps (the task's n_steps_kl_warmup), as scvi-tools reads it
            "n_epochs_kl_warmup": None if self.n_steps_kl_warmup is not None else self.epochs_kl_warmup,
            "vamp_prior_p": self.vamp_prior_p,
            "module_kwargs": self.module_kwargs,
            "plan_kwargs": self.plan_kwargs,
            "engine": self.engine,
            "compile": self.compile,
            # in a task's id only when not the default: scoring never changes training
            **({"trajectory_points": self.trajectory_points} if self.trajectory_points != DEFAULT_POINTS else {}),
        }


Grid = DestVIGrid
"""This method's part of the sweep file (the registry in toolkit.methods collects every `Grid`)."""


class DestVIDescription(MethodDescription):
    """destVI as the stages see it: its `auto` batch size, its engines, its labels with their budget."""

    def label(self, config: dict[str, Any]) -> str:
        budget = budget_words(config).replace(", ", "\n")  # a map column is narrow: one setting a line
        return f"destVI {config['amortization']}\nbatch {config['batch_size']}\n{budget}"

    def config_rank(self, config: dict[str, Any]) -> int:
        """The study's order: amortization both, then latent, then the others."""
        return {"both": 0, "latent": 1}.get(config["amortization"], 2)

    def batch_size(self, batch_size: int | str, n_spots: int) -> int:
        return resolve_batch_size(batch_size, n_spots)

    def mode(self, task: TaskSpec) -> str:
        """scvi, fast or fast+compile, then `+augmentation` where the module augments: what plan has measured.

        Augmentation (on in variant `current`, scvi-tools' default) decodes n_samples x batch x n_labels prior
        draws in every training step, which makes a step several times dearer (results/engine.md). It is read
        from the module's settings as the task builds them (the variant's, then module_kwargs, over scvi-tools'
        defaults), not from the variant's name; another `n_samples_augmentation` than the measured one names
        itself (`+augmentation4`), which no figure matches."""
        engine = task.params.get("engine", "fast")
        mode = f"{engine}+compile" if engine == "fast" and task.params.get("compile") else engine
        settings = {**MODULE_DEFAULTS, **VARIANTS[task.variant], **task.params.get("module_kwargs", {})}
        if not settings["augmentation"]:
            return mode
        samples = settings["n_samples_augmentation"]
        return f"{mode}+augmentation" + ("" if samples == MODULE_DEFAULTS["n_samples_augmentation"] else str(samples))


DESCRIPTION = DestVIDescription("destvi", order=1, real_zeros=frozenset({"batch_size", "max_epochs"}))
"""What the stages need to know of destVI (toolkit.methods.description)."""
VARIANTS: dict[str, dict[str, Any]] = {
    # As close as the installed scvi-tools gets to the model the 2022 study ran.
    "2022": {"prior_mode": "normal", "augmentation": False},
    # Whatever the installed DestVI does by default.
    "current": {},
}
MODULE_DEFAULTS: dict[str, Any] = {"augmentation": True, "n_samples_augmentation": 2}
"""scvi-tools 1.4's own DestVI module defaults for what a variant may leave unset (MRDeconv's signature; a test
holds them to the installed one): what a task without these keys runs, which `DestVIDescription.mode` reads
without importing scvi-tools."""
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
SET_BY_THE_ADAPTER = frozenset({"lr", "n_epochs_kl_warmup", "n_steps_kl_warmup", "kl_weight", "n_obs"})
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
    spots: ad.AnnData,
    reference: ad.AnnData,
    model_dir: Path | None,
    task: TaskSpec,
    accelerator: str = "auto",
    score: Scorer | None = None,
) -> FitResult:
    """Fit DestVI on `spots` from the CondSCVI model saved in `model_dir`; with `score`, also score it
    during training (the accuracy trajectory)."""
    import scvi
    from scvi.model import DestVI

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
    settings = training_settings(task, batch_size)
    probe = _probe(model, task, settings, score)
    start = time.perf_counter()
    if params.get("engine", "scvi") == "fast":
        n_steps, engine_settings, earlier = _train_fast(
            model, settings, accelerator, params.get("compile", False), probe
        )
    else:
        n_steps, engine_settings, earlier = _train_stock(model, settings, accelerator, probe)
    train_time = time.perf_counter() - start + earlier  # a resumed task: its earlier attempts' training too
    return FitResult(
        proportions=proportions(model, task.amortization),
        history=history(model),
        n_steps=n_steps,
        train_time_s=train_time,
        states=np.asarray(model.get_gamma(return_numpy=True), dtype=np.float32),
        settings={"batch_size": batch_size, "module_kwargs": module_kwargs, **engine_settings},
        trajectory=list(probe.points) if probe is not None else None,
    )


def training_settings(task: TaskSpec, batch_size: int) -> dict[str, Any]:
    """DestVI.train's arguments for this task: its budget (epochs or steps), warm-up (epochs or steps) and
    last-minibatch rule, in scvi-tools' own names."""
    params, extra = task.params, task.extra_settings
    plan_kwargs = dict(params.get("plan_kwargs") or {})
    if extra.get("n_steps_kl_warmup"):
        plan_kwargs["n_steps_kl_warmup"] = int(extra["n_steps_kl_warmup"])
    return {
        "max_epochs": None if extra.get("max_steps") else task.max_epochs,
        "max_steps": int(extra["max_steps"]) if extra.get("max_steps") else None,
        "drop_last": bool(extra.get("drop_last", False)),
        "lr": params.get("lr", 3e-3),
        "batch_size": batch_size,
        "n_epochs_kl_warmup": params.get("n_epochs_kl_warmup", 200),
        "plan_kwargs": plan_kwargs or None,
    }


def _probe(model: Any, task: TaskSpec, settings: dict[str, Any], score: Scorer | None) -> Any:
    """The trajectory probe: `trajectory_points` scorings evenly spaced over the run; None without a scorer."""
    from toolkit.engines.fast import steps_per_run
    from toolkit.engines.trajectory import TrajectoryProbe, scoring_steps

    n_points = int(task.params.get("trajectory_points", DEFAULT_POINTS))
    if score is None or n_points == 0:
        return None
    total = steps_per_run(
        model.adata.n_obs, settings["batch_size"], settings["max_epochs"], settings["max_steps"], settings["drop_last"]
    )
    scored = scoring_steps(total, n_points)
    # `on_point`: a scorer that also reports each point as it is taken (a running trial's file for the tuner)
    on_point = getattr(score, "on_point", None)
    return TrajectoryProbe(scored, lambda: score(proportions(model, task.amortization)), on_point=on_point)


def _train_stock(
    model: Any, settings: dict[str, Any], accelerator: str, probe: Any
) -> tuple[int, dict[str, Any], float]:
    """Stock DestVI.train (Lightning), the probe as a callback beside the checkpoint's."""
    import math

    from toolkit.engines import checkpoint
    from toolkit.engines.schedule import batches_per_epoch

    settings = dict(settings)
    max_steps, drop_last = settings.pop("max_steps"), settings.pop("drop_last")
    extra = checkpoint.train_kwargs()  # resume after a preemption, save every N epochs (SLURM tasks only)
    if probe is not None:
        from toolkit.engines.lightning_trajectory import TrajectoryCallback

        extra["callbacks"] = [*extra.get("callbacks", []), TrajectoryCallback(probe)]
    if max_steps:  # Lightning stops at whichever budget comes first: the epochs the steps reach into
        per_epoch = batches_per_epoch(model.adata.n_obs, settings["batch_size"], drop_last)
        settings["max_epochs"], extra["max_steps"] = math.ceil(max_steps / max(per_epoch, 1)), max_steps
    if drop_last:
        extra["datasplitter_kwargs"] = {"drop_last": True}
    model.train(**settings, train_size=1.0, accelerator=accelerator, enable_progress_bar=False, **extra)
    ran = {"engine": "scvi", "max_steps": max_steps, "drop_last": drop_last}
    return int(model.trainer.global_step), ran, checkpoint.earlier_train_s()


def engine_device(accelerator: str) -> str:
    """Lightning's accelerator names as a torch device for the fast engine."""
    return {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(accelerator, "auto")


def _train_fast(
    model: Any, settings: dict[str, Any], accelerator: str, compile: bool | str, probe: Any = None
) -> tuple[int, dict[str, Any], float]:
    """DestVI.train's optimisation in the fast engine; seed=None continues the stream scvi.settings.seed
    started, so that an eager run on CPU equals stock training bit for bit. Returns the steps, the settings
    that ran and the training time of earlier attempts (resumed from their checkpoint)."""
    from toolkit.engines import checkpoint, train_destvi_fast

    with checkpoint.fast_engine() as saving:  # resume after a preemption, save every N epochs (SLURM tasks only)
        result = train_destvi_fast(
            model,
            **settings,
            seed=None,
            device=engine_device(accelerator),
            compile=compile,
            checkpoint=saving,
            trajectory=probe,
        )
    return result.n_steps, result.settings, result.earlier_seconds

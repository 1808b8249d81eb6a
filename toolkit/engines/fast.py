"""A lean training loop for scvi-tools models that train with the stock `TrainingPlan` (DestVI, CondSCVI).

For a model as small as destVI, stock training spends most of each step in Lightning (hooks,
metric objects, per-step logging) and in the DataLoader (AnnData slicing, a host-to-device copy per
step), not in arithmetic. This loop keeps everything that defines the optimisation and drops the rest:

- the module's own `forward` and `loss` (no re-implementation of the model);
- optimizer, learning rate, weight decay, eps and loss kwargs parsed by scvi's own `TrainingPlan`
  from the same `plan_kwargs`, so defaults cannot drift;
- the KL warm-up per epoch (or per step) and the epoch semantics of `DestVI.train(train_size=1.0)`:
  a fresh permutation every epoch, the last smaller batch kept (or dropped: `drop_last`), and the same
  random draws in the same order, so that an eager run on CPU is bitwise identical to stock training
  (`seed=None`); a budget in epochs or in optimizer steps (`max_steps`, as Lightning's);
- optionally the model scored against a truth during training (`trajectory`), without changing it;
- data on the device once, minibatches gathered by index;
- losses accumulated on the device and read back once per run (no `.item()` per step);
- optionally `torch.compile` of the step (see `toolkit.engines.step`), and on CUDA the whole step
  captured as a CUDA graph (`compile="cudagraphs"`, see `toolkit.engines.graphs`).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from toolkit.engines import graphs, resume
from toolkit.engines.batches import EpochSampler, registered_tensors, split_indices
from toolkit.engines.checkpoint import Checkpointing, TrainingStopped
from toolkit.engines.resume import Progress
from toolkit.engines.trajectory import TrajectoryProbe

__all__ = [
    "Checkpointing",
    "FastTrainResult",
    "TrainingStopped",
    "train_condscvi_fast",
    "train_destvi_fast",
    "train_fast",
]
from toolkit.engines.schedule import batches_per_epoch, is_per_step, kl_weight
from toolkit.engines.step import (
    CompileMode,
    distributions_unvalidated,
    make_optimizer,
    make_step,
    on_device,
    probe_metric_names,
)

CUDA_COMPILE = "reduce-overhead"
"""What `compile: true` runs as on CUDA, from the first GPU check (one H200, torch 2.11, results/engine.md):
torch.compile's default mode failed there in an inductor kernel handed a CPU buffer (scvi-tools builds
destVI's label enumeration with `torch.arange` on the CPU, then moves it), while reduce-overhead ran and
was the fastest mode measured: 7.6x stock per step on 189 spots at batch 8, 8.9x on 27,000 at batch 32."""


def compile_for_device(compile: CompileMode, device: torch.device) -> CompileMode:
    """The compile mode that runs: `true` on CUDA becomes CUDA_COMPILE; every other value runs as asked."""
    return CUDA_COMPILE if compile is True and device.type == "cuda" else compile


# Plan options that need a validation set or Lightning callbacks: refused rather than ignored.
_UNSUPPORTED_PLAN_KWARGS = ("reduce_lr_on_plateau", "compile")


@dataclass
class FastTrainResult:
    """What one fast training run produced besides the trained module."""

    history: pd.DataFrame
    """One row per epoch, columns named as in scvi-tools' history (elbo_train, reconstruction_loss_train, ...)."""
    n_steps: int
    seconds: float
    """Wall time of the training loop, compilation included (and earlier attempts' time after a resume)."""
    device: str
    epoch_seconds: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Wall time of each epoch (the first ones carry the compilation when `compile` is on)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Optimizer, schedule and loss kwargs as resolved from plan_kwargs: what actually ran."""
    earlier_seconds: float = 0.0
    """The part of `seconds` spent by earlier attempts, up to the checkpoint this one resumed from."""
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    """The probe's points (step, epoch and scores), earlier attempts' included; empty without a probe."""


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` picks the current CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def training_plan(model: Any, plan_kwargs: dict[str, Any]) -> Any:
    """scvi's own TrainingPlan, built only to parse plan_kwargs exactly as stock training does."""
    from scvi.train import TrainingPlan

    if model._training_plan_cls is not TrainingPlan:
        raise TypeError(
            f"{type(model).__name__} trains with {model._training_plan_cls.__name__}; the fast engine only "
            "reproduces scvi.train.TrainingPlan (DestVI, CondSCVI). Use engine 'scvi' for this model."
        )
    for key in _UNSUPPORTED_PLAN_KWARGS:
        if plan_kwargs.get(key):
            raise ValueError(
                f"plan_kwargs {key}={plan_kwargs[key]!r} is not supported by the fast engine "
                "(reduce_lr_on_plateau needs a validation set; pass compile to the engine itself)."
            )
    return TrainingPlan(model.module, **plan_kwargs)


def epoch_history(
    rows: np.ndarray, names: list[str], n_obs: int, n_batches: int, kl_weights: list[float]
) -> pd.DataFrame:
    """Per-epoch values with scvi's definitions (ElboMetric): sums per observation, kl_global per batch."""
    per_obs = rows / n_obs
    kl_global = rows[:, 3] / n_batches
    frame = pd.DataFrame(
        {
            "train_loss": per_obs[:, 0],
            "elbo_train": per_obs[:, 1] + per_obs[:, 2] + kl_global / n_obs,
            "reconstruction_loss_train": per_obs[:, 1],
            "kl_local_train": per_obs[:, 2],
            "kl_global_train": kl_global,
            **{f"{name}_train": per_obs[:, 4 + i] for i, name in enumerate(names)},
            "kl_weight": kl_weights,
        }
    )
    frame.index.name = "epoch"
    return frame


_compile_lock = threading.Lock()


@contextlib.contextmanager
def _compile_scope(compile: CompileMode) -> Iterator[None]:
    """Compiled fits run one at a time per process, each from fresh dynamo caches.

    Dynamo guards on the module object, so every new model recompiles; after 8 recompiles of the
    same code it would silently fall back to eager. Resetting per run avoids that (inductor's
    on-disk cache still spares most of the work for shapes seen before).
    """
    if not compile:
        yield
        return
    with _compile_lock:
        torch.compiler.reset()
        try:
            yield
        finally:
            torch.compiler.reset()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_fast(
    model: Any,
    *,
    max_epochs: int | None = None,
    batch_size: int,
    max_steps: int | None = None,
    drop_last: bool = False,
    trajectory: TrajectoryProbe | None = None,
    seed: int | None = None,
    device: str | torch.device = "auto",
    plan_kwargs: dict[str, Any] | None = None,
    compile: CompileMode = False,
    on_epoch_end: Callable[[int], None] | None = None,
    checkpoint: Checkpointing | None = None,
    limit_batches: int | None = None,
) -> FastTrainResult:
    """Train `model.module` in place as `model.train(train_size=1.0, ...)` would, without Lightning.

    `seed=None` continues torch's global random stream, as stock training does right after
    `scvi.settings.seed = s` and model construction, and orders the observations with
    `scvi.settings.seed`: eager on CPU, the result is then bitwise identical to stock training.
    An int reseeds torch's generators (CPU and CUDA) and the split first, for a run that depends
    on nothing before it. Leaves the model trained, in eval mode, on `device`. `on_epoch_end(epoch)`
    is called after each epoch, once the device is synchronised (timing, progress). `checkpoint`
    saves the state every N epochs, resumes from its file and stops on request (`TrainingStopped`).
    `limit_batches` takes only the first N minibatches of each epoch, as Lightning's `limit_train_batches`:
    for timing a large data set in seconds (benchmarks), not for training. The budget is `max_epochs` or
    `max_steps` (one of them): a step budget ends inside an epoch if it falls there. `drop_last` drops each
    epoch's last, smaller minibatch. `trajectory` scores the model after its chosen steps, untouched.
    """
    run = _FastRun(model, batch_size, max_epochs, max_steps, drop_last, seed, device, plan_kwargs, compile)
    with distributions_unvalidated(), _compile_scope(run.compile):
        run.begin(checkpoint, trajectory)
        run.epochs(trajectory, on_epoch_end, checkpoint, limit_batches)
        seconds = run.end(checkpoint)
    return run.result(trajectory, seconds)


class _FastRun:
    """One `train_fast` call: its settings and state, shared by its phases (set-up, start or resume, the
    epochs, the end, the result), which run in that order, statement for statement as one function did."""

    def __init__(
        self,
        model: Any,
        batch_size: int,
        max_epochs: int | None,
        max_steps: int | None,
        drop_last: bool,
        seed: int | None,
        device: str | torch.device,
        plan_kwargs: dict[str, Any] | None,
        compile: CompileMode,
    ) -> None:
        import scvi

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (got {batch_size}).")
        self.model, self.batch_size, self.max_steps, self.drop_last = model, batch_size, max_steps, drop_last
        n_obs = self.n_obs = model.adata.n_obs
        self.max_epochs = _epoch_budget(max_epochs, max_steps, batches_per_epoch(n_obs, batch_size, drop_last) or 1)
        dev = self.dev = resolve_device(device)
        graphs.check_device(compile, dev)
        self.asked, self.compile = compile, compile_for_device(compile, dev)
        self.module = on_device(model.module, dev)
        plan = self.plan = training_plan(model, dict(plan_kwargs or {}))
        plan.n_obs_training = n_obs  # as TrainRunner does; sets loss_kwargs["n_obs"] where the loss takes it
        self.loss_kwargs = dict(plan.loss_kwargs)

        if seed is not None:
            torch.manual_seed(seed)
        order = split_indices(n_obs, scvi.settings.seed if seed is None else seed)
        self.sampler = EpochSampler(order, batch_size, dev, drop_last)
        self.data = registered_tensors(model, dev)
        self.warmup = (plan.n_epochs_kl_warmup, plan.n_steps_kl_warmup, plan.max_kl_weight, plan.min_kl_weight)
        self.per_step = is_per_step(plan.n_epochs_kl_warmup, plan.n_steps_kl_warmup)
        self.uses_kl = "kl_weight" in self.loss_kwargs

        self.module.train()
        n_params = sum(p.numel() for p in self.module.parameters())
        self.meta: dict[str, Any] = {"n_obs": n_obs, "batch_size": batch_size, "n_params": n_params}
        if drop_last:  # only when set, so that checkpoints written before this setting still resume
            self.meta["drop_last"] = True
        self.progress = Progress(rows=[], kl_weights=[], trajectory=[])
        self.last_step = max_steps or self.max_epochs * self.sampler.n_batches
        self.epoch_ends: list[float] = []

    def begin(self, checkpoint: Checkpointing | None, trajectory: TrajectoryProbe | None) -> None:
        """The KL weight's tensor, the metric names, the optimizer and the step; resumed from the
        checkpoint's file where there is one. Then the clock starts."""
        module, dev, n_obs, data = self.module, self.dev, self.n_obs, self.data
        # One device tensor, updated in place: a new value never recompiles nor escapes a captured graph.
        self.kl = torch.tensor(kl_weight(0, 0, *self.warmup)).to(dev)
        if self.uses_kl:
            self.loss_kwargs["kl_weight"] = self.kl
        first = {k: v[: min(self.batch_size, n_obs)] for k, v in data.items()}
        names = self.names = probe_metric_names(module, first, self.loss_kwargs)
        self.meta["metrics"] = ",".join(names)
        saved = resume.read(checkpoint.path, self.meta) if checkpoint and Path(checkpoint.path).is_file() else None
        if checkpoint is not None:
            checkpoint.notify("planned", self.max_epochs)  # a step budget's epochs, for the task's progress report
        if saved is not None:
            resume.restore_module(saved, module)  # before the optimizer exists (see restore_module)
        trainable = [p for p in module.parameters() if p.requires_grad]
        capture = self.compile == graphs.CUDA_GRAPHS and dev.type == "cuda"
        self.optimizer = make_optimizer(self.plan, trainable, fused=bool(self.compile), capturable=capture)
        if saved is not None:
            assert checkpoint is not None  # saved comes from its file
            self.progress = resume.restore_progress(saved, self.optimizer, dev)
            checkpoint.notify("resumed", self.progress.epoch)
            if trajectory is not None:
                trajectory.restore(self.progress.trajectory or [])
        take_step = make_step(module, self.optimizer, names, data, self.loss_kwargs, self.compile)
        if self.compile == graphs.CUDA_GRAPHS:
            take_step = graphs.CapturedSteps(take_step, dev, capture=capture)
        self.take_step = take_step
        _sync(dev)
        self.started = time.perf_counter()

    def epochs(
        self,
        trajectory: TrajectoryProbe | None,
        on_epoch_end: Callable[[int], None] | None,
        checkpoint: Checkpointing | None,
        limit_batches: int | None,
    ) -> None:
        """Every epoch left: its minibatches' steps, then the epoch's report and checkpoint."""
        progress, sampler, kl, dev, take_step = self.progress, self.sampler, self.kl, self.dev, self.take_step
        warmup, uses_kl, per_step = self.warmup, self.uses_kl, self.per_step
        for epoch in range(progress.epoch, self.max_epochs):
            progress.kl_weights.append(kl_weight(epoch, progress.step, *warmup))
            if uses_kl and not per_step:
                kl.fill_(progress.kl_weights[-1])
            acc = torch.zeros(4 + len(self.names), device=dev)
            batches = sampler.epoch()[:limit_batches][: self.last_step - progress.step]
            for done, index in enumerate(batches, start=1):
                if uses_kl and per_step:
                    kl.fill_(kl_weight(epoch, progress.step, *warmup))
                acc += take_step(index)
                progress.step += 1
                if trajectory is not None and trajectory.due(progress.step):
                    trajectory.take(self.module, progress.step, epoch + done / sampler.n_batches)
            progress.rows.append(acc)
            if trajectory is not None:
                progress.trajectory = trajectory.points
            progress.epoch = epoch + 1
            _sync(dev)
            self.epoch_ends.append(time.perf_counter())
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if checkpoint is not None:
                _checkpoint_epoch(checkpoint, self.module, self.optimizer, progress, self.meta, self.started)

    def end(self, checkpoint: Checkpointing | None) -> float:
        """Save the final state (a requeue while scoring restores the trained model); the training seconds."""
        progress, start = self.progress, self.started
        seconds = progress.seconds + time.perf_counter() - start
        if checkpoint is not None:
            resume.save(checkpoint.path, self.module, self.optimizer, _spent(progress, start), self.meta)
            checkpoint.notify("saved", progress.epoch)
        self.history_rows = torch.stack(progress.rows).double().cpu().numpy()  # the one device-to-host read
        return seconds

    def result(self, trajectory: TrajectoryProbe | None, seconds: float) -> FastTrainResult:
        """The model left trained and in eval mode, its history checked finite, and what the run was."""
        progress, dev, sampler, history_rows = self.progress, self.dev, self.sampler, self.history_rows
        self.module.eval()
        _mark_trained(self.model, sampler.train_idx, dev)
        history = epoch_history(history_rows, self.names, self.n_obs, sampler.n_batches, progress.kl_weights)
        bad = ~np.isfinite(history_rows).all(axis=1)
        if bad.any():
            raise FloatingPointError(
                f"the training loss became non-finite in epoch {int(np.argmax(bad))}; lower lr or check the counts."
            )
        self.model.history_ = {name: history[[name]] for name in history.columns}
        return FastTrainResult(
            history=history,
            trajectory=list(trajectory.points) if trajectory is not None else [],
            n_steps=progress.step,
            seconds=seconds,
            earlier_seconds=progress.seconds,
            device=str(dev),
            epoch_seconds=np.diff(np.asarray([self.started, *self.epoch_ends])),
            settings=self.settings(trajectory),
        )

    def settings(self, trajectory: TrajectoryProbe | None) -> dict[str, Any]:
        """The settings the run resolved (optimizer, compile mode, budget, device), for the task's record."""
        compile, n_batches = self.compile, self.sampler.n_batches
        return {
            **_resolved_settings(self.plan, self.optimizer, compile, self.batch_size, self.max_epochs, n_batches),
            **({"compile_asked": self.asked} if self.asked != compile else {}),
            "max_steps": self.max_steps,
            "drop_last": self.drop_last,
            "trajectory_steps": len(trajectory.steps) if trajectory is not None else 0,
            "device": str(self.dev),
            **_captured(self.take_step),
        }


def _epoch_budget(max_epochs: int | None, max_steps: int | None, steps_per_epoch: int) -> int:
    """The epochs to run: `max_epochs`, or as many as `max_steps` reaches into (the last one cut short)."""
    if (max_epochs is None) == (max_steps is None):
        raise ValueError(f"give one budget, max_epochs or max_steps (got {max_epochs}, {max_steps}).")
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (got {max_steps}).")
        return math.ceil(max_steps / steps_per_epoch)
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1 (got {max_epochs}).")
    return max_epochs


def _resolved_settings(
    plan: Any, optimizer: torch.optim.Optimizer, compile: CompileMode, batch_size: int, max_epochs: int, spe: int
) -> dict[str, Any]:
    # max_epochs: the epochs run (the last one cut short by a step budget); the task records its budget
    """What actually ran, for the task's provenance."""
    return {
        "engine": "fast",
        "compile": compile,
        "optimizer": type(optimizer).__name__,
        "lr": plan.lr,
        "eps": plan.eps,
        "weight_decay": plan.weight_decay,
        "n_epochs_kl_warmup": plan.n_epochs_kl_warmup,
        "n_steps_kl_warmup": plan.n_steps_kl_warmup,
        "max_kl_weight": plan.max_kl_weight,
        "min_kl_weight": plan.min_kl_weight,
        "loss_kwargs": {k: v for k, v in plan.loss_kwargs.items() if k != "kl_weight"},
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "steps_per_epoch": spe,
    }


def _captured(take_step: Any) -> dict[str, Any]:
    """The batch shapes a CUDA-graph run captured (or rehearsed, without CUDA)."""
    if isinstance(take_step, graphs.CapturedSteps):
        return {"captured_batch_shapes": take_step.captured_shapes}
    return {}


def _spent(progress: Progress, start: float) -> Progress:
    """The progress with this attempt's training time added, for saving."""
    return Progress(
        progress.epoch,
        progress.step,
        progress.rows,
        progress.kl_weights,
        progress.seconds + time.perf_counter() - start,
        progress.trajectory,
    )


def _checkpoint_epoch(
    checkpoint: Checkpointing,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    meta: dict[str, Any],
    start: float,
) -> None:
    """Report the epoch; save every N epochs; on a stop request save and raise TrainingStopped (the caller
    requeues)."""
    checkpoint.notify("epoch", progress.epoch)
    stop = checkpoint.stop_requested is not None and checkpoint.stop_requested()
    every = checkpoint.every_n_epochs
    if stop or (every and progress.epoch % every == 0):
        resume.save(checkpoint.path, module, optimizer, _spent(progress, start), meta)
        checkpoint.notify("saved", progress.epoch)
    if stop:
        raise TrainingStopped(progress.epoch, Path(checkpoint.path))


def _mark_trained(model: Any, train_idx: np.ndarray, device: torch.device) -> None:
    """What TrainRunner leaves on a model after fit, so that get_proportions() and friends work."""
    model.train_indices = train_idx
    model.validation_indices = np.array([], dtype=train_idx.dtype)
    model.test_indices = np.array([], dtype=train_idx.dtype)
    model.is_trained_ = True
    model.to_device(device)


def train_destvi_fast(
    model: Any,
    *,
    max_epochs: int | None = None,
    lr: float,
    batch_size: int,
    n_epochs_kl_warmup: int | None,
    plan_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> FastTrainResult:
    """`DestVI.train(max_epochs, lr, batch_size=, n_epochs_kl_warmup=, train_size=1.0, plan_kwargs=)`, fast.

    As in DestVI.train, `lr` and `n_epochs_kl_warmup` override the same keys of `plan_kwargs`
    (`n_epochs_kl_warmup=None` with `plan_kwargs={"n_steps_kl_warmup": n}`: a warm-up in steps); loss
    options (ct_sparsity_weight, eta_reg, beta_reg, ...) go through `plan_kwargs`. `options`: max_steps,
    drop_last, trajectory, seed, device, compile, on_epoch_end, checkpoint, as for `train_fast`.
    """
    kwargs = {**(plan_kwargs or {}), "lr": lr, "n_epochs_kl_warmup": n_epochs_kl_warmup}
    return train_fast(model, max_epochs=max_epochs, batch_size=batch_size, plan_kwargs=kwargs, **options)


def train_condscvi_fast(
    model: Any,
    *,
    max_epochs: int,
    lr: float,
    batch_size: int,
    plan_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> FastTrainResult:
    """`CondSCVI.train(max_epochs, lr, batch_size=, train_size=1, plan_kwargs=)`, fast.

    CondSCVI.train leaves the plan's KL warm-up at its default (400 epochs); so does this.
    """
    kwargs = {**(plan_kwargs or {}), "lr": lr}
    return train_fast(model, max_epochs=max_epochs, batch_size=batch_size, plan_kwargs=kwargs, **options)


def steps_per_run(
    n_obs: int, batch_size: int, max_epochs: int | None = None, max_steps: int | None = None, drop_last: bool = False
) -> int:
    """Optimizer steps of one run: `max_steps`, or every epoch's minibatches (the last, smaller one kept
    unless `drop_last`)."""
    return max_steps if max_steps else (max_epochs or 0) * batches_per_epoch(n_obs, batch_size, drop_last)

"""One optimizer step through the module's own forward and loss, eager or compiled.

The step returns the loss and a small tensor of sums for the epoch's history, so that nothing is
read back to the host per step. Compilation (`torch.compile`) traces the same scvi-tools code; it
fuses the ~1,800 small operator calls of an eager destVI step into far fewer, larger kernels, which
is what a model this small needs, but it draws dropout noise from inductor's own generator and
reorders floating-point sums, so a compiled run matches stock training statistically, not bit for bit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch

from toolkit.engines.graphs import CUDA_GRAPHS, IndexStep

CompileMode = bool | str
"""False (eager), True (inductor, default mode), `cudagraphs` (inductor inside one captured CUDA graph per
step: toolkit.engines.graphs) or a torch.compile mode such as "reduce-overhead"."""

_validate_lock = threading.Lock()
_validate_depth = 0
_validate_saved = True


@contextlib.contextmanager
def distributions_unvalidated() -> Iterator[None]:
    """Switch off torch.distributions argument checks for the duration (re-entrant, thread-safe).

    The checks are pure (they never change a value) but cost several small kernels per
    distribution per step. The flag is process-wide: concurrent fits share one switch and the
    last to leave restores the previous value. A non-finite loss is still reported (at the end of
    the run, with the first epoch it occurred in).
    """
    global _validate_depth, _validate_saved
    with _validate_lock:
        if _validate_depth == 0:
            _validate_saved = torch.distributions.Distribution._validate_args
            torch.distributions.Distribution.set_default_validate_args(False)
        _validate_depth += 1
    try:
        yield
    finally:
        with _validate_lock:
            _validate_depth -= 1
            if _validate_depth == 0:
                torch.distributions.Distribution.set_default_validate_args(_validate_saved)


def on_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module on `device`, with scvi-tools' MRDeconv prior moved along (`module.to` leaves it behind).

    MRDeconv (destVI) builds `qz_prior`, a torch distribution over its vamp-prior buffers, in `__init__`;
    `module.to` moves the buffers but not the distribution, which keeps the CPU tensors it was built from.
    With augmentation (scvi-tools' default, the adapter's "current" variant) every step samples that prior
    on the CPU and concatenates the draw with the GPU batch: "Expected all tensors to be on the same
    device", in any engine and mode (tests/test_step_devices.py). Here the distribution's tensors follow
    the module, values unchanged. On the CPU nothing moves: the eager CPU path is untouched.
    """
    module = module.to(device)
    prior = getattr(module, "qz_prior", None)
    if isinstance(prior, torch.distributions.Distribution):
        _move_distribution(prior, device)
    return module


def _move_distribution(distribution: torch.distributions.Distribution, device: torch.device) -> None:
    """Every tensor a distribution holds (its parameters and the distributions it wraps) on `device`, in place."""
    for name, value in vars(distribution).items():
        if torch.is_tensor(value) and value.device != device:
            setattr(distribution, name, value.to(device))
        elif isinstance(value, torch.distributions.Distribution):
            _move_distribution(value, device)


def make_optimizer(
    plan: Any, params: list[torch.nn.Parameter], fused: bool = False, capturable: bool = False
) -> torch.optim.Optimizer:
    """The plan's optimizer; plain Adam/AdamW run multi-tensor (`foreach`): bitwise the same update.

    On CUDA torch picks `foreach` by itself (so this is what stock training runs there too); on CPU
    it is the same arithmetic with fewer Python-level calls. `fused` takes torch's single-kernel
    Adam instead: the same update rounded differently (not bitwise), about 1.2 ms less per step on
    STARmap's 320,000 parameters on one CPU core; the compiled engine uses it, being statistical anyway.
    `capturable` keeps Adam's step counter on the device, as a captured CUDA graph needs (multi-tensor).
    """
    optimizers = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}
    if capturable and plan.optimizer_name not in optimizers:
        raise ValueError(
            f"compile: {CUDA_GRAPHS} captures Adam or AdamW only; plan_kwargs optimizer "
            f"{plan.optimizer_name!r} cannot be captured: use compile: true"
        )
    if plan.optimizer_name in optimizers:
        mode = {"foreach": True, "capturable": True} if capturable else {"fused": True} if fused else {"foreach": True}
        return optimizers[plan.optimizer_name](params, lr=plan.lr, eps=plan.eps, weight_decay=plan.weight_decay, **mode)
    return plan.get_optimizer_creator()(params)


def metric_names(out: Any) -> list[str]:
    """Extra per-step metrics a module reports (destVI: v_sparsity, augmentation) that scvi logs per epoch."""
    return [
        k for k in out.extra_metrics_keys if torch.is_tensor(out.extra_metrics[k]) and out.extra_metrics[k].dim() == 0
    ]


def metric_row(out: Any, names: list[str]) -> torch.Tensor:
    """Sums for the epoch means, stacked so that accumulating them costs one kernel per step.

    Layout: loss x batch, reconstruction sum, kl_local sum, kl_global, then each extra x batch
    (scvi weights per-step scalars by the batch size when it averages them over an epoch).
    """
    m = out.n_obs_minibatch
    extras = [out.extra_metrics[name] * m for name in names]
    return torch.stack([out.loss * m, out.reconstruction_loss_sum, out.kl_local_sum, out.kl_global_sum, *extras])


def probe_metric_names(module: torch.nn.Module, batch: dict[str, torch.Tensor], loss_kwargs: dict) -> list[str]:
    """Names of the extra metrics, from one forward that leaves no trace (RNG state restored, no grad)."""
    devices = [
        batch_device.index or 0 for batch_device in {t.device for t in batch.values()} if batch_device.type == "cuda"
    ]
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        _, _, out = module(batch, loss_kwargs=loss_kwargs)
    return metric_names(out)


def make_step(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    names: list[str],
    data: dict[str, torch.Tensor],
    loss_kwargs: dict[str, Any],
    compile: CompileMode = False,
) -> IndexStep:
    """A function index -> metric row that takes one optimizer step on those rows of `data`.

    With `compile`, forward + loss (and, through AOTAutograd, their backward) are compiled; shapes
    are static, so a run compiles twice at most (full and last batch). The KL weight must come in
    as a tensor, or every new value would recompile. The Adam update stays eager (multi-tensor,
    exactly as stock runs it): compiling it saved ~10% here and was the prime suspect of a small
    shift in a first equivalence run (results/engine.md). torch.compile rejects `mode` together with
    `options`, so a mode string runs without the guard filter. `cudagraphs` compiles as `True` does
    and the caller captures the whole step (toolkit.engines.graphs).
    """

    def loss_and_row(batch: dict[str, torch.Tensor], loss_kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, out = module(batch, loss_kwargs=loss_kwargs)
        with torch.no_grad():
            row = metric_row(out, names)
        return out.loss, row

    if compile is True or compile == CUDA_GRAPHS:
        # The module's structure and train/eval mode do not change during a run, so its guards
        # (checked at every call, ~0.2 ms here) are dropped; the batch's shapes are still guarded.
        options = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
        loss_and_row = torch.compile(loss_and_row, dynamic=False, options=options)
    elif compile:
        loss_and_row = torch.compile(loss_and_row, dynamic=False, mode=str(compile))

    def step(index: torch.Tensor) -> torch.Tensor:
        with _born_on(index.device, compile):
            batch = {key: value.index_select(0, index) for key, value in data.items()}
            loss, row = loss_and_row(batch, loss_kwargs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return row

    return step


def _born_on(device: torch.device, compile: CompileMode) -> contextlib.AbstractContextManager:
    """In a compiled step off the CPU, tensors made without a device are made on `device`.

    scvi-tools' MRDeconv builds its label enumeration with `torch.arange(0, n_labels)` on the CPU every
    step (`generative`; `_get_inference_input` too with augmentation, with Dirichlet and Beta draws made
    on the CPU and the augmentation loss's zeros) and moves it to the GPU. On one H200 (torch 2.11,
    results/engine.md) inductor then handed a CPU buffer to a Triton kernel in `compile: true` and
    `cudagraphs` ("Pointer argument cannot be accessed from Triton (cpu tensor?)"): the CPU arange is in
    the forward graph and, recomputed by AOTAutograd, in the backward one (tests/test_step_devices.py).
    Under `torch.device(device)` those tensors are born on the GPU and the moves are no-ops; dynamo
    traces the device context into the graphs. Every compiled mode; eager runs as stock runs (on a GPU
    too: the same CPU random draws, so that eager stays stock's twin), and on the CPU nothing changes.
    """
    if not compile or device.type == "cpu":
        return contextlib.nullcontext()
    return torch.device(device)

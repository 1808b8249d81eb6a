"""The training schedule as pure functions (no torch): minibatches per epoch, and the KL warm-up of
scvi-tools' TrainingPlan as a function of epoch and step.

The fast engine computes the weight itself instead of asking a Lightning module for it; the test
suite checks this function against `TrainingPlan.kl_weight` so that the two cannot drift apart.
"""

from __future__ import annotations

import math


def kl_weight(
    epoch: int,
    step: int,
    n_epochs_kl_warmup: int | None,
    n_steps_kl_warmup: int | None,
    max_kl_weight: float = 1.0,
    min_kl_weight: float = 0.0,
) -> float:
    """Linear warm-up from `min_kl_weight` to `max_kl_weight`; epochs take precedence over steps.

    Epoch-based warm-up is constant within an epoch (scvi reads `current_epoch`), which is why the
    same warm-up means very different step counts at different batch sizes.
    """
    if min_kl_weight > max_kl_weight:
        raise ValueError(f"min_kl_weight={min_kl_weight} is larger than max_kl_weight={max_kl_weight}.")
    slope = max_kl_weight - min_kl_weight
    if n_epochs_kl_warmup:
        if epoch < n_epochs_kl_warmup:
            return slope * (epoch / n_epochs_kl_warmup) + min_kl_weight
    elif n_steps_kl_warmup and step < n_steps_kl_warmup:
        return slope * (step / n_steps_kl_warmup) + min_kl_weight
    return max_kl_weight


def is_per_step(n_epochs_kl_warmup: int | None, n_steps_kl_warmup: int | None) -> bool:
    """True when the weight can change between the steps of one epoch (step-based warm-up)."""
    return not n_epochs_kl_warmup and bool(n_steps_kl_warmup)


def batches_per_epoch(n_obs: int, batch_size: int, drop_last: bool = False) -> int:
    """Optimizer steps per epoch: the last, smaller minibatch counts unless it is dropped."""
    return n_obs // batch_size if drop_last else math.ceil(n_obs / batch_size)

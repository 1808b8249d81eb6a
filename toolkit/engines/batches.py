"""Spot (or cell) tensors held on the device once, and minibatch indices drawn as scvi-tools draws them.

Stock training builds each minibatch on the CPU through an AnnData-backed DataLoader and copies it to
the device every step. Here the registered tensors are copied once and each step gathers its rows by
index. The epoch order reproduces DataSplitter + AnnDataLoader exactly, random draws included: the
training indices are `RandomState(seed).permutation(n)`; every epoch the DataLoader iterator takes
one int64 from torch's global generator (its unused base seed), RandomSampler takes a second to seed
a private generator, and `randperm` of that generator orders the epoch; batches are consecutive
slices of it with the last, smaller one kept (drop_last=False, scvi-tools' default) or dropped
(`drop_last=True`, as torch's BatchSampler drops it: the same draws, one step fewer). Consuming the global generator the
same way keeps dropout and every other draw of the module in step with stock training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from toolkit.engines.schedule import batches_per_epoch


def registered_tensors(model, device: torch.device) -> dict[str, torch.Tensor]:
    """All tensors registered with the model's AnnData (the same keys and dtypes a minibatch has)."""
    dataset = model.adata_manager.create_torch_dataset()
    arrays = dataset[np.arange(model.adata.n_obs)]
    return {key: torch.as_tensor(np.asarray(value)).to(device) for key, value in arrays.items()}


def split_indices(n_obs: int, seed: int | None) -> np.ndarray:
    """DataSplitter's training indices for train_size=1: a seeded permutation of all observations."""
    return np.random.RandomState(seed=seed).permutation(np.arange(n_obs))


@dataclass
class EpochSampler:
    """Minibatch index tensors for one epoch at a time, in stock order."""

    train_idx: np.ndarray
    batch_size: int
    device: torch.device
    drop_last: bool = False

    def __post_init__(self) -> None:
        self._train_idx = torch.as_tensor(self.train_idx, dtype=torch.long)
        if self.n_batches == 0:
            raise ValueError(
                f"drop_last with batch_size {self.batch_size} above the {self.n_obs} observations leaves no "
                "minibatch at all; lower batch_size or set drop_last: false"
            )

    @property
    def n_obs(self) -> int:
        return len(self.train_idx)

    @property
    def n_batches(self) -> int:
        """Minibatches per epoch."""
        return batches_per_epoch(self.n_obs, self.batch_size, self.drop_last)

    def epoch(self) -> tuple[torch.Tensor, ...]:
        """The next epoch's minibatches (index tensors on the device), drawing from torch's global RNG."""
        torch.empty((), dtype=torch.int64).random_()  # DataLoader iterator's base seed (unused, but drawn)
        seed = int(torch.empty((), dtype=torch.int64).random_().item())  # RandomSampler's own seed
        generator = torch.Generator()
        generator.manual_seed(seed)
        order = self._train_idx[torch.randperm(self.n_obs, generator=generator)]
        batches = torch.split(order.to(self.device, non_blocking=True), self.batch_size)
        return batches[: self.n_batches]

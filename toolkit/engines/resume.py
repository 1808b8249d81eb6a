"""Checkpoints for the fast engine: survive preemption and resume exactly.

A long fit on a cluster can be preempted or hit its time limit. The engine saves, at an epoch
boundary, everything the rest of the run depends on: module and optimizer state, the epoch and
step counters, the per-epoch loss sums so far and torch's random generators (the next epoch's
permutation and all dropout noise come from them). Resuming from such a file gives, eager on
CPU, the same numbers as an uninterrupted run (tests/test_fast_engine.py checks bit equality).
The file holds only tensors and plain values, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT = "spotsweep.fast-engine/1"


@dataclass
class Checkpointing:
    """Where and when the fast engine saves its state, and how it is asked to stop.

    `path` is resumed from when it exists. A save happens every `every_n_epochs` completed epochs
    (0: never periodically), at the end of training (a requeue while scoring then restores the
    trained model) and when `stop_requested()` returns True at an epoch end, after which the
    engine raises `TrainingStopped` for the caller to requeue. `on_event(name, epochs_done)` hears
    of every "saved" and "resumed", for the job's record of its attempts.
    """

    path: Path
    every_n_epochs: int = 0
    stop_requested: Callable[[], bool] | None = None
    on_event: Callable[[str, int], None] | None = None

    def notify(self, event: str, epochs_done: int) -> None:
        if self.on_event is not None:
            self.on_event(event, epochs_done)


class TrainingStopped(Exception):
    """Training saved its state and stopped early because `stop_requested()` said so."""

    def __init__(self, epochs_done: int, path: Path):
        super().__init__(f"training stopped after {epochs_done} epochs; state saved to {path}")
        self.epochs_done = epochs_done
        self.path = path


@dataclass
class Progress:
    """The loop's counters and accumulated results, as saved and restored."""

    epoch: int = 0
    """Epochs completed."""
    step: int = 0
    rows: list[torch.Tensor] | None = None
    kl_weights: list[float] | None = None
    seconds: float = 0.0
    """Training time spent in earlier attempts."""


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(
    path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress, meta: dict[str, Any]
) -> None:
    """Write the state atomically (a crash mid-write leaves the previous file intact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = torch.stack(progress.rows).cpu() if progress.rows else torch.zeros(0)
    state = {
        "format": FORMAT,
        "meta": meta,
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": progress.epoch,
        "step": progress.step,
        "rows": rows,
        "kl_weights": list(progress.kl_weights or []),
        "seconds": progress.seconds,
        "rng": _rng_state(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The saved state at `path`; refuse a file from a different run."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a fast-engine checkpoint ({state.get('format')!r}); delete it or fix the path."
        )
    mismatched = {k: (state["meta"].get(k), v) for k, v in meta.items() if state["meta"].get(k) != v}
    if mismatched:
        raise ValueError(
            f"{path} was saved by a different run (saved vs now: {mismatched}); delete it to start afresh."
        )
    return state


def restore_module(state: dict[str, Any], module: torch.nn.Module) -> None:
    """Load the module's weights. Do this before building the optimizer: scvi's `Embedding`
    replaces its weight Parameter when it loads a state dict, so an optimizer built earlier would
    keep updating the old, unused tensor."""
    module.load_state_dict(state["module"])


def restore_progress(state: dict[str, Any], optimizer: torch.optim.Optimizer, device: torch.device) -> Progress:
    """Load the optimizer and the generators; return the loop's counters and accumulated sums."""
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    rows = [row.to(device) for row in state["rows"]] if state["rows"].numel() else []
    return Progress(state["epoch"], state["step"], rows, list(state["kl_weights"]), float(state["seconds"]))

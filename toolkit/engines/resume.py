"""The fast engine's state file: survive preemption and resume exactly.

A long fit on a cluster can be preempted or hit its time limit. The engine saves, at an epoch
boundary, everything the rest of the run depends on: module and optimizer state, the epoch and
step counters, the per-epoch loss sums so far and torch's random generators (the next epoch's
permutation and all dropout noise come from them). Resuming from such a file gives, eager on
CPU, the same numbers as an uninterrupted run (tests/test_fast_engine.py checks bit equality).
The file holds only tensors and plain values, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from toolkit.engines.session import rng_state, set_rng_state

FORMAT = "spotsweep.fast-engine/2"
"""/2: the generators in the format both engines share (`checkpoint.rng_state`); /1 files are refused."""


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
    trajectory: list[dict[str, Any]] | None = None
    """The accuracy trajectory's points scored so far (plain values)."""


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
        "trajectory": list(progress.trajectory or []),
        "rng": rng_state(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The saved state at `path`; refuse a file from a different run."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    saved_format = state.get("format")
    if isinstance(saved_format, str) and saved_format.startswith("spotsweep.fast-engine/") and saved_format != FORMAT:
        raise ValueError(
            f"{path} was saved by another spotsweep version ({saved_format}, this one reads {FORMAT}); finish the "
            "task with the version that started it, or delete the file to train it afresh."
        )
    if saved_format != FORMAT:
        raise ValueError(f"{path} is not a fast-engine checkpoint ({saved_format!r}); delete it or fix the path.")
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
    set_rng_state(state["rng"])
    rows = [row.to(device) for row in state["rows"]] if state["rows"].numel() else []
    return Progress(
        state["epoch"],
        state["step"],
        rows,
        list(state["kl_weights"]),
        float(state["seconds"]),
        list(state.get("trajectory", [])),
    )

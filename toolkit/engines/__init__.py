"""Training engines for destVI: `scvi` (stock scvi-tools/Lightning) and `fast` (a lean loop over the same module).

Kept apart as scvi-tools keeps model, module and training apart: `fast` is the loop, `step` one
optimizer step (eager or compiled), `graphs` that step captured as a CUDA graph, `schedule` the KL
warm-up, `batches` the minibatch order,
`checkpoint` what a training saves and how it resumes (both engines; `lightning_checkpoint` holds stock
training's callback, `session` the session and generator format both share), `resume` the fast engine's
state file. See results/engine.md for what the fast engine keeps, what it drops, its speed and its
equivalence.
"""

from typing import Any

from toolkit.engines.checkpoint import Checkpointing, TrainingStopped

_FAST = ("FastTrainResult", "resolve_device", "steps_per_run", "train_condscvi_fast", "train_destvi_fast", "train_fast")


def __getattr__(name: str) -> Any:
    """The fast engine's names, imported on first use: importing the package (the checkpoint session
    that every task's runner opens) must not import torch."""
    if name in _FAST:
        from toolkit.engines import fast

        return getattr(fast, name)
    raise AttributeError(f"module 'toolkit.engines' has no attribute {name!r}")


ENGINES: tuple[str, ...] = ("scvi", "fast")

__all__ = [
    "ENGINES",
    "Checkpointing",
    "FastTrainResult",
    "TrainingStopped",
    "resolve_device",
    "steps_per_run",
    "train_condscvi_fast",
    "train_destvi_fast",
    "train_fast",
]

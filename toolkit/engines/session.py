"""The checkpoint session and the random generators' format: what both engines' checkpointing share.

Why a module of its own: `checkpoint` (what a training asks for) and `lightning_checkpoint` (stock
training's callback) both need the session and `rng_state`; with them here the callback imports only
this, and `checkpoint` alone imports the callback (lazily, as only a Lightning training needs it), so
the two never import each other. Imports neither torch (until a generator is saved) nor Lightning.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STATE_KEY = "spotsweep.EpochCheckpoint"


def _nothing() -> None:
    """The default hand-over: nothing to do after a stopped training has saved."""


@dataclass
class CheckpointSession:
    """What the running task asked for, and what happened (read by its runner afterwards)."""

    directory: Path
    every_n_epochs: int
    hand_over: Callable[[], None] = _nothing
    """Called once a training stopped on request has saved (the runner's requeue: it may raise SystemExit)."""
    sigterm_handler: Callable[..., Any] | None = None
    """The runner's SIGTERM handler, kept in force while Lightning trains (which would replace it)."""
    stop_requested: bool = False
    training: object | None = None
    """What is training now (the Lightning callback or the fast engine's Checkpointing); None between."""
    resumed_from_epoch: int | None = None
    saved_epoch: int | None = None
    earlier_train_s: float = 0.0
    """Training time of the earlier attempts, as the checkpoint resumed from recorded it (stock engine)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    on_epoch: Callable[[int], None] | None = None
    """Hears every completed epoch (the runner's progress report); None: nobody listens."""
    on_planned: Callable[[int], None] | None = None
    """Hears how many epochs the training will run, once it knows (a budget in steps becomes epochs only
    once the minibatches per epoch are known); None: nobody listens."""

    def record(self, event: str, epochs_done: int) -> None:
        """Note an "epoch", "planned" (the epochs to run), "resumed" or "saved" event, for the runner's
        progress and record of the attempt."""
        if event == "epoch":
            if self.on_epoch is not None:
                self.on_epoch(epochs_done)
            return
        if event == "planned":
            if self.on_planned is not None:
                self.on_planned(epochs_done)
            return
        if event == "resumed":
            self.resumed_from_epoch = epochs_done
            self.events.append({"event": "resumed", "from_epoch": epochs_done, "time": time.time()})
        else:
            self.saved_epoch = epochs_done
            self.events.append({"event": "saved", "epochs_done": epochs_done, "time": time.time()})


_session: CheckpointSession | None = None


def current() -> CheckpointSession | None:
    """The open session, or None when nobody asked for checkpoints."""
    return _session


@contextlib.contextmanager
def use_session(session: CheckpointSession) -> Iterator[CheckpointSession]:
    """Within this block, trainings checkpoint into `session.directory`."""
    global _session
    session.directory.mkdir(parents=True, exist_ok=True)
    _session = session
    try:
        yield session
    finally:
        _session = None


# --- the random generators, one format for both engines ---------------------------------------------


def rng_state() -> dict[str, Any]:
    """torch's, numpy's and Python's global generators (and CUDA's once used), as tensors and plain
    values: a checkpoint holding them loads with `torch.load(weights_only=True)`."""
    import torch

    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what `rng_state` saved."""
    import torch

    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys).astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

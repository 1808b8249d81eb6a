"""Training checkpoints, the training side: what a running training saves and how it resumes.

Whoever runs a task opens a `CheckpointSession` (`use_session`); inside it stock scvi-tools training
gets a Lightning callback from `train_kwargs()` and the fast engine a `Checkpointing` from
`fast_engine()`. Outside a session both are empty and training is unchanged. The session owner decides
when to stop (it sets `stop_requested`, e.g. on SLURM's USR2: toolkit.backends.preemption) and what
happens once a stopped training has saved (`hand_over`, e.g. requeue): training never imports the
scheduler.

The callback saves a full Lightning checkpoint (weights, optimizer, loop counters) plus the random
generators and scvi's history at the end of every N-th epoch, and at the end of the epoch in which a
stop was requested. Resuming at an epoch boundary with the generators restored gives, on CPU, the same
numbers as an uninterrupted run (tests/test_checkpoint.py checks bit equality). Both engines store the
generators in one format (`rng_state`). The callback itself is in `lightning_checkpoint`: this module
imports neither torch nor Lightning, so that a task that trains nothing (a control) and the scheduler's
bookkeeping (status, aggregate) start without them.
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

CHECKPOINT_NAME = "last.ckpt"
"""The file of stock training (`train_kwargs()`); `train_kwargs(name)` writes `<name>.ckpt`."""
FAST_CHECKPOINT_NAME = "last.pt"
"""The same for the fast engine (`fast_engine()`; `fast_engine(name)` writes `<name>.pt`)."""
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


@dataclass
class Checkpointing:
    """Where and when the fast engine saves its state, and how it is asked to stop.

    `path` is resumed from when it exists. A save happens every `every_n_epochs` completed epochs
    (0: never periodically), at the end of training (a requeue while scoring then restores the
    trained model) and when `stop_requested()` returns True at an epoch end, after which the
    engine raises `TrainingStopped` for the caller to requeue. `on_event(name, epochs_done)` hears
    of every completed "epoch", "saved" and "resumed", for the job's progress and record of its attempts.
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


def latest(directory: Path, name: str = "last") -> Path | None:
    """The stock-training checkpoint to resume from, if a previous attempt left one."""
    path = Path(directory) / f"{name}.ckpt"
    return path if path.is_file() else None


def train_kwargs(name: str = "last") -> dict[str, Any]:
    """Extra keyword arguments for scvi's `model.train()`: empty outside a session.

    `name` tells apart several trainings of one task (each resumes from its own checkpoint). If the
    adapter passes callbacks of its own, it must merge the lists.
    """
    if _session is None:
        return {}
    from toolkit.engines.lightning_checkpoint import EpochCheckpoint

    path = _session.directory / f"{name}.ckpt"
    return {"callbacks": [EpochCheckpoint(_session, path)], "ckpt_path": str(path) if path.is_file() else None}


def earlier_train_s() -> float:
    """Training time that earlier attempts of this task spent before the stock-engine checkpoint it resumed
    from: added to this attempt's, a resumed task reports the time its whole training took. 0 outside a session."""
    return 0.0 if _session is None else _session.earlier_train_s


def progress_kwargs() -> dict[str, Any]:
    """Extra keyword arguments for a stock `model.train()` that reports its epochs but cannot resume.

    Cell2location's: its Pyro optimiser keeps its state outside Lightning's checkpoint, so a resumed fit
    would not be the uninterrupted one; it starts over instead, and meanwhile `spotsweep status` shows
    how far it is. Empty outside a session.
    """
    if _session is None:
        return {}
    from toolkit.engines.lightning_checkpoint import EpochProgress

    return {"callbacks": [EpochProgress(_session)]}


@contextlib.contextmanager
def fast_engine(name: str = "last") -> Iterator[Checkpointing | None]:
    """The fast engine's `Checkpointing` for the open session, or None outside one.

    The engine saves into `<name>.pt` every N epochs, resumes from it, and stops at the end of the
    epoch in which a stop was requested; the session's `hand_over` then runs, as after the Lightning
    callback's save.
    """
    session = _session
    if session is None:
        yield None
        return
    saving = Checkpointing(
        session.directory / f"{name}.pt", session.every_n_epochs, lambda: session.stop_requested, session.record
    )
    session.training = saving
    try:
        yield saving
    except TrainingStopped:
        session.training = None
        session.hand_over()
        raise
    finally:
        session.training = None


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

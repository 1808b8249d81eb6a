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
bookkeeping (status, aggregate) start without them. The session and the generators' format, which the
callback needs too, are in `session`: the callback never imports this module (no import circle).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.engines.session import STATE_KEY, CheckpointSession, current, rng_state, set_rng_state, use_session

__all__ = [
    "CHECKPOINT_NAME",
    "FAST_CHECKPOINT_NAME",
    "STATE_KEY",
    "CheckpointSession",
    "Checkpointing",
    "TrainingStopped",
    "current",
    "earlier_train_s",
    "fast_engine",
    "latest",
    "progress_kwargs",
    "rng_state",
    "set_rng_state",
    "train_kwargs",
    "use_session",
]

CHECKPOINT_NAME = "last.ckpt"
"""The file of stock training (`train_kwargs()`); `train_kwargs(name)` writes `<name>.ckpt`."""
FAST_CHECKPOINT_NAME = "last.pt"
"""The same for the fast engine (`fast_engine()`; `fast_engine(name)` writes `<name>.pt`)."""


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
    session = current()
    if session is None:
        return {}
    from toolkit.engines.lightning_checkpoint import EpochCheckpoint

    path = session.directory / f"{name}.ckpt"
    return {"callbacks": [EpochCheckpoint(session, path)], "ckpt_path": str(path) if path.is_file() else None}


def earlier_train_s() -> float:
    """Training time that earlier attempts of this task spent before the stock-engine checkpoint it resumed
    from: added to this attempt's, a resumed task reports the time its whole training took. 0 outside a session."""
    session = current()
    return 0.0 if session is None else session.earlier_train_s


def progress_kwargs() -> dict[str, Any]:
    """Extra keyword arguments for a stock `model.train()` that reports its epochs but cannot resume.

    Cell2location's: its Pyro optimiser keeps its state outside Lightning's checkpoint, so a resumed fit
    would not be the uninterrupted one; it starts over instead, and meanwhile `spotsweep status` shows
    how far it is. Empty outside a session.
    """
    session = current()
    if session is None:
        return {}
    from toolkit.engines.lightning_checkpoint import EpochProgress

    return {"callbacks": [EpochProgress(session)]}


@contextlib.contextmanager
def fast_engine(name: str = "last") -> Iterator[Checkpointing | None]:
    """The fast engine's `Checkpointing` for the open session, or None outside one.

    The engine saves into `<name>.pt` every N epochs, resumes from it, and stops at the end of the
    epoch in which a stop was requested; the session's `hand_over` then runs, as after the Lightning
    callback's save.
    """
    session = current()
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

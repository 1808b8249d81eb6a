"""Training checkpoints that survive SLURM preemption and time limits, and resume exactly.

Why: a DestVI run of thousands of epochs on a cluster can be preempted or hit its time limit. The
job runner (toolkit.jobs.SweepTask) activates checkpointing for the task it runs; the method adapter
passes `**checkpoint.train_kwargs()` to scvi's `model.train(...)`, which adds a Lightning callback and,
after a requeue, `ckpt_path` of the last checkpoint; with the fast engine it trains inside
`with checkpoint.fast_engine() as saving:` and passes `checkpoint=saving`. Outside an active task both
are empty and training is unchanged.

The callback saves a full Lightning checkpoint (weights, optimizer, loop counters) plus the random
number generators and scvi's history at the end of every N-th epoch. USR2 (submitit's signal for time
limit and preemption) is deferred to the end of the current epoch: the state is saved there, then
submitit's own handler runs (`checkpoint()` -> `scontrol requeue` -> exit). If the epoch does not end
within `grace_s`, the handler runs anyway and the task resumes from the last periodic checkpoint.
Resumption at an epoch boundary with the generators restored gives, on CPU, the same numbers as an
uninterrupted run (tests/test_checkpoint.py checks bit equality).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.ckpt"
"""The file of the default training (`train_kwargs()`); `train_kwargs(name)` writes `<name>.ckpt`."""
FAST_CHECKPOINT_NAME = "last.pt"
"""The same for the fast engine (`fast_engine()`; `fast_engine(name)` writes `<name>.pt`)."""
STATE_KEY = "spotsweep.EpochCheckpoint"


@dataclass
class _Session:
    """What the running task asked for, and what happened (read by the job runner afterwards)."""

    directory: Path
    every_n_epochs: int
    grace_s: float
    previous_usr2: Any = None
    previous_sigterm: Any = None
    timer: threading.Timer | None = None
    stop_requested: bool = False
    stop_deadline: float = 0.0
    training: object | None = None
    """What is training now (a Lightning callback or the fast engine's Checkpointing): USR2 waits for it."""
    resumed_from_epoch: int | None = None
    saved_epoch: int | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


_session: _Session | None = None


def latest(directory: Path, name: str = "last") -> Path | None:
    """The checkpoint to resume from, if a previous attempt left one."""
    path = Path(directory) / f"{name}.ckpt"
    return path if path.is_file() else None


@contextlib.contextmanager
def activate(directory: Path, every_n_epochs: int, grace_s: float = 60.0) -> Iterator[_Session]:
    """Within this block, `train_kwargs()` checkpoints into `directory` and USR2 waits for an epoch end."""
    global _session
    session = _Session(Path(directory), every_n_epochs, grace_s)
    session.directory.mkdir(parents=True, exist_ok=True)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        session.previous_usr2 = signal.getsignal(signal.SIGUSR2)
        session.previous_sigterm = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGUSR2, _on_usr2)
    _session = session
    try:
        yield session
    finally:
        _session = None
        if session.timer is not None:
            session.timer.cancel()
        if in_main_thread:
            signal.signal(signal.SIGUSR2, session.previous_usr2 or signal.SIG_DFL)


def train_kwargs(name: str = "last") -> dict[str, Any]:
    """Extra keyword arguments for scvi's `model.train()`: empty unless a task activated checkpointing.

    `name` tells apart several trainings of one task (each resumes from its own checkpoint). If the
    adapter passes callbacks of its own, it must merge the lists.
    """
    if _session is None:
        return {}
    path = _session.directory / f"{name}.ckpt"
    return {"callbacks": [EpochCheckpoint(_session, path)], "ckpt_path": str(path) if path.is_file() else None}


@contextlib.contextmanager
def fast_engine(name: str = "last") -> Iterator[Any]:
    """The fast engine's `Checkpointing` for the active task, or None outside one.

    The engine saves into `<name>.pt` every N epochs, resumes from it, and stops at the end of the
    epoch in which USR2 arrived; the stop is then handed to submitit's handler (requeue), as the
    Lightning callback does for stock training.
    """
    session = _session
    if session is None:
        yield None
        return
    from toolkit.engines import Checkpointing, TrainingStopped

    def record(event: str, epochs_done: int) -> None:
        if event == "resumed":
            session.resumed_from_epoch = epochs_done
            session.events.append({"event": "resumed", "from_epoch": epochs_done, "time": time.time()})
        else:
            session.saved_epoch = epochs_done
            session.events.append({"event": "saved", "epochs_done": epochs_done, "time": time.time()})

    saving = Checkpointing(
        session.directory / f"{name}.pt", session.every_n_epochs, lambda: session.stop_requested, record
    )
    session.training = saving
    try:
        yield saving
    except TrainingStopped:
        session.training = None
        _hand_over(signal.SIGUSR2, None)
        raise
    finally:
        session.training = None


def _hand_over(signum: int, frame: Any) -> None:
    """Run the handler that was installed before ours (submitit's: checkpoint, requeue, exit)."""
    previous = _session.previous_usr2 if _session else None
    if _session is not None and _session.timer is not None:
        _session.timer.cancel()
    if callable(previous):
        previous(signum, frame)


def _on_usr2(signum: int, frame: Any) -> None:
    session = _session
    if session is None or session.training is None:
        _hand_over(signum, frame)  # not training: nothing to save beyond what is on disk
        return
    if not session.stop_requested:
        session.stop_requested = True
        session.stop_deadline = time.monotonic() + session.grace_s
        session.events.append({"event": "stop-requested", "time": time.time()})
        log.warning("USR2: saving a checkpoint at the end of this epoch, then requeueing")
        session.timer = _resignal_after(session, session.grace_s)
    elif time.monotonic() >= session.stop_deadline:
        log.warning("USR2: the epoch did not end within %.0f s; requeueing from the last checkpoint", session.grace_s)
        _hand_over(signum, frame)


def _resignal_after(session: _Session, seconds: float) -> threading.Timer:
    """Deliver USR2 again after the grace period, so a very long epoch cannot outlast the time limit
    (only while the same session is active: the signal's default action would kill the process)."""

    def resignal() -> None:
        if _session is session:
            os.kill(os.getpid(), signal.SIGUSR2)

    timer = threading.Timer(seconds, resignal)
    timer.daemon = True
    timer.start()
    return timer


def _rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _history(trainer: Any) -> dict[str, dict[str, list]]:
    """scvi's logged history as plain lists (a checkpoint loads with torch's weights_only)."""
    history = getattr(trainer.logger, "history", None) or {}
    return {
        name: {"index": [int(i) for i in frame.index], "values": frame.iloc[:, 0].astype(float).tolist()}
        for name, frame in history.items()
    }


def _restore_history(trainer: Any, saved: dict[str, dict[str, list]]) -> None:
    import pandas as pd

    experiment = getattr(trainer.logger, "experiment", None)
    if experiment is None or not hasattr(experiment, "data"):
        return
    for name, series in saved.items():
        frame = pd.DataFrame({name: series["values"]}, index=pd.Index(series["index"], name="epoch"), dtype=object)
        experiment.data[name] = frame


class EpochCheckpoint(Callback):
    """Save the whole training state every N epochs and when asked to stop; restore it on resume."""

    def __init__(self, session: _Session, path: Path):
        self.session = session
        self.path = path
        self._loaded: dict[str, Any] | None = None
        self._pending_history: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return STATE_KEY

    # -- what goes into the checkpoint -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rng": _rng_state(), "history": self._pending_history or {}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    # -- training hooks ----------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.session.training = self
        self._keep_sigterm_handler(trainer)
        if self._loaded is not None:
            _set_rng_state(self._loaded["rng"])
            # Lightning made this epoch's data iterator before this hook, drawing its shuffling seed
            # from the generator as it was before the restore; make it again from the restored one.
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)
            _restore_history(trainer, self._loaded["history"])
            self.session.resumed_from_epoch = int(trainer.current_epoch)
            self.session.events.append(
                {"event": "resumed", "from_epoch": self.session.resumed_from_epoch, "time": time.time()}
            )
            self._loaded = None

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if callable(self.session.previous_sigterm):
            trainer._signal_connector.received_sigterm = False

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if callable(self.session.previous_sigterm):
            trainer._signal_connector.received_sigterm = False
        completed = int(trainer.current_epoch) + 1
        if self.session.stop_requested or completed % self.session.every_n_epochs == 0:
            self._save(trainer, completed, self._epoch_row(trainer))
        if self.session.stop_requested:
            self.session.training = None
            _hand_over(signal.SIGUSR2, None)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """A final checkpoint: a requeue while scoring then restores the trained model, not epoch 0."""
        self.session.training = None
        self._save(trainer, int(trainer.current_epoch), {})

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.session.training = None

    # -- helpers -------------------------------------------------------------------------------------
    def _keep_sigterm_handler(self, trainer: Any) -> None:
        """Put back the SIGTERM handler the job had before Lightning replaced it.

        submitit ignores SIGTERM: on preemption USR2 follows it (and we checkpoint), on scancel SIGKILL
        does. Lightning would instead stop training at the next batch, so that a preemption ends the
        task as a failure before USR2 arrives. Only a Python handler is put back: without one (no
        submitit), Lightning's behaviour stays.
        """
        if callable(self.session.previous_sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.session.previous_sigterm)
            trainer._signal_connector.received_sigterm = False

    @staticmethod
    def _epoch_row(trainer: Any) -> dict[str, float]:
        """This epoch's metrics, which scvi's logger receives only after the epoch-end hooks."""
        metrics = trainer._logger_connector.metrics["log"]
        return {name: float(value) for name, value in metrics.items() if name != "epoch"}

    def _save(self, trainer: Any, completed: int, current_row: dict[str, float]) -> None:
        history = _history(trainer)
        epoch = int(trainer.current_epoch)
        for name, value in current_row.items():
            series = history.setdefault(name, {"index": [], "values": []})
            if epoch not in series["index"]:
                series["index"].append(epoch)
                series["values"].append(value)
        self._pending_history = history
        path = self.path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        trainer.save_checkpoint(str(tmp))
        os.replace(tmp, path)
        self._pending_history = None
        self.session.saved_epoch = completed
        self.session.events.append({"event": "saved", "epochs_done": completed, "time": time.time()})

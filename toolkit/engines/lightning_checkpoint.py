"""The Lightning callback of stock training: saves and restores the whole training state.

Apart from `checkpoint` so that only a training that runs Lightning imports it (and torch).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from toolkit.engines.session import STATE_KEY, CheckpointSession, rng_state, set_rng_state


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

    def __init__(self, session: CheckpointSession, path: Path):
        self.session = session
        self.path = path
        self._loaded: dict[str, Any] | None = None
        self._pending_history: dict[str, Any] | None = None
        self._started: float | None = None
        self._earlier_s = 0.0

    @property
    def state_key(self) -> str:
        return STATE_KEY

    # -- what goes into the checkpoint -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        spent = 0.0 if self._started is None else time.perf_counter() - self._started
        return {"rng": rng_state(), "history": self._pending_history or {}, "seconds": self._earlier_s + spent}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    # -- training hooks ----------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.session.training = self
        self.session.record("planned", int(trainer.max_epochs))
        self._keep_sigterm_handler(trainer)
        self._started = time.perf_counter()
        if self._loaded is not None:
            set_rng_state(self._loaded["rng"])
            # Lightning made this epoch's data iterator before this hook, drawing its shuffling seed
            # from the generator as it was before the restore; make it again from the restored one.
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is not None:
                iter(fetcher)
            _restore_history(trainer, self._loaded["history"])
            self._earlier_s = float(self._loaded.get("seconds", 0.0))  # older checkpoints lack it
            self.session.earlier_train_s = self._earlier_s
            self.session.record("resumed", int(trainer.current_epoch))
            self._loaded = None

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if self.session.sigterm_handler is not None:
            trainer._signal_connector.received_sigterm = False

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.session.sigterm_handler is not None:
            trainer._signal_connector.received_sigterm = False
        completed = int(trainer.current_epoch) + 1
        self.session.record("epoch", completed)
        if self.session.stop_requested or completed % self.session.every_n_epochs == 0:
            self._save(trainer, completed, self._epoch_row(trainer))
        if self.session.stop_requested:
            self.session.training = None
            self.session.hand_over()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """A final checkpoint: a requeue while scoring then restores the trained model, not epoch 0."""
        self.session.training = None
        self._save(trainer, int(trainer.current_epoch), {})

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.session.training = None

    # -- helpers -------------------------------------------------------------------------------------
    def _keep_sigterm_handler(self, trainer: Any) -> None:
        """Put back the runner's SIGTERM handler, which Lightning replaced.

        submitit ignores SIGTERM: on preemption USR2 follows it (and we checkpoint), on scancel SIGKILL
        does. Lightning would instead stop training at the next batch, so that a preemption ends the
        task as a failure before USR2 arrives. Without a runner's handler, Lightning's behaviour stays.
        """
        handler = self.session.sigterm_handler
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
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
        self.session.record("saved", completed)


class EpochProgress(Callback):
    """Tell the session each completed epoch (the runner's progress report) of a training that does not
    checkpoint (`checkpoint.progress_kwargs`)."""

    def __init__(self, session: CheckpointSession):
        self.session = session

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self.session.record("epoch", int(trainer.current_epoch) + 1)

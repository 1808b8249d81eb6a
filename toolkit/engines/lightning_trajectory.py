"""The accuracy trajectory in stock scvi-tools training: a Lightning callback around a `TrajectoryProbe`.

Apart from `trajectory` so that only a training that runs Lightning imports Lightning. Its points go into
Lightning's checkpoints (the callback's state), so a resumed stock training keeps the points it scored.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from toolkit.engines.trajectory import TrajectoryProbe


class TrajectoryCallback(Callback):
    """Scores the model after each optimizer step the probe asks for (Lightning has counted the step by
    `on_train_batch_end`); the epoch is fractional inside an epoch, as the fast engine records it."""

    def __init__(self, probe: TrajectoryProbe):
        self.probe = probe

    @property
    def state_key(self) -> str:
        return "spotsweep.Trajectory"

    def state_dict(self) -> dict[str, Any]:
        return {"points": list(self.probe.points)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.probe.restore(state_dict.get("points", []))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = int(trainer.global_step)
        if self.probe.due(step):
            epoch = trainer.current_epoch + (batch_idx + 1) / max(int(trainer.num_training_batches), 1)
            self.probe.take(pl_module.module, step, epoch)

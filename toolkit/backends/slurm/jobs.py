"""What SLURM jobs run: one sweep task (checkpointable, requeued on preemption), and the final aggregate.

These are the callables submitit pickles into the jobs; they run on compute nodes, so they take only
plain data (task dicts, paths) and import the heavy libraries inside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit

from toolkit.backends.checkpointed import run_checkpointed
from toolkit.backends.common import finish
from toolkit.layout import OutputLayout


class SweepTask(submitit.helpers.Checkpointable):
    """Run one sweep task as an array element; on USR2 (time limit, preemption) requeue the same task.

    The training inside checkpoints (toolkit.backends.preemption), so the requeued task resumes where the
    last checkpoint left it. Every attempt is logged in tasks/<id>/attempts.json.
    """

    def __init__(self, out: str, threads: int | None, every_n_epochs: int, grace_s: float) -> None:
        self.out = out
        self.threads = threads
        self.every_n_epochs = every_n_epochs
        self.grace_s = grace_s
        self._requeueing = False

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on USR2 before `scontrol requeue`: resubmit the very same task."""
        self._requeueing = True
        return super().checkpoint(*args, **kwargs)

    def __call__(self, task_data: dict[str, Any]) -> str:
        self._requeueing = False
        return run_checkpointed(
            task_data, self.out, self.threads, self.every_n_epochs, self.grace_s, lambda: self._requeueing
        )


def finish_sweep(out: str, report: bool = True) -> dict[str, int]:
    """The aggregate job: mark tasks SLURM saw die as failed, then aggregate and report everything."""
    from toolkit.backends.slurm.status import scheduled_states
    from toolkit.status import count_states, load_tasks, record_failures

    layout = OutputLayout(Path(out))
    states = scheduled_states(layout, load_tasks(layout))
    record_failures(layout, states)
    finish(layout.root, report)
    return count_states(states)

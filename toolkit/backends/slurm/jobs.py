"""What SLURM jobs run: one sweep task (checkpointable, requeued on preemption), and the final aggregate.

These are the callables submitit pickles into the jobs; they run on compute nodes, so they take only
plain data (task dicts, paths) and import the heavy libraries inside.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from toolkit.backends import preemption
from toolkit.backends.common import finish
from toolkit.layout import OutputLayout, read_json, write_json
from toolkit.sweep import Task

SIGTERM_WAIT_S = 120
"""After Lightning stops on SIGTERM, how long to wait for the USR2 of a preemption (scancel kills sooner)."""


def _job_id() -> str:
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "")


def attempts_file(layout: OutputLayout, task_id: str) -> Path:
    return layout.task_dir(task_id) / "attempts.json"


def read_attempts(layout: OutputLayout, task_id: str) -> list[dict[str, Any]]:
    path = attempts_file(layout, task_id)
    return read_json(path) if path.exists() else []


def _log_attempt(layout: OutputLayout, task_id: str, attempt: dict[str, Any]) -> None:
    write_json(attempts_file(layout, task_id), [*read_attempts(layout, task_id), attempt])


def run_checkpointed(
    task_data: dict[str, Any],
    out: str,
    threads: int | None,
    every_n_epochs: int,
    grace_s: float,
    requeueing: Callable[[], bool],
) -> str:
    """Run one task with training checkpoints active and log the attempt in tasks/<id>/attempts.json.

    USR2 saves the training state at the end of the epoch, then the previous USR2 handler runs;
    it requeues (submitit's, which exits with SystemExit) and `requeueing()` then says so. Such an
    exit is logged as "requeued" and re-raised, with no failure recorded.
    """
    from toolkit.task import run_task

    task = Task.from_dict(task_data)
    layout = OutputLayout(Path(out))
    attempt: dict[str, Any] = {"job": _job_id(), "start": time.time()}
    directory = layout.task_dir(task.id) / "checkpoint"
    with preemption.activate(directory, every_n_epochs, grace_s) as session:
        try:
            try:
                outcome = run_task(task_data, out, threads)
            except SystemExit as exc:
                if type(exc).__name__ != "SIGTERMException" or requeueing():
                    raise
                # Lightning stopped on SIGTERM: a preemption sends USR2 next (which requeues and
                # exits from inside this sleep); a scancel sends SIGKILL. Either way, do not report.
                for _ in range(SIGTERM_WAIT_S):
                    time.sleep(1)
                raise
        except SystemExit:
            if requeueing():
                layout.error(task.id).unlink(missing_ok=True)  # run_task recorded the exit as a failure
                _log_attempt(layout, task.id, {**attempt, **_outcome(session, "requeued")})
            raise
        except BaseException:
            _log_attempt(layout, task.id, {**attempt, **_outcome(session, "failed")})
            raise
    if outcome == "done":
        _log_attempt(layout, task.id, {**attempt, **_outcome(session, "done")})
        shutil.rmtree(directory, ignore_errors=True)
    return outcome


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


def _outcome(session: Any, outcome: str) -> dict[str, Any]:
    return {
        "end": time.time(),
        "outcome": outcome,
        "resumed_from_epoch": session.resumed_from_epoch,
        "checkpoint_epoch": session.saved_epoch,
    }


def finish_sweep(out: str, report: bool = True) -> dict[str, int]:
    """The aggregate job: mark tasks SLURM saw die as failed, then aggregate and report everything."""
    from toolkit.backends.slurm.status import scheduled_states
    from toolkit.status import count_states, load_tasks, record_failures

    layout = OutputLayout(Path(out))
    states = scheduled_states(layout, load_tasks(layout))
    record_failures(layout, states)
    finish(layout.root, report)
    return count_states(states)

"""The state of each task of a sweep, from its output folder alone.

done (result.json), failed (error.json, with its reason), pruned (pruned.json: the tuner stopped its
trial), started (began, neither file yet: running now, or killed without a word), missing (never
started). A backend with a scheduler refines these (pending, running, died without a word:
toolkit.backends.slurm.status); `toolkit.launch.sweep_states` asks every backend.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from filelock import FileLock, Timeout

from toolkit.errors import SpotsweepError
from toolkit.layout import CorruptFile, OutputLayout, read_json, write_json
from toolkit.sweep import Task

STATES = ("done", "failed", "started", "missing")
"""File-based states; with a scheduler also pending; running where a live process holds the task's lock;
pruned where the tuner stopped the task's trial (PRUNED)."""
ALL_STATES = ("done", "failed", "pruned", "running", "pending", "started", "missing")
PRUNED = "pruned.json"
"""The tuner writes it in a task's folder before it stops the task of a pruned trial: without it the
stopped task reads as started (local) or, once SLURM's cancel is seen, failed, where it was pruned."""


@dataclass(frozen=True)
class TaskState:
    task: Task
    state: str
    reason: str = ""
    log: str = ""
    job: str = ""
    """The scheduler's job (a SLURM array element A_i) that ran or runs the task, if any."""
    cause: str = ""
    """Why the scheduler ended a failed task, in its own word when known (OUT_OF_MEMORY, TIMEOUT,
    NODE_FAIL, CANCELLED, ...): what a retry may change (more memory for OUT_OF_MEMORY)."""


def task_state(layout: OutputLayout, task: Task) -> TaskState:
    if layout.result(task.id).exists():
        return TaskState(task, "done")
    if (layout.task_dir(task.id) / PRUNED).exists():  # before error.json: a cancelled array task may get one
        return TaskState(task, "pruned", reason=_pruned_reason(layout, task.id))
    # error.json is read without asking first whether it exists: a task requeued at its time limit deletes
    # the error.json of the attempt that just stopped, and a check before the read would race it (seen in CI).
    try:
        error = read_json(layout.error(task.id))
    except FileNotFoundError:
        error = None
    except CorruptFile as exc:
        return TaskState(task, "failed", reason=str(exc), log=str(layout.error(task.id)))
    if error is not None:
        last_line = error["reason"].strip().splitlines()[-1] if error.get("reason") else ""
        log = error.get("log") or str(layout.error(task.id))
        return TaskState(task, "failed", reason=last_line, log=log, cause=error.get("cause", ""))
    if (layout.task_dir(task.id) / "started.json").exists():
        return TaskState(task, "running" if is_running(layout, task.id) else "started")
    return TaskState(task, "missing")


def mark_pruned(layout: OutputLayout, task_id: str, reason: str) -> None:
    """Record that the tuner pruned the task's trial (before it stops the task), for status and the report."""
    write_json(layout.task_dir(task_id) / PRUNED, {"task_id": task_id, "status": "pruned", "reason": reason})


def _pruned_reason(layout: OutputLayout, task_id: str) -> str:
    try:
        return str(read_json(layout.task_dir(task_id) / PRUNED).get("reason", ""))
    except (OSError, CorruptFile, AttributeError):
        return ""


def is_running(layout: OutputLayout, task_id: str) -> bool:
    """Whether a live process holds the task's lock (toolkit.backends.checkpointed.task_lock)."""
    path = layout.task_dir(task_id) / ".running.lock"
    if not path.exists():
        return False
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def load_tasks(layout: OutputLayout) -> list[Task]:
    """The tasks of the last `spotsweep run` into this folder, as recorded in sweep.json."""
    if not layout.sweep_file.exists():
        raise SpotsweepError(
            f"{layout.root}: no sweep.json here, so this is not a sweep output folder; "
            "give the folder that `spotsweep run` wrote (the sweep file's 'output')."
        )
    try:
        recorded = read_json(layout.sweep_file)
        return [Task.from_dict(item) for item in recorded["tasks"]]
    except (CorruptFile, KeyError, TypeError) as exc:
        raise SpotsweepError(
            f"{layout.sweep_file}: cannot read the sweep's task list ({exc}); run `spotsweep run SWEEP_FILE` "
            "again, which rewrites it (finished tasks are kept and skipped)."
        ) from None


def record_failures(layout: OutputLayout, states: list[TaskState]) -> int:
    """Write error.json for tasks the scheduler saw die without one, so every later reader (aggregate,
    report, --retry-failed) sees them failed with the reason. Returns how many were written."""
    written = 0
    for state in states:
        if state.state == "failed" and not layout.error(state.task.id).exists():
            write_json(
                layout.error(state.task.id),
                {
                    "task_id": state.task.id,
                    "status": "failed",
                    "settings": state.task.settings,
                    "reason": state.reason,
                    "log": state.log,
                    "job": state.job,
                    "cause": state.cause,
                    "recorded": time.time(),
                },
            )
            written += 1
    return written


def count_states(states: list[TaskState]) -> dict[str, int]:
    """Counts of the file-based states always, of pending and running where there are any."""
    counts = Counter(state.state for state in states)
    return {name: counts.get(name, 0) for name in ALL_STATES if name in STATES or counts.get(name)}


@dataclass(frozen=True)
class TaskProgress:
    """How far a running task's training is (OUT/progress/<task id>.json), and when it should end."""

    epoch: int
    max_epochs: int
    seconds_per_epoch: float | None
    updated: float

    @property
    def seconds_left(self) -> float | None:
        if self.seconds_per_epoch is None:
            return None
        return max(0.0, (self.max_epochs - self.epoch) * self.seconds_per_epoch - (time.time() - self.updated))

    def describe(self, running: bool = True) -> str:
        """Where the training is and when it should end; a task no longer running (stopped or killed) was
        shown its last estimate, an end time in the past or one that would never come."""
        if not running:
            return f"stopped at epoch {self.epoch}/{self.max_epochs}"
        text = f"epoch {self.epoch}/{self.max_epochs}"
        left = self.seconds_left
        if left is not None:
            end = time.strftime("%H:%M", time.localtime(time.time() + left))
            text += f", about {left / 60:.0f} min left (ends ~{end})" if left >= 60 else f", ends ~{end}"
        return text


def read_progress(layout: OutputLayout, task_id: str) -> TaskProgress | None:
    """The task's last progress report, or None (not training yet, or no report readable)."""
    try:
        report = read_json(layout.progress(task_id))
        epochs = report["epoch"] - report["attempt_first_epoch"]
        elapsed = report["time"] - report["attempt_start"]
        rate = elapsed / epochs if epochs > 0 and elapsed > 0 else None
        return TaskProgress(int(report["epoch"]), int(report["max_epochs"]), rate, float(report["time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_stage(layout: OutputLayout) -> str:
    """The prepare job's current stage ('' before it reports one)."""
    try:
        return str(read_json(layout.progress("prepare"))["stage"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""

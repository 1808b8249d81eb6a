"""The state of each task of a sweep, from its output folder alone.

done (result.json), failed (error.json, with its reason), started (began, neither file yet: running
now, or killed without a word), missing (never started). A backend with a scheduler refines these
(pending, running, died without a word: toolkit.backends.slurm.status); `toolkit.launch.sweep_states`
asks every backend.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, read_json, write_json
from toolkit.sweep import Task

STATES = ("done", "failed", "started", "missing")
"""File-based states; with a scheduler also pending and running."""
ALL_STATES = ("done", "failed", "running", "pending", "started", "missing")


@dataclass(frozen=True)
class TaskState:
    task: Task
    state: str
    reason: str = ""
    log: str = ""
    job: str = ""
    """The scheduler's job (a SLURM array element A_i) that ran or runs the task, if any."""


def task_state(layout: OutputLayout, task: Task) -> TaskState:
    if layout.result(task.id).exists():
        return TaskState(task, "done")
    if layout.error(task.id).exists():
        error = read_json(layout.error(task.id))
        last_line = error["reason"].strip().splitlines()[-1] if error.get("reason") else ""
        return TaskState(task, "failed", reason=last_line, log=error.get("log") or str(layout.error(task.id)))
    if (layout.task_dir(task.id) / "started.json").exists():
        return TaskState(task, "started")
    return TaskState(task, "missing")


def load_tasks(layout: OutputLayout) -> list[Task]:
    """The tasks of the last `spotsweep run` into this folder, as recorded in sweep.json."""
    if not layout.sweep_file.exists():
        raise SpotsweepError(
            f"{layout.root}: no sweep.json here, so this is not a sweep output folder; "
            "give the folder that `spotsweep run` wrote (the sweep file's 'output')."
        )
    return [Task.from_dict(item) for item in read_json(layout.sweep_file)["tasks"]]


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
                    "recorded": time.time(),
                },
            )
            written += 1
    return written


def count_states(states: list[TaskState]) -> dict[str, int]:
    """Counts of the file-based states always, of pending and running where there are any."""
    counts = Counter(state.state for state in states)
    return {name: counts.get(name, 0) for name in ALL_STATES if name in STATES or counts.get(name)}

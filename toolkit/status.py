"""The state of each task of a sweep: from its output folder, refined by the scheduler where there is one.

From files alone: done (result.json), failed (error.json, with its reason), started (began, neither
file yet: running now, or killed without a word), missing (never started). When the sweep went to
SLURM (OUT/slurm/submissions.json), sacct/squeue turn started/missing into pending or running, and a
task whose job ended without a result (scancel, time limit, node failure, out of memory) into failed,
with SLURM's state, the job's log and the last error line in it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

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
    """The SLURM array element (A_i) that ran or runs the task, if any."""


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


def scheduled_states(layout: OutputLayout, tasks: list[Task]) -> list[TaskState]:
    """File states refined by SLURM's view of each task's latest array element (file states alone if
    the sweep never went to SLURM or the scheduler cannot be reached)."""
    from toolkit import slurm

    files = [task_state(layout, task) for task in tasks]
    submissions = slurm.read_submissions(layout)
    if not submissions:
        return files
    latest = slurm.latest_elements(submissions)
    names: dict[str, str] = {}
    for submission in submissions:
        names.update(submission.job_names)
    try:
        jobs = slurm.query(names)
    except slurm.SchedulerUnavailable:
        return files
    return [_refine(state, latest.get(state.task.id), jobs) for state in files]


def _refine(state: TaskState, where: tuple | None, jobs: dict) -> TaskState:
    if state.state == "done" or where is None:
        return state
    submission, element = where
    job = jobs.get(element)
    log = str(submission.log(element))
    if job is not None and job.live:
        if not job.running:
            return TaskState(state.task, "pending", job=element)
        return TaskState(state.task, "running", log=log, job=element)
    if state.state == "failed":  # keep a log that error.json names (the prepare job's, say)
        recorded = state.log if state.log and not state.log.endswith("error.json") else log
        return TaskState(state.task, "failed", reason=state.reason, log=recorded, job=element)
    if job is None:
        return state
    from toolkit.slurm import last_error_line

    prepare = jobs.get(submission.prepare) if submission.prepare else None
    if state.state == "missing" and prepare is not None and not prepare.live and prepare.state != "COMPLETED":
        log = str(submission.log(submission.prepare))
        line = last_error_line(Path(log))
        reason = f"the prepare job {submission.prepare} ended {prepare.state}, so the task never ran"
        return TaskState(state.task, "failed", reason=f"{reason}: {line}" if line else reason, log=log, job=element)
    line = last_error_line(Path(log))
    if job.state == "COMPLETED":
        reason = f"SLURM job {element} completed without writing a result"
    else:
        reason = f"SLURM job {element} ended {job.state} without a result"
    return TaskState(state.task, "failed", reason=f"{reason}: {line}" if line else reason, log=log, job=element)


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


def sweep_states(root: Path, scheduler: bool = True) -> list[TaskState]:
    """Every task's state; with `scheduler`, as SLURM sees the sweep's jobs (when it ran there)."""
    layout = OutputLayout(Path(root))
    tasks = load_tasks(layout)
    if scheduler:
        return scheduled_states(layout, tasks)
    return [task_state(layout, task) for task in tasks]


def count_states(states: list[TaskState]) -> dict[str, int]:
    """Counts of the file-based states always, of pending and running where there are any."""
    counts = Counter(state.state for state in states)
    return {name: counts.get(name, 0) for name in ALL_STATES if name in STATES or counts.get(name)}

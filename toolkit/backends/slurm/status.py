"""What SLURM knows of a sweep's tasks beyond their files: pending, running, or died without a word.

When the sweep went to SLURM (OUT/slurm/submissions.json), sacct/squeue turn started/missing into
pending or running, and a task whose job ended without a result (scancel, time limit, node failure,
out of memory) into failed, with SLURM's state, the job's log and the last error line in it.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.backends.slurm import records
from toolkit.layout import OutputLayout
from toolkit.status import TaskState, task_state
from toolkit.sweep import Task


def scheduled_states(layout: OutputLayout, tasks: list[Task]) -> list[TaskState]:
    """File states of `tasks`, refined by SLURM's view of each one's latest array element."""
    return refine_states(layout, [task_state(layout, task) for task in tasks])


def refine_states(layout: OutputLayout, files: list[TaskState]) -> list[TaskState]:
    """File states refined by SLURM's view of each task's latest array element (the file states alone if
    the sweep never went to SLURM or the scheduler cannot be reached)."""
    submissions = records.read_submissions(layout)
    if not submissions:
        return files
    latest = records.latest_elements(submissions)
    names: dict[str, str] = {}
    for submission in submissions:
        names.update(submission.job_names)
    try:
        jobs = records.query(names)
    except records.SchedulerUnavailable:
        return files
    return [_refine(state, latest.get(state.task.id), jobs) for state in files]


def _refine(state: TaskState, where: tuple | None, jobs: dict) -> TaskState:
    if state.state in ("done", "pruned") or where is None:  # pruned: cancelled by the tuner, not failed
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
        return TaskState(state.task, "failed", reason=state.reason, log=recorded, job=element, cause=state.cause)
    if job is None:
        return state
    prepare = jobs.get(submission.prepare) if submission.prepare else None
    if state.state == "missing" and prepare is not None and not prepare.live and prepare.state != "COMPLETED":
        log = str(submission.log(submission.prepare))
        line = records.last_error_line(Path(log))
        reason = f"the prepare job {submission.prepare} ended {prepare.state}, so the task never ran"
        return TaskState(state.task, "failed", reason=f"{reason}: {line}" if line else reason, log=log, job=element)
    line = records.last_error_line(Path(log))
    cause = job.state
    if records.ran_out_of_memory(job, Path(log)):
        cause = "OUT_OF_MEMORY"
        line = records.memory_kill_line(Path(log)) or line
        reason = (
            f"SLURM job {element} ran out of memory (OUT_OF_MEMORY: killed over its --mem); `spotsweep run "
            "--retry-failed` asks the profile's retry_mem_factor times more for it, or raise mem_gb"
        )
    elif job.state == "COMPLETED":
        reason = f"SLURM job {element} completed without writing a result"
    elif job.state == "TIMEOUT":
        reason = f"SLURM job {element} reached its time limit (TIMEOUT) without a result; raise time_min in the profile"
    else:
        reason = f"SLURM job {element} ended {job.state} without a result"
    reason = f"{reason}: {line}" if line else reason
    return TaskState(state.task, "failed", reason=reason, log=log, job=element, cause=cause)

"""One task with training checkpoints, a record of its attempts and a progress report: what a task job
runs on any backend.

Local processes and SLURM array elements run the same body, so a local sweep stopped half way resumes
each task from its last checkpoint as a requeued SLURM task does, and `spotsweep run` and `spotsweep
status` read the same progress files (OUT/progress/<task id>.json: epoch of max_epochs, when).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from toolkit.backends import preemption
from toolkit.layout import OutputLayout, read_json, write_json
from toolkit.sweep import Task

PROGRESS_EVERY_S = 2.0
"""How often a training task rewrites its progress file (and at its last epoch)."""

SIGTERM_WAIT_S = 120
"""After Lightning stops on SIGTERM, how long to wait for the USR2 of a preemption (scancel kills sooner)."""


def _job_id() -> str:
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID", "")


def attempts_file(layout: OutputLayout, task_id: str) -> Path:
    return layout.task_dir(task_id) / "attempts.json"


def checkpoint_dir(layout: OutputLayout, task_id: str) -> Path:
    """Where a task's training saves its state; removed once the task is done."""
    return layout.task_dir(task_id) / "checkpoint"


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
    local_timeout_min: float | None = None,
) -> str:
    """Run one task with training checkpoints active and log the attempt in tasks/<id>/attempts.json.

    USR2 saves the training state at the end of the epoch, then the previous USR2 handler runs;
    it requeues (submitit's, which exits with SystemExit) and `requeueing()` then says so. Such an
    exit is logged as "requeued" and re-raised, with no failure recorded. A local task (which has a
    `local_timeout_min` and is never requeued) stopped at that limit is failed with the limit as its reason.
    """
    task = Task.from_dict(task_data)
    layout = OutputLayout(Path(out))
    with task_lock(layout, task.id) as held:
        if not held:
            return RUNNING_ELSEWHERE  # a process left by a killed launcher is training it: never twice
        return _run_with_checkpoints(
            task, layout, task_data, out, threads, every_n_epochs, grace_s, requeueing, local_timeout_min
        )


RUNNING_ELSEWHERE = "running elsewhere"


@contextlib.contextmanager
def task_lock(layout: OutputLayout, task_id: str) -> Iterator[bool]:
    """Hold tasks/<id>/.running.lock while the task runs; yields False (at once) if another process holds it.

    The operating system releases the lock when its process dies, however it dies, so a lock is never
    left behind by a killed task; status reads it to tell a task that is running from one that died.
    """
    layout.task_dir(task_id).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(layout.task_dir(task_id) / ".running.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def _run_with_checkpoints(
    task: Task,
    layout: OutputLayout,
    task_data: dict[str, Any],
    out: str,
    threads: int | None,
    every_n_epochs: int,
    grace_s: float,
    requeueing: Callable[[], bool],
    local_timeout_min: float | None,
) -> str:
    from toolkit.task import interrupted, run_task

    attempt: dict[str, Any] = {"job": _job_id(), "start": time.time()}
    directory = checkpoint_dir(layout, task.id)
    with preemption.activate(directory, every_n_epochs, grace_s) as session:
        session.on_epoch = report = ProgressReport(layout, task)
        session.on_planned = report.planned
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
        except SystemExit as exc:
            if requeueing():
                layout.error(task.id).unlink(missing_ok=True)  # run_task recorded the exit as a failure
                _log_attempt(layout, task.id, {**attempt, **_outcome(session, "requeued")})
            elif interrupted(exc):  # Lightning's exit after a Ctrl-C or a cancelled local job
                _log_attempt(layout, task.id, {**attempt, **_outcome(session, "interrupted")})
            raise
        except BaseException as exc:
            saved = session.saved_epoch or session.resumed_from_epoch
            reason = _time_limit_reason(exc, local_timeout_min, saved)
            if reason:
                _explain_time_limit(layout, task.id, reason)
            outcome = "interrupted" if interrupted(exc) else "failed"
            _log_attempt(layout, task.id, {**attempt, **_outcome(session, outcome)})
            raise
    if outcome == "done":
        _log_attempt(layout, task.id, {**attempt, **_outcome(session, "done")})
        shutil.rmtree(directory, ignore_errors=True)
        layout.progress(task.id).unlink(missing_ok=True)
    return outcome


TIME_LIMIT_REASON = (
    "stopped at its SLURM time limit more often than the profile's max_timeouts allows; raise time_min "
    "(or max_timeouts) in the profile, and `spotsweep run --retry-failed` resumes it from its last checkpoint"
)


def _time_limit_reason(exc: BaseException, local_timeout_min: float | None, saved_epoch: int | None) -> str:
    """The reason in the user's terms when submitit ended the task at a time limit, else "".

    On SLURM that is after the profile's requeues are used up; submitit's words are kept after ours. A
    local task is never requeued, and submitit's "timed-out and not checkpointable" would be wrong: its
    training was saved on the way out (USR2, as before a SLURM limit)."""
    if type(exc).__name__ != "UncompletedJobError":
        return ""
    if "timed-out too many times" in str(exc):
        return f"{TIME_LIMIT_REASON} ({type(exc).__name__}: {exc})"
    if "timed-out" in str(exc) and local_timeout_min is not None:
        saved = f"with its training saved at epoch {saved_epoch}" if saved_epoch else "with no training saved yet"
        return (
            f"stopped at the local time limit, the sweep's executor.timeout_min of {local_timeout_min:g} min, "
            f"{saved}; raise executor.timeout_min in the sweep file, and `spotsweep run --retry-failed` "
            "resumes it from there"
        )
    return ""


def _explain_time_limit(layout: OutputLayout, task_id: str, reason: str) -> None:
    """Put the reason in the user's terms into the error.json run_task wrote."""
    path = layout.error(task_id)
    if path.exists():
        write_json(path, {**read_json(path), "reason": reason})


def _outcome(session: Any, outcome: str) -> dict[str, Any]:
    return {
        "end": time.time(),
        "outcome": outcome,
        "resumed_from_epoch": session.resumed_from_epoch,
        "checkpoint_epoch": session.saved_epoch,
    }


class ProgressReport:
    """Writes OUT/progress/<task id>.json as epochs complete: epoch, max_epochs, and this attempt's start,
    from which the time left is estimated (`status.read_progress`)."""

    def __init__(self, layout: OutputLayout, task: Task) -> None:
        self.path = layout.progress(task.id)
        self.task_id, self.max_epochs = task.id, int(task.max_epochs)
        self.start = time.time()
        self.first: int | None = None
        self.last = 0.0

    def planned(self, epochs: int) -> None:
        """The epochs the training will run, as the engine resolved them (a budget in steps has no epochs of
        its own: the task's max_epochs is 0 there)."""
        self.max_epochs = epochs

    def __call__(self, epochs_done: int) -> None:
        now = time.time()
        if self.first is None:
            self.first, self.start = epochs_done - 1, now  # time the epochs of this attempt only
        if now - self.last < PROGRESS_EVERY_S and epochs_done < self.max_epochs:
            return
        self.last = now
        write_json(
            self.path,
            {
                "task_id": self.task_id,
                "epoch": epochs_done,
                "max_epochs": self.max_epochs,
                "attempt_first_epoch": self.first,
                "attempt_start": self.start,
                "time": now,
            },
        )

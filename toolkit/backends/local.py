"""The local backend (default): every task its own process on this machine, as it would be its own
array task on a cluster, through submitit's LocalExecutor.

At most `max_parallel` tasks run at once so that a laptop is not oversubscribed; each gets its share
of the cores as torch threads. Tasks run the same checkpointed body as SLURM's (backends.checkpointed):
they save their training every `checkpoint_every_epochs`, so a sweep stopped half way and run again
resumes each task where it was. Optionally every job runs inside an Apptainer image. The lifecycle
(progress, Ctrl-C, finish) is the core's (toolkit.backends.core); this module starts and stops processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal

import submitit
from pydantic import Field

from toolkit.backends import apptainer
from toolkit.backends.checkpointed import run_checkpointed
from toolkit.backends.common import JobOptions, input_files
from toolkit.backends.core import STOP_WAIT_S, Context
from toolkit.backends.core import finish_here as finish
from toolkit.backends.dask_scheduler import local_cluster as dask_cluster
from toolkit.backends.dask_scheduler import prepare_cluster
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare
from toolkit.status import TaskState
from toolkit.sweep import Task

__all__ = ["Options", "check", "dask_cluster", "describe", "dispatch", "finish", "refine_states"]

POLL_S = 0.5


class Options(JobOptions):
    """`executor: {kind: local, ...}`: processes on this machine."""

    kind: Literal["local"] = "local"
    timeout_min: float = Field(default=120, gt=0)
    """Each task's wall-clock limit: a task still training then saves its state and is failed with this limit
    as its reason; `spotsweep run --retry-failed` resumes it (on SLURM the profile's time_min applies)."""
    checkpoint_every_epochs: int = Field(default=50, gt=0)
    """Tasks save their training state every N epochs: a sweep stopped half way resumes each task there (on
    SLURM the profile's checkpoint_every_epochs applies)."""


def check(executor: Options) -> None:
    """Nothing to load: a local executor's settings are checked by the sweep's schema."""


def refine_states(layout: OutputLayout, states: list[TaskState]) -> list[TaskState]:
    """Local processes leave only their files: the states stay as the files say."""
    return states


def describe(layout: OutputLayout) -> list[str]:
    return []


def default_parallel() -> int:
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def run_local_task(task_data: dict, out: str, threads: int, every_n_epochs: int, timeout_min: float) -> str:
    """One task in its own process, with checkpoints every N epochs, its attempts and progress recorded;
    stopped at `timeout_min` (the executor's), it is failed with that limit and its saved epoch as reason.
    A local task is never requeued: it is simply run again, and resumes from its checkpoint."""
    return run_checkpointed(
        task_data, out, threads, every_n_epochs, grace_s=60.0, requeueing=lambda: False, local_timeout_min=timeout_min
    )


def dispatch(context: Context, tasks: list[Task]) -> LocalJobs:
    """The prepare job now; the tasks once it has ended, at most `parallel` processes at once."""
    return LocalJobs(context, tasks)


class LocalJobs:
    """A prepare job, then one process per task, `parallel` at once (core.Jobs)."""

    poll_s = POLL_S
    finishes = False
    detached = False
    shows_progress = True

    def __init__(self, context: Context, tasks: list[Task]) -> None:
        self.layout, self.options = context.layout, context.options
        self.ids: dict[str, str] = {}
        self.every_n_epochs = self.options.checkpoint_every_epochs
        self.parallel = context.parallel or default_parallel()
        self.threads = max(1, (os.cpu_count() or 1) // self.parallel)
        self.executor = _executor(context)
        self.queue = list(tasks)
        self.running_jobs: dict[str, submitit.Job] = {}
        self.jobs: list[submitit.Job] = []
        sweep = context.sweep
        arguments = (sweep.model_dump(mode="json"), [task.to_dict() for task in tasks], str(self.layout.root))
        self.prepare_job: submitit.Job | None = self._submit(prepare, *arguments, prepare_cluster(sweep))

    def _submit(self, function: Any, *arguments: Any) -> submitit.Job:
        job = _submit(self.executor, self.layout, function, *arguments)
        self.jobs.append(job)
        return job

    def preparing(self) -> bool:
        return self.prepare_job is not None

    def poll(self) -> list[str]:
        if self.prepare_job is not None:
            if not self.prepare_job.done():
                return []
            _wait(self.prepare_job, "prepare")
            self.prepare_job = None
        ended = [task_id for task_id, job in self.running_jobs.items() if job.done()]
        for task_id in ended:
            del self.running_jobs[task_id]
        while self.queue and len(self.running_jobs) < self.parallel:
            task = self.queue.pop(0)
            timeout = self.options.timeout_min
            arguments = (task.to_dict(), str(self.layout.root), self.threads, self.every_n_epochs, timeout)
            self.running_jobs[task.id] = self._submit(run_local_task, *arguments)
        return ended

    def running(self) -> list[str]:
        return [task_id for task_id, job in self.running_jobs.items() if not job.done()]

    def finished(self) -> bool:
        return self.prepare_job is None and not self.queue and not self.running_jobs

    def cancel(self, task_ids: Collection[str] | None = None) -> bool:
        if task_ids is None:
            self.queue.clear()
            return _stop(self.jobs)
        self.queue = [task for task in self.queue if task.id not in task_ids]
        return _stop([job for task_id, job in self.running_jobs.items() if task_id in task_ids])

    def close(self) -> None:
        """submitit's local job controller creates its log folder pattern itself (an empty `logs/%j`) beside
        the jobs' real folders; a user would take it for a job."""
        with contextlib.suppress(OSError):  # absent, or (unexpectedly) not empty: leave it
            (self.layout.logs / "%j").rmdir()


def _executor(context: Context) -> submitit.LocalExecutor:
    config, layout = context.options, context.layout
    python = None
    if config.container is not None:
        apptainer.require_apptainer()
        binds = apptainer.job_binds(layout.root, config.binds, input_files(context.sweep))
        python = apptainer.python_command(Path(config.container), binds)
    executor = submitit.LocalExecutor(folder=layout.logs / "%j", python=python)
    executor.update_parameters(timeout_min=config.timeout_min)
    return executor


def _wait(job: submitit.Job, what: str) -> None:
    try:
        job.result()
    except submitit.core.utils.FailedJobError as exc:
        # submitit's message: a header, the job's traceback between dashed lines, then the log paths.
        trace = str(exc).split("You can check full logs")[0].splitlines()
        last = next((line for line in reversed(trace) if line.strip() and set(line.strip()) != {"-"}), "no output")
        if "SpotsweepError:" in last:
            raise SpotsweepError(last.split("SpotsweepError:", 1)[1].strip()) from None
        raise SpotsweepError(f"the {what} job failed ({last.strip()}); its log is in {job.paths.stderr}.") from None


def _submit(executor: submitit.Executor, layout: OutputLayout, function: Any, *arguments: Any) -> submitit.Job:
    """Submit with the job's controller process writing its stderr to logs/controllers.log.

    submitit's controller inherits the launcher's stderr, and when a stop cancels it (Ctrl-C, `kill`) it
    prints a KeyboardInterrupt traceback there: a stopped run looked like a crash above its one sentence.
    """
    path = layout.logs / "controllers.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    try:
        with open(path, "a") as log:
            os.dup2(log.fileno(), 2)
        return executor.submit(function, *arguments)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _stop(jobs: list[submitit.Job]) -> bool:
    """Cancel the jobs still running and wait for them to exit; a task stops without recording a failure,
    keeping its last checkpoint. False where some would not exit.

    A cancel is SIGINT, then SIGKILL a second later (submitit's job controller does both). A run started in
    the background of a script (`&`, as `nohup ... &`) ignores SIGINT, and so do the processes it starts:
    there the same end comes at once, SIGKILL to each job's controller and its task processes."""
    running = [job for job in jobs if not job.done()]
    sigint_ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    for job in running:
        if sigint_ignored:
            _kill_job_processes(job)
        else:
            job.cancel(check=False)
    deadline = time.monotonic() + STOP_WAIT_S
    while any(not job.done() for job in running) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return all(job.done() for job in running)


def _kill_job_processes(job: submitit.Job) -> None:
    """SIGKILL a local job's task processes, then its controller (a local job's id is the controller's pid)."""
    import psutil

    with contextlib.suppress(psutil.Error, ValueError):
        controller = psutil.Process(int(job.job_id))
        for process in [*controller.children(recursive=True), controller]:
            with contextlib.suppress(psutil.Error):
                process.kill()

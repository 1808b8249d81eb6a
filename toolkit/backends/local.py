"""The local backend (default): every task its own process on this machine, as it would be its own
array task on a cluster, through submitit's LocalExecutor.

At most `max_parallel` tasks run at once so that a laptop is not oversubscribed; each gets its share
of the cores as torch threads. Tasks run the same checkpointed body as SLURM's (backends.checkpointed):
they save their training every `checkpoint_every_epochs`, so a sweep stopped half way and run again
resumes each task where it was. The prepare job's stage and each running task's epoch are shown as
they go. Optionally every job runs inside an Apptainer image. Stopped by Ctrl-C or SIGTERM, a run stops
its task processes too (never leaving them training as orphans) and says how to resume them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import submitit
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolkit.backends import apptainer
from toolkit.backends.checkpointed import run_checkpointed
from toolkit.backends.common import RunSummary, finish, input_files, tasks_to_run
from toolkit.config import ExecutorConfig, SweepConfig
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare
from toolkit.status import TaskState, count_states, read_progress, read_stage, task_state
from toolkit.sweep import Task

POLL_S = 0.5
STOP_WAIT_S = 30.0
"""How long a stopped run waits for its cancelled task processes to exit (they keep their last checkpoint)."""


def check(executor: ExecutorConfig) -> None:
    """Nothing to load: a local executor's settings are checked by the sweep's schema."""


def refine_states(layout: OutputLayout, states: list[TaskState]) -> list[TaskState]:
    """Local processes leave only their files: the states stay as the files say."""
    return states


def describe(layout: OutputLayout) -> list[str]:
    return []


def _executor(layout: OutputLayout, sweep: SweepConfig) -> submitit.LocalExecutor:
    config = sweep.executor
    python = None
    if config.container is not None:
        apptainer.require_apptainer()
        binds = apptainer.job_binds(layout.root, config.binds, input_files(sweep))
        python = apptainer.python_command(Path(config.container), binds)
    executor = submitit.LocalExecutor(folder=layout.logs / "%j", python=python)
    executor.update_parameters(timeout_min=config.timeout_min)
    return executor


def default_parallel() -> int:
    return max(1, min(4, (os.cpu_count() or 1) // 2))


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


def _never() -> bool:
    """A local task is never requeued: it is simply run again, and resumes from its checkpoint."""
    return False


def run_local_task(task_data: dict, out: str, threads: int, every_n_epochs: int, timeout_min: float) -> str:
    """One task in its own process, with checkpoints every N epochs, its attempts and progress recorded;
    stopped at `timeout_min` (the executor's), it is failed with that limit and its saved epoch as reason."""
    return run_checkpointed(
        task_data, out, threads, every_n_epochs, grace_s=60.0, requeueing=_never, local_timeout_min=timeout_min
    )


def _epoch_text(layout: OutputLayout, task: Task) -> str:
    progress = read_progress(layout, task.id)
    return "starting" if progress is None else progress.describe()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill` of a local run stops it as Ctrl-C does; by default SIGTERM would end this process alone and
    leave its task processes training on as orphans (submitit's jobs ignore SIGTERM)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


def _stopped_error(n_running: int, stopped: bool, every_n_epochs: int) -> SpotsweepError:
    if not n_running:
        return SpotsweepError("stopped (Ctrl-C or SIGTERM) before any task ran; the same `spotsweep run` starts it.")
    if not stopped:
        return SpotsweepError(
            f"stopped (Ctrl-C or SIGTERM), but of its {n_running} running task(s) some did not exit within "
            f"{STOP_WAIT_S:.0f} s; `spotsweep status` shows which still run (kill them, or let them finish)."
        )
    return SpotsweepError(
        f"stopped (Ctrl-C or SIGTERM) with {n_running} task(s) running: they were stopped too and keep their "
        f"training up to the last checkpoint (every {every_n_epochs} epochs), finished tasks keep their "
        "results; the same `spotsweep run` resumes the rest."
    )


def _run_tasks(
    executor: submitit.Executor,
    tasks: list[Task],
    layout: OutputLayout,
    parallel: int,
    executor_config: ExecutorConfig,
    submitted: list[submitit.Job],
) -> None:
    """Keep at most `parallel` task processes running; show each one's epoch; never raise for a failed task.
    Every job it submits is appended to `submitted`, for a stopped run to cancel."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    queue: list[Task] = list(tasks)
    running: dict[Any, tuple[Task, Any]] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, TimeElapsedColumn(), transient=False) as progress:
        overall = progress.add_task("tasks", total=len(tasks), note="0 failed")
        failed = 0
        while queue or running:
            while queue and len(running) < parallel:
                task = queue.pop(0)
                every_n_epochs, timeout_min = executor_config.checkpoint_every_epochs, executor_config.timeout_min
                arguments = (task.to_dict(), str(layout.root), threads, every_n_epochs, timeout_min)
                job = _submit(executor, layout, run_local_task, *arguments)
                submitted.append(job)
                row = progress.add_task(f"  {task.id}", total=None, note="starting")
                running[job] = (task, row)
            time.sleep(POLL_S)
            for job, (task, row) in list(running.items()):
                if not job.done():
                    progress.update(row, note=_epoch_text(layout, task))
                    continue
                del running[job]
                progress.remove_task(row)
                if job.exception() is not None:
                    failed += 1
                progress.update(overall, advance=1, note=f"{failed} failed")


def _remove_pattern_folder(layout: OutputLayout) -> None:
    """submitit's local job controller creates its log folder pattern itself (an empty `logs/%j`) beside
    the jobs' real folders; a user would take it for a job."""
    with contextlib.suppress(OSError):  # absent, or (unexpectedly) not empty: leave it
        (layout.logs / "%j").rmdir()


def _wait_for_prepare(job: submitit.Job, layout: OutputLayout) -> None:
    """Wait for the prepare job, showing the stage it reports (simulating, building the grid, training...)."""
    with Progress(TextColumn("prepare: {task.fields[stage]}"), TimeElapsedColumn(), transient=False) as progress:
        row = progress.add_task("prepare", total=None, stage="starting")
        while not job.done():
            stage = read_stage(layout)
            if stage:
                progress.update(row, stage=stage)
            time.sleep(POLL_S)
        progress.update(row, stage=read_stage(layout) or "done")
    _wait(job, "prepare")


def run(
    sweep: SweepConfig,
    layout: OutputLayout,
    tasks: list[Task],
    *,
    retry_failed: bool,
    max_parallel: int | None,
    report: bool,
    wait: bool,
) -> RunSummary:
    """Prepare, run every task not done yet (`wait` is moot: local processes are always waited for), finish."""
    start = time.perf_counter()
    to_run = tasks_to_run([task_state(layout, task) for task in tasks], retry_failed)
    if to_run:
        executor = _executor(layout, sweep)
        every_n_epochs = sweep.executor.checkpoint_every_epochs
        jobs: list[submitit.Job] = []
        try:
            with _sigterm_as_interrupt():
                arguments = (sweep.model_dump(mode="json"), [task.to_dict() for task in to_run], str(layout.root))
                prepare_job = _submit(executor, layout, prepare, *arguments)
                jobs.append(prepare_job)
                _wait_for_prepare(prepare_job, layout)
                parallel = max_parallel or sweep.executor.max_parallel or default_parallel()
                _run_tasks(executor, to_run, layout, parallel, sweep.executor, jobs)
        except KeyboardInterrupt:
            tasks_running = sum(not job.done() for job in jobs[1:])  # jobs[0] prepares
            raise _stopped_error(tasks_running, _stop(jobs), every_n_epochs) from None
        finally:
            _remove_pattern_folder(layout)
    states = [task_state(layout, task) for task in tasks]
    finish(layout.root, report)
    return RunSummary(
        submitted=len(to_run),
        skipped=len(tasks) - len(to_run),
        states=count_states(states),
        seconds=time.perf_counter() - start,
    )

"""The local backend (default): every task its own process on this machine, as it would be its own
array task on a cluster, through submitit's LocalExecutor.

At most `max_parallel` tasks run at once so that a laptop is not oversubscribed; each gets its share
of the cores as torch threads. Optionally every job runs inside an Apptainer image.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import submitit
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolkit.backends import apptainer
from toolkit.backends.common import RunSummary, finish, input_files, tasks_to_run
from toolkit.config import ExecutorConfig, SweepConfig
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare
from toolkit.status import TaskState, count_states, task_state
from toolkit.sweep import Task
from toolkit.task import run_task

POLL_S = 0.5


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


def _run_tasks(executor: submitit.Executor, tasks: list[Task], layout: OutputLayout, parallel: int) -> None:
    """Keep at most `parallel` task processes running; show progress; never raise for a failed task."""
    threads = max(1, (os.cpu_count() or 1) // parallel)
    queue, running = list(tasks), []
    columns = (TextColumn("tasks"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"))
    with Progress(*columns, TimeElapsedColumn(), transient=False) as progress:
        bar = progress.add_task("tasks", total=len(tasks), failed=0)
        failed = 0
        while queue or running:
            while queue and len(running) < parallel:
                task = queue.pop(0)
                running.append(executor.submit(run_task, task.to_dict(), str(layout.root), threads))
            time.sleep(POLL_S)
            for job in [job for job in running if job.done()]:
                running.remove(job)
                if job.exception() is not None:
                    failed += 1
                progress.update(bar, advance=1, failed=failed)


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
        prepare_job = executor.submit(
            prepare, sweep.model_dump(mode="json"), [task.to_dict() for task in to_run], str(layout.root)
        )
        _wait(prepare_job, "prepare")
        _run_tasks(executor, to_run, layout, max_parallel or sweep.executor.max_parallel or default_parallel())
    states = [task_state(layout, task) for task in tasks]
    finish(layout.root, report)
    return RunSummary(
        submitted=len(to_run),
        skipped=len(tasks) - len(to_run),
        states=count_states(states),
        seconds=time.perf_counter() - start,
    )

"""The launcher: prepare -> tasks -> aggregate and report, dispatched through submitit.

Two backends. Local (default): submitit's LocalExecutor, every task its own process as it would be its
own array task on a cluster, at most `max_parallel` at once so a laptop is not oversubscribed. SLURM
(`executor.kind: slurm` with a cluster profile): toolkit.slurm_launch submits one prepare job, one
array for all tasks and an aggregate job, chained by dependencies.
Tasks whose result already exists are not submitted again; failed ones only with `retry_failed`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import submitit
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolkit import container
from toolkit.config import ExecutorConfig, SweepConfig
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, write_json
from toolkit.prepare import prepare
from toolkit.status import TaskState, count_states, task_state
from toolkit.sweep import Task, expand
from toolkit.task import run_task

POLL_S = 0.5


@dataclass(frozen=True)
class RunSummary:
    submitted: int
    skipped: int
    states: dict[str, int]
    seconds: float
    jobs: dict[str, str] = field(default_factory=dict)
    """On SLURM: the job ids of this submission (prepare, tasks, aggregate); empty when local."""
    waited: bool = True
    """False when `run` returned right after submitting (the states are those at submission)."""


def input_files(sweep: SweepConfig) -> list[Path]:
    """The sweep's input files, whose folders a containerised job must see."""
    return [Path(path) for d in sweep.datasets for path in (d.spatial, d.reference) if path is not None]


def _local_executor(layout: OutputLayout, sweep: SweepConfig) -> submitit.LocalExecutor:
    config = sweep.executor
    python = None
    if config.container is not None:
        container.require_apptainer()
        binds = container.job_binds(layout.root, config.binds, input_files(sweep))
        python = container.python_command(Path(config.container), binds)
    executor = submitit.LocalExecutor(folder=layout.logs / "%j", python=python)
    executor.update_parameters(timeout_min=config.timeout_min)
    return executor


def _default_parallel() -> int:
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def record_sweep(sweep: SweepConfig, tasks: list[Task], layout: OutputLayout) -> None:
    """sweep.json: the configuration and the full task list, so status and aggregate know what to expect."""
    write_json(
        layout.sweep_file,
        {
            "name": sweep.name,
            "config": sweep.model_dump(mode="json"),
            "tasks": [task.to_dict() for task in tasks],
            "task_ids": [task.id for task in tasks],
        },
    )


def tasks_to_run(states: list[TaskState], retry_failed: bool) -> list[Task]:
    """Never-started and interrupted tasks; failed ones only when asked. Pending/running ones never."""
    wanted = {"missing", "started"} | ({"failed"} if retry_failed else set())
    return [state.task for state in states if state.state in wanted]


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


def _run_local(
    sweep: SweepConfig,
    layout: OutputLayout,
    tasks: list[Task],
    retry_failed: bool,
    max_parallel: int | None,
    report: bool,
) -> RunSummary:
    from toolkit.aggregate import write_summary
    from toolkit.report import write_report

    start = time.perf_counter()
    to_run = tasks_to_run([task_state(layout, task) for task in tasks], retry_failed)
    if to_run:
        executor = _local_executor(layout, sweep)
        prepare_job = executor.submit(
            prepare, sweep.model_dump(mode="json"), [task.to_dict() for task in to_run], str(layout.root)
        )
        _wait(prepare_job, "prepare")
        _run_tasks(executor, to_run, layout, max_parallel or sweep.executor.max_parallel or _default_parallel())

    states: list[TaskState] = [task_state(layout, task) for task in tasks]
    write_summary(layout.root)
    if report:
        write_report(layout.root)
    return RunSummary(
        submitted=len(to_run),
        skipped=len(tasks) - len(to_run),
        states=count_states(states),
        seconds=time.perf_counter() - start,
    )


def run_sweep(
    sweep: SweepConfig,
    out: Path | None = None,
    *,
    retry_failed: bool = False,
    max_parallel: int | None = None,
    report: bool = True,
    wait: bool = True,
) -> RunSummary:
    """Run every task of the sweep that is not done yet, then aggregate (and report).

    On SLURM, `wait=False` returns right after submission (the aggregate job then writes the summary).
    """
    layout = OutputLayout(Path(out or sweep.output))
    tasks = expand(sweep)
    record_sweep(sweep, tasks, layout)
    if sweep.executor.kind == "slurm":
        from toolkit.profiles import load_profile
        from toolkit.slurm_launch import run_on_slurm

        assert sweep.executor.profile is not None  # ExecutorConfig checks this
        profile = load_profile(sweep.executor.profile)
        return run_on_slurm(
            sweep,
            layout,
            tasks,
            profile,
            retry_failed=retry_failed,
            max_parallel=max_parallel,
            report=report,
            wait=wait,
        )
    return _run_local(sweep, layout, tasks, retry_failed, max_parallel, report)


def with_executor(sweep: SweepConfig, kind: str | None, profile: Path | None, image: Path | None = None) -> SweepConfig:
    """The sweep with its executor overridden from the command line (`--executor`, `--profile`, `--container`).

    A profile alone implies SLURM; a profile is loaded now, so its mistakes stop the run before anything
    is submitted.
    """
    if kind is None and profile is None and image is None:
        return sweep
    if kind not in (None, "local", "slurm"):
        raise SpotsweepError(f"--executor '{kind}' is unknown; use local or slurm.")
    update: dict[str, object] = {}
    if kind is not None or profile is not None:
        update["kind"] = kind or "slurm"
    if profile is not None:
        update["profile"] = profile
    if image is not None:
        if not image.is_file():
            raise SpotsweepError(f"--container {image}: no such image; build it with `make image`.")
        update["container"] = image.resolve()
    if update.get("kind") == "slurm" and profile is None and sweep.executor.profile is None:
        raise SpotsweepError("--executor slurm needs a cluster profile; add --profile hpc/profiles/NAME.yaml.")
    executor = ExecutorConfig.model_validate({**sweep.executor.model_dump(), **update})
    if executor.kind == "slurm":
        from toolkit.profiles import load_profile

        load_profile(executor.profile)  # type: ignore[arg-type]
    return sweep.model_copy(update={"executor": executor})

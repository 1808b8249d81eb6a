"""The launcher: a sweep's tasks go to the backend its `executor.kind` names (toolkit.backends).

Every backend does the same three things in its own way: prepare the inputs, run (or submit) every task
not done yet, then aggregate and report. Tasks whose result already exists are not run again; failed
ones only with `retry_failed`. What the launcher itself does is backend-neutral: record the sweep's
task list (sweep.json), pick the backend, and ask every backend what it knows of the tasks' states.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from filelock import FileLock, Timeout

from toolkit.backends import BACKENDS, all_backends, backend
from toolkit.backends.common import RunSummary
from toolkit.config import ExecutorConfig, SweepConfig
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, write_json
from toolkit.status import TaskState, load_tasks
from toolkit.sweep import Task, count_tasks, expand

__all__ = ["RunSummary", "load_sweep", "record_sweep", "run_sweep", "sweep_states", "with_executor"]


def backend_for(kind: str, where: str = "executor.kind") -> ModuleType:
    """The backend registered under `kind`, or one sentence naming the known ones."""
    if kind not in BACKENDS:
        raise SpotsweepError(f"{where} '{kind}' is unknown; use {' or '.join(BACKENDS)}.")
    return backend(kind)


def load_sweep(path: Path | str) -> SweepConfig:
    """Read and validate a sweep file (toolkit.config), then check that its executor is a registered backend."""
    from toolkit.config import load_sweep as read

    sweep = read(path)
    backend_for(sweep.executor.kind, f"{path}: executor.kind")
    return sweep


MAX_TASKS = 10_000
"""A larger sweep is refused unless asked for (`--max-tasks`): a typo in a grid can mean millions."""


def check_size(sweep: SweepConfig, max_tasks: int = MAX_TASKS) -> int:
    """The sweep's task count, or one sentence when it is over the limit (no prompt: batch jobs have no terminal)."""
    n_tasks = count_tasks(sweep)
    if n_tasks > max_tasks:
        raise SpotsweepError(
            f"sweep '{sweep.name}' has {n_tasks:,} tasks, more than the limit of {max_tasks:,}; check its grids "
            f"(`spotsweep plan`), or pass --max-tasks {n_tasks} to run them all."
        )
    return n_tasks


def check_output(root: Path) -> None:
    """The output folder can be written: not a file, not on a read-only file system."""
    if root.exists() and not root.is_dir():
        raise SpotsweepError(f"{root}: the output is an existing file, not a folder; give another output (--out).")
    probe = root if root.exists() else next((p for p in root.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise SpotsweepError(f"{root}: cannot write here ({probe} is read-only for this user); give another --out.")


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


def run_sweep(
    sweep: SweepConfig,
    out: Path | None = None,
    *,
    retry_failed: bool = False,
    max_parallel: int | None = None,
    report: bool = True,
    wait: bool = True,
    max_tasks: int = MAX_TASKS,
) -> RunSummary:
    """Run every task of the sweep that is not done yet, then aggregate (and report).

    On a scheduler, `wait=False` returns right after submission (its aggregate job then writes the summary).
    """
    runner = backend_for(sweep.executor.kind)
    runner.check(sweep.executor)
    layout = OutputLayout(Path(out or sweep.output))
    check_size(sweep, max_tasks)
    check_output(layout.root)
    layout.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(layout.root / ".run.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise SpotsweepError(
            f"{layout.root}: another `spotsweep run` is working in this output folder; wait for it to end "
            "(`spotsweep status` shows its tasks) rather than start every task twice."
        ) from None
    try:
        tasks = expand(sweep)
        record_sweep(sweep, tasks, layout)
        return runner.run(
            sweep, layout, tasks, retry_failed=retry_failed, max_parallel=max_parallel, report=report, wait=wait
        )
    finally:
        lock.release()


def with_executor(sweep: SweepConfig, kind: str | None, profile: Path | None, image: Path | None = None) -> SweepConfig:
    """The sweep with its executor overridden from the command line (`--executor`, `--profile`, `--container`).

    A profile alone implies SLURM; the backend checks the result now (SLURM loads its profile), so that
    its mistakes stop the run before anything is submitted.
    """
    if kind is None and profile is None and image is None:
        return sweep
    if kind is not None:
        backend_for(kind, "--executor")
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
    backend_for(executor.kind).check(executor)
    return sweep.model_copy(update={"executor": executor})


def sweep_states(root: Path, scheduler: bool = True) -> list[TaskState]:
    """Every task's state from its files; with `scheduler`, refined by every backend that ran some of them."""
    from toolkit.status import task_state

    layout = OutputLayout(Path(root))
    states = [task_state(layout, task) for task in load_tasks(layout)]
    if scheduler:
        for runner in all_backends():
            states = runner.refine_states(layout, states)
    return states


def describe_jobs(root: Path) -> list[str]:
    """What every backend can say about the jobs it ran for this output folder (`spotsweep status`)."""
    layout = OutputLayout(Path(root))
    return [line for runner in all_backends() for line in runner.describe(layout)]

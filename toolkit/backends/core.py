"""The lifecycle of a sweep run, once for every backend, and the client API it is built on.

`run` is what `spotsweep run` does on any backend: choose the tasks not done yet, dispatch them to the
backend (which prepares their inputs first, its own way), wait for them with progress, stop them on
Ctrl-C or SIGTERM with one sentence, then finish (aggregate and report). A backend only implements
`Backend` (its module's functions) and the `Jobs` its `dispatch` returns; see toolkit.backends.

The client API is `dispatch(...)` then `Execution.ends()`: dispatch tasks, then iterate over their ends
as they happen (a search that picks its next tasks from the results so far is such a client).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolkit.backends.common import RunSummary, finish, tasks_to_run
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.status import TaskState, count_states, read_progress, read_stage, task_state

if TYPE_CHECKING:
    from toolkit.config import SweepConfig
    from toolkit.sweep import Task


@dataclass(frozen=True)
class Context:
    """What a backend is given to dispatch a sweep's tasks."""

    sweep: SweepConfig
    layout: OutputLayout
    parallel: int | None = None
    """Tasks at once: `--max-parallel`, else the executor's max_parallel; None: the backend's own default."""
    report: bool = True
    """Whether the finish draws the report (a backend whose own job finishes passes it on)."""

    @property
    def options(self) -> Any:
        """The backend's own settings: the sweep's `executor:` block."""
        return self.sweep.executor


class Jobs(Protocol):
    """The jobs of one dispatch, as a backend runs them. `poll` moves them on (a local backend starts the
    next task there) and says which tasks ended since the last poll."""

    poll_s: float
    """How long the core waits between polls."""
    ids: dict[str, str]
    """The scheduler's job ids by role (prepare, tasks, aggregate), shown by `spotsweep run`; {} locally."""
    finishes: bool
    """Its own job aggregates and reports once the tasks end (SLURM's aggregate job): no finish here."""
    detached: bool
    """Runs on without the launcher: `--no-wait` returns at once, Ctrl-C stops the waiting only."""
    shows_progress: bool
    """Whether a live progress display suits it (not while tasks run in the launcher's own process)."""
    every_n_epochs: int
    """Its tasks save their training this often (named when a stop leaves them at their checkpoint)."""

    def preparing(self) -> bool:
        """Whether its prepare step is still running (the core shows the stage it reports)."""

    def poll(self) -> list[str]:
        """The ids of the tasks that ended since the last poll; raises SpotsweepError when the run cannot go on."""

    def running(self) -> list[str]:
        """The ids of the tasks running now, as of the last poll."""

    def finished(self) -> bool:
        """Whether every job it started has ended."""

    def cancel(self, task_ids: Collection[str] | None = None) -> bool:
        """Stop these tasks (all by default), keeping their last checkpoint; False where some would not exit."""

    def close(self) -> None:
        """Tidy up after the run, however it ended."""


class Backend(Protocol):
    """What a backend module provides (toolkit.backends.local, slurm and inline are the examples)."""

    def check(self, executor: Any) -> None:
        """Refuse a bad executor setting before anything runs (SLURM loads its profile)."""

    def dispatch(self, context: Context, tasks: list[Task]) -> Jobs:
        """Prepare the tasks' inputs and start (or submit) the tasks; return at once with their jobs."""

    def refine_states(self, layout: OutputLayout, states: list[TaskState]) -> list[TaskState]:
        """What its scheduler knows beyond the files (pending, running, died without a word)."""

    def describe(self, layout: OutputLayout) -> list[str]:
        """Lines about its jobs for `spotsweep status` (none for local processes)."""

    def finish(self, layout: OutputLayout, report: bool) -> None:
        """Aggregate and report in the launcher (`common.finish`, after anything the scheduler knows)."""

    def dask_cluster(self, options: dict[str, Any], n_workers: int | None) -> Any:
        """The Dask cluster that computes prepare's grids where `prepare.scheduler` names this backend
        (`local`: a LocalCluster; `slurm`: Dask workers as SLURM jobs); backends.dask_scheduler opens it
        and hands science only its Client. A backend that `prepare.scheduler` cannot name needs none."""


def backend_of(kind: str) -> Backend:
    from toolkit.backends import backend

    return backend(kind)  # type: ignore[return-value]  # a module implementing the protocol


@dataclass(frozen=True)
class TaskEnd:
    """A dispatched task that ended, with its state then (done, failed, or what the files say)."""

    task: Task
    state: TaskState


class Execution:
    """Dispatched tasks, followed to their ends: the client API (`dispatch`, then `ends`)."""

    def __init__(self, backend: Backend, layout: OutputLayout, tasks: list[Task], jobs: Jobs) -> None:
        self.backend, self.layout, self.jobs = backend, layout, jobs
        self.tasks = {task.id: task for task in tasks}
        self.ended: dict[str, TaskEnd] = {}

    def poll(self) -> list[TaskEnd]:
        """The tasks that ended since the last poll (every task not ended yet once the jobs have finished)."""
        ids = [task_id for task_id in self.jobs.poll() if task_id in self.tasks and task_id not in self.ended]
        if self.jobs.finished():
            ids += [task_id for task_id in self.tasks if task_id not in self.ended and task_id not in ids]
        if not ids:
            return []
        states = self.backend.refine_states(self.layout, [task_state(self.layout, self.tasks[i]) for i in ids])
        ends = [TaskEnd(state.task, state) for state in states]
        self.ended.update((end.task.id, end) for end in ends)
        return ends

    def finished(self) -> bool:
        return self.jobs.finished() and len(self.ended) == len(self.tasks)

    def ends(self) -> Iterator[TaskEnd]:
        """Each task's end as it happens, until every dispatched task has ended."""
        while True:
            yield from self.poll()
            if self.finished():
                return
            time.sleep(self.jobs.poll_s)

    def cancel(self, task_ids: Collection[str] | None = None) -> bool:
        return self.jobs.cancel(task_ids)


def dispatch(
    sweep: SweepConfig, layout: OutputLayout, tasks: list[Task], *, parallel: int | None = None, report: bool = True
) -> Execution:
    """Start `tasks` on the sweep's backend (preparing their inputs first); follow them with `ends()`.
    `report` False: a backend whose own job finishes (SLURM's aggregate job) leaves the report undrawn."""
    backend = backend_of(sweep.executor.kind)
    jobs = backend.dispatch(Context(sweep, layout, parallel, report), tasks)
    return Execution(backend, layout, tasks, jobs)


def watch(execution: Execution, progress: bool = True) -> None:
    """Follow an execution to its end with a progress display: the prepare stage, then every task's epoch."""
    jobs, layout = execution.jobs, execution.layout
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"))
    with Progress(*columns, TimeElapsedColumn(), transient=False, disable=not progress) as bar:
        stage = bar.add_task("prepare", total=None, note="starting") if jobs.preparing() else None
        overall = bar.add_task("tasks", total=len(execution.tasks), note="")
        rows: dict[str, Any] = {}
        failed = 0
        while True:
            ends = execution.poll()
            failed += sum(end.state.state == "failed" for end in ends)
            if stage is not None and not jobs.preparing():
                bar.update(stage, note=read_stage(layout) or "done", total=1, completed=1)
                stage = None
            elif stage is not None:
                bar.update(stage, note=read_stage(layout) or "starting")
            running = jobs.running()
            for task_id in [task_id for task_id in rows if task_id not in running]:
                bar.remove_task(rows.pop(task_id))
            for task_id in running:
                row = rows.get(task_id) or rows.setdefault(task_id, bar.add_task(f"  {task_id}", total=None, note=""))
                report = read_progress(layout, task_id)
                bar.update(row, note="starting" if report is None else report.describe())
            note = f"{len(running)} running, {failed} failed"
            bar.update(overall, completed=len(execution.ended), note=note)
            if execution.finished():
                return
            time.sleep(jobs.poll_s)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """`kill` of a run stops it as Ctrl-C does; by default SIGTERM would end this process alone and leave
    its task processes training on as orphans (submitit's local jobs ignore SIGTERM)."""
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


STOP_WAIT_S = 30.0
"""How long a stopped run waits for its cancelled task processes to exit (they keep their last checkpoint)."""


def stopped(jobs: Jobs | None, layout: OutputLayout) -> SpotsweepError:
    """Stop what a Ctrl-C or SIGTERM interrupted, and say in one sentence what was stopped and how to resume."""
    if jobs is not None and jobs.detached:
        return SpotsweepError(
            f"stopped waiting (Ctrl-C or SIGTERM); the submitted jobs go on without this launcher: follow them "
            f"with `spotsweep status {layout.root}`."
        )
    n_running = len(jobs.running()) if jobs is not None else 0
    exited = jobs.cancel() if jobs is not None else True
    if not n_running:
        return SpotsweepError("stopped (Ctrl-C or SIGTERM) before any task ran; the same `spotsweep run` starts it.")
    if not exited:
        return SpotsweepError(
            f"stopped (Ctrl-C or SIGTERM), but of its {n_running} running task(s) some did not exit within "
            f"{STOP_WAIT_S:.0f} s; `spotsweep status` shows which still run (kill them, or let them finish)."
        )
    assert jobs is not None
    return SpotsweepError(
        f"stopped (Ctrl-C or SIGTERM) with {n_running} task(s) running: they were stopped too and keep their "
        f"training up to the last checkpoint (every {jobs.every_n_epochs} epochs), finished tasks keep their "
        "results; the same `spotsweep run` resumes the rest."
    )


def run(
    sweep: SweepConfig,
    layout: OutputLayout,
    tasks: list[Task],
    *,
    retry_failed: bool,
    max_parallel: int | None,
    report: bool,
    wait: bool,
    progress: bool = True,
) -> RunSummary:
    """Dispatch every task not done yet (failed ones with `retry_failed`), wait for them unless `wait` is
    False on a backend whose jobs run on alone, then finish. Nothing to run: just the finish."""
    start = time.perf_counter()
    backend = backend_of(sweep.executor.kind)
    states = backend.refine_states(layout, [task_state(layout, task) for task in tasks])
    to_run = tasks_to_run(states, retry_failed)
    jobs: Jobs | None = None
    if to_run:
        parallel = max_parallel or getattr(sweep.executor, "max_parallel", None)
        try:
            with sigterm_as_interrupt():
                jobs = backend.dispatch(Context(sweep, layout, parallel, report), to_run)
                if wait or not jobs.detached:
                    watch(Execution(backend, layout, to_run, jobs), progress and jobs.shows_progress)
        except KeyboardInterrupt:
            raise stopped(jobs, layout) from None
        finally:
            if jobs is not None:
                jobs.close()
    waited = jobs is None or wait or not jobs.detached
    if jobs is None or not jobs.finishes:
        backend.finish(layout, report)
    return RunSummary(
        submitted=len(to_run),
        skipped=len(tasks) - len(to_run),
        states=count_states(backend.refine_states(layout, [task_state(layout, task) for task in tasks])),
        seconds=time.perf_counter() - start,
        jobs=jobs.ids if jobs is not None else {},
        waited=waited,
    )


def finish_here(layout: OutputLayout, report: bool) -> None:
    """The finish of a backend whose scheduler knows nothing beyond the files."""
    finish(layout.root, report)

"""The inline backend (`executor: {kind: inline}`): every task in the launcher's own process, one after
another, as submitit's DebugExecutor runs jobs. A breakpoint in a method, `python -m pdb`, a profiler
(`python -m cProfile -m toolkit run ...`) or a debugger attached to the launcher sees the training itself.

The tasks run the same checkpointed body as every backend's (backends.checkpointed): the same result,
error, attempts and progress files, so `spotsweep status` and a later run on another backend see them
alike; a task that fails is recorded and the next one runs. This module is also the smallest complete
backend: what `toolkit.backends` asks of a new one, and nothing else.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from pydantic import Field

from toolkit.backends.checkpointed import run_checkpointed
from toolkit.backends.common import needs_prepare
from toolkit.backends.core import Context
from toolkit.backends.core import finish_here as finish
from toolkit.backends.dask_scheduler import prepare_cluster
from toolkit.config import ExecutorOptions
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare
from toolkit.status import TaskState
from toolkit.sweep import Task
from toolkit.task import interrupted

__all__ = ["Options", "check", "describe", "dispatch", "finish", "refine_states"]


class Options(ExecutorOptions):
    """`executor: {kind: inline}`: no processes, no parallelism, no container."""

    kind: Literal["inline"] = "inline"
    checkpoint_every_epochs: int = Field(default=50, gt=0)
    """Tasks save their training state every N epochs: a run stopped half way resumes each task there."""


def check(executor: Options) -> None:
    """Nothing to load: the sweep's schema checks the settings."""


def refine_states(layout: OutputLayout, states: list[TaskState]) -> list[TaskState]:
    """Nothing runs here once the launcher has returned: the files say it all."""
    return states


def describe(layout: OutputLayout) -> list[str]:
    return []


def dispatch(context: Context, tasks: list[Task]) -> InlineJobs:
    """Prepare here and now (unless all is prepared from the current inputs); the tasks run as polled."""
    if needs_prepare(context.sweep, context.layout, tasks):
        sweep, root = context.sweep, str(context.layout.root)
        prepare(sweep.model_dump(mode="json"), [task.to_dict() for task in tasks], root, prepare_cluster(sweep))
    return InlineJobs(context, tasks)


class InlineJobs:
    """Each poll runs the next task to its end in this process (core.Jobs)."""

    poll_s = 0.0
    finishes = False
    detached = False
    shows_progress = False  # a live display would draw over a debugger's prompt
    ids: dict[str, str] = {}  # noqa: RUF012  # never written

    def __init__(self, context: Context, tasks: list[Task]) -> None:
        self.root = str(context.layout.root)
        self.every_n_epochs = context.options.checkpoint_every_epochs
        self.queue = list(tasks)
        self.current: list[str] = []

    def preparing(self) -> bool:
        return False

    def poll(self) -> list[str]:
        if not self.queue:
            return []
        task = self.queue.pop(0)
        self.current = [task.id]
        try:
            run_checkpointed(task.to_dict(), self.root, None, self.every_n_epochs, 60.0, requeueing=lambda: False)
        except BaseException as exc:
            if interrupted(exc):  # Ctrl-C (or Lightning's exit after one): the run stops, the task keeps its checkpoint
                raise KeyboardInterrupt from None
            if not isinstance(exc, Exception):
                raise
            # otherwise recorded in its error.json, as a task process's failure is: the next task runs
        self.current = []
        return [task.id]

    def running(self) -> list[str]:
        return self.current  # a Ctrl-C interrupts the task in hand: it keeps its last checkpoint

    def finished(self) -> bool:
        return not self.queue

    def cancel(self, task_ids: Collection[str] | None = None) -> bool:
        self.queue = [task for task in self.queue if task_ids is not None and task.id not in task_ids]
        return True

    def close(self) -> None:
        pass

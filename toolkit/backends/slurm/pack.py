"""One SLURM array element that runs several sweep tasks side by side on its GPU (the profile's `pack`).

Why: one destVI fit uses a sliver of a modern GPU, so K fits in K worker processes share one
(toolkit.backends.packing). Each task keeps everything it has when it runs alone: its checkpoints,
its attempts log, its result or error. On USR2 (time limit, preemption) every worker saves at the end
of its epoch and stops, then the element requeues as a whole; on the next attempt finished tasks are
skipped and the others resume from their checkpoints.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import submitit

from toolkit.backends import packing
from toolkit.backends.checkpointed import run_checkpointed
from toolkit.layout import OutputLayout
from toolkit.sweep import Task

REQUEUED = "requeued"


class _Requeue(SystemExit):
    """In a worker, where submitit's handler would requeue the job and exit: the pack requeues instead."""


_requeueing = False


def _on_stop(signum: int, frame: Any) -> None:
    global _requeueing
    _requeueing = True
    raise _Requeue(-1)


def run_in_pack(task_data: dict[str, Any], out: str, threads: int, every_n_epochs: int, grace_s: float) -> str:
    """A worker's job: one task with checkpoints; "requeued" if the pack was stopped first or meanwhile."""
    global _requeueing
    _requeueing = False
    previous = signal.signal(signal.SIGUSR2, _on_stop)  # the handler checkpointing hands over to
    try:
        if packing.stop_requested():
            return REQUEUED  # stopped before this task began: it runs after the requeue
        return run_checkpointed(task_data, out, threads, every_n_epochs, grace_s, lambda: _requeueing)
    except _Requeue:
        return REQUEUED
    finally:
        signal.signal(signal.SIGUSR2, previous)


class PackedSweepTask(submitit.helpers.Checkpointable):
    """Run a pack of sweep tasks as one array element, `workers` at once; requeue the pack on USR2."""

    def __init__(self, out: str, threads: int, every_n_epochs: int, grace_s: float, workers: int) -> None:
        self.out = out
        self.threads = threads
        """CPU threads of each worker (the element's CPUs split over the workers)."""
        self.every_n_epochs = every_n_epochs
        self.grace_s = grace_s
        self.workers = workers
        self.failed: set[str] = set()
        """Tasks that failed in an earlier attempt of this element: a requeue does not rerun them (as a
        lone failed task is not requeued); `spotsweep run --retry-failed` does."""

    def __call__(self, pack: list[dict[str, Any]]) -> dict[str, str]:
        layout = OutputLayout(Path(self.out))
        todo = {
            task_id: data
            for task_id, data in ((Task.from_dict(data).id, data) for data in pack)
            if not layout.result(task_id).exists() and task_id not in self.failed
        }
        jobs = [
            {
                "task_data": data,
                "out": self.out,
                "threads": self.threads,
                "every_n_epochs": self.every_n_epochs,
                "grace_s": self.grace_s,
            }
            for data in todo.values()
        ]
        stop = packing.stop_event()
        previous = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint() -> requeue -> exit
        signal.signal(signal.SIGUSR2, lambda signum, frame: stop.set())
        try:
            outcomes = packing.fit_many(
                run_in_pack,
                jobs,
                workers=self.workers,
                threads_per_worker=self.threads,
                return_exceptions=True,
                stop=stop,
                fresh_process_per_job=True,  # each task's peak memory is its own
            )
        finally:
            signal.signal(signal.SIGUSR2, previous)
        ids = list(todo)
        failures = [(i, error) for i, error in zip(ids, outcomes, strict=True) if isinstance(error, BaseException)]
        self.failed |= {task_id for task_id, _ in failures}
        if stop.is_set() and callable(previous):
            previous(signal.SIGUSR2, None)  # every worker has saved and stopped: requeue the element
        if failures:
            task_id, error = failures[0]
            raise RuntimeError(
                f"{len(failures)} of the {len(todo)} tasks of this pack failed (each has its error.json); "
                f"the first, {task_id}: {error!r}"
            ) from error
        return dict(zip(ids, map(str, outcomes), strict=True))

"""The SLURM backend: one prepare job, ONE array of every task not done yet, an aggregate job after it.

- `submit`: the chain of jobs through submitit, and waiting for it;
- `jobs`: what an array element runs (one task, checkpointed and requeued on USR2) and the aggregate job;
- `pack`: an element that runs `pack: K` tasks side by side on its GPU;
- `records`: OUT/slurm/submissions.json and the states sacct/squeue report;
- `status`: those states mapped onto the tasks;
- `profile`: the cluster profile (hpc/profiles/*.yaml) every job's resources come from.
"""

from __future__ import annotations

from toolkit.backends.common import RunSummary
from toolkit.backends.slurm.profile import load_profile
from toolkit.backends.slurm.records import read_submissions
from toolkit.backends.slurm.status import refine_states
from toolkit.backends.slurm.submit import run_on_slurm
from toolkit.config import ExecutorConfig, SweepConfig
from toolkit.layout import OutputLayout
from toolkit.sweep import Task

__all__ = ["check", "describe", "refine_states", "run"]


def check(executor: ExecutorConfig) -> None:
    """Load the cluster profile now: its mistakes stop the run before anything is submitted."""
    if executor.profile is not None:
        load_profile(executor.profile)


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
    """Submit what is not done (nothing if all is), then wait for the aggregate job unless told not to."""
    assert sweep.executor.profile is not None  # ExecutorConfig checks this
    return run_on_slurm(
        sweep,
        layout,
        tasks,
        load_profile(sweep.executor.profile),
        retry_failed=retry_failed,
        max_parallel=max_parallel,
        report=report,
        wait=wait,
    )


def describe(layout: OutputLayout) -> list[str]:
    """One line per submission: its jobs and where their logs are."""
    lines = []
    for submission in read_submissions(layout):
        arrays = ", ".join(f"{a.job_id} ({len(a.task_ids)} tasks)" for a in submission.arrays)
        lines.append(
            f"submission {submission.number}: prepare {submission.prepare or '-'}, array {arrays}, "
            f"aggregate {submission.aggregate}; logs in {submission.folder.replace('/%j', '')}"
        )
    return lines
